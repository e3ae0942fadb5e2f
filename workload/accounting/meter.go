package accounting

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

// Meter turns GPU samples into records: the energy of each GPU in each
// interval between two samples, booked to the workload attempt that held
// the GPU or to the idle account, priced by the tariff, with the revenue
// it earned, and appended to a ledger.
//
// It makes no device calls of its own. Either a caller that already
// samples hands it the samples (Observe), or the Meter owns the node's one
// sampling loop (Poll, Run) over the gpu.Manager and hands the same
// samples on (Latest): the gpu.Manager, the meter and the metrics
// collector see the same numbers.
//
// Energy is the difference of the device's energy counter where it has
// one, and the integral of its power (trapezoids, carried to the
// millijoule) where it does not. A counter that goes backwards (a driver
// reload) is detected and the interval integrated instead. Samples more
// than WithMaxSampleGap apart leave a gap, booked as KindGap.
//
// Attribution waits until a sample crosses a record window (a minute by
// default): then the allocation timeline is read once per GPU for all
// intervals since the last time, and every interval is cut at each
// handover and window boundary. An interval split by a handover is
// shared in proportion to the power before and after it times the time on
// each side (FlagSplit); Run takes a sample at once when work starts or
// ends, so such splits stay rare and short. Each interval's energy is
// shared in whole millijoules by largest remainder, so the records of a
// GPU add up to its metered energy exactly.
//
// All methods are safe for concurrent use.
type Meter struct {
	gpus     *gpu.Manager
	timeline Timeline
	ledger   Ledger
	o        options
	devs     []gpu.Device

	pollMu  sync.Mutex // one Poll at a time: it owns scratch
	scratch []gpu.Sample

	settleMu sync.Mutex // one attribution at a time; records reach the ledger in order
	unsent   []Record   // built but not yet accepted by the ledger
	recs     []Record   // scratch for one settle

	mu       sync.Mutex // the readings; never held across a call out
	st       []*gpuState
	byUUID   map[string]int
	closed   bool
	totalsWL map[totalKey]*Total
	totalsTK map[totalKey]*Total
	ledgerEr error
}

// gpuState is the meter's view of one GPU.
type gpuState struct {
	uuid  string
	index int

	// Under Meter.mu: the last reading and the intervals not yet
	// attributed.
	have       bool
	fromTail   bool // the last reading is the ledger's, from before a restart
	lastT      time.Time
	lastC      uint64
	lastCOK    bool
	lastPMW    int64
	lastPOK    bool
	carry      uint64 // integration remainder, in 1e-9 mJ times 2
	meteredMJ  int64
	facilityMJ int64
	resets     int
	gaps       int
	due        time.Time // attribute once a sample reaches it
	pending    []interval
	spare      []interval
	latest     gpu.Sample

	// Under Meter.settleMu: the record being built.
	open    Record
	hasOpen bool
	openCnt bool    // every interval in open had the counter
	cost    float64 // open's cost so far
	price   float64 // open's holder's price per GPU-hour
	segs    []segment
	cuts    []piece
	weights []uint64
	shares  []int64
	fshares []int64
}

// interval is the energy of one GPU between two readings.
type interval struct {
	from, to   time.Time
	mj, fmj    int64
	p0, p1     int64 // mW at from and to; -1 when unknown
	counterEnd uint64
	flags      Flags
}

// segment is a stretch of a GPU's time with one holder, or idle.
type segment struct {
	from, to time.Time
	a        workload.Allocation // zero Workload: idle
}

type piece struct {
	from, to time.Time
	seg      int // index in segs; -1 for a gap
}

type totalKey struct {
	workload, tenant string
	kind             workload.Kind
}

// Total sums the records booked since the meter started, for one workload
// or one tenant and kind.
type Total struct {
	Workload         string // empty for a tenant-and-kind total
	Tenant           string
	Kind             workload.Kind
	Seconds          float64 // GPU-seconds held
	EnergyMJ         int64
	FacilityEnergyMJ int64
	Cost, Revenue    Amount
	last             time.Time
}

// New makes a meter for the GPUs of gpus, attributing by timeline and
// appending to ledger. It reads the ledger's newest record of each GPU, so
// a meter started after a crash carries on where the records end: the
// time the old one had not yet booked becomes a gap (or, within
// WithMaxSampleGap, is booked as usual). It takes ownership of nothing.
func New(ctx context.Context, gpus *gpu.Manager, timeline Timeline, ledger Ledger, opts ...Option) (*Meter, error) {
	o := defaultOptions()
	var errs []error
	if gpus == nil {
		errs = append(errs, errors.New("nil gpu.Manager: pass the node's gpu.New(...)"))
	}
	if timeline == nil {
		errs = append(errs, errors.New("nil Timeline: pass the node's *workload.Manager"))
	}
	if ledger == nil {
		errs = append(errs, errors.New("nil Ledger: pass a bolt ledger, or NewMemoryLedger() for a demo"))
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, Errorf(ErrInvalid, "new meter: %w", err)
	}
	m := &Meter{gpus: gpus, timeline: timeline, ledger: ledger, o: o, devs: gpus.Devices(),
		byUUID: map[string]int{}, totalsWL: map[totalKey]*Total{}, totalsTK: map[totalKey]*Total{}}
	m.scratch = make([]gpu.Sample, len(m.devs))
	tails, err := ledger.Tails(ctx)
	if err != nil {
		return nil, Errorf(ErrLedger, "new meter: read where the ledger's records end: %w", err)
	}
	for i, d := range m.devs {
		st := &gpuState{uuid: d.UUID, index: i, pending: make([]interval, 0, 64), spare: make([]interval, 0, 64)}
		if t, ok := tails[d.UUID]; ok {
			// Carry on from the ledger: the next interval starts where the
			// records end, with the counter as it was there. Nobody can
			// say who held the GPU meanwhile (a restarted workload manager
			// knows its holds only from its own start), so it is a gap.
			st.have, st.fromTail, st.lastT, st.lastPMW = true, true, t.End, -1
			st.lastC, st.lastCOK = t.EndCounterMJ, t.Flags&FlagCounter != 0
			st.due = m.windowEnd(t.End)
		}
		m.st = append(m.st, st)
		m.byUUID[d.UUID] = i
	}
	return m, nil
}

func (m *Meter) windowEnd(t time.Time) time.Time { return t.Truncate(m.o.window).Add(m.o.window) }

// Observe books one sample of each GPU (in any order; a sample without
// readings, such as a lost GPU's, books its interval as FlagEnergyUnknown).
// Samples of GPUs the meter does not know are refused with ErrNotFound,
// and samples earlier than the GPU's previous one with ErrInvalid; the
// others are booked all the same. When a sample crosses a record window,
// the intervals so far are attributed and the finished records appended
// to the ledger; a ledger failure (ErrLedger) keeps them for the next
// call.
//
// Between windows it does not allocate.
func (m *Meter) Observe(ctx context.Context, samples []gpu.Sample) error {
	var errs []error
	due := false
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Errorf(ErrClosed, "meter is closed")
	}
	for i := range samples {
		s := &samples[i]
		st := m.stateOf(s)
		if st == nil {
			errs = append(errs, Errorf(ErrNotFound, "sample of GPU %q (index %d): no such GPU on this meter; build the meter over the gpu.Manager that sampled it", s.UUID, s.Index))
			continue
		}
		if err := m.ingest(st, s); err != nil {
			errs = append(errs, err)
			continue
		}
		due = due || !s.Time.Before(st.due)
	}
	m.mu.Unlock()
	if due {
		errs = append(errs, m.settle(ctx, false))
	}
	return errors.Join(errs...)
}

// stateOf finds the GPU of a sample, by index first. The caller holds m.mu.
func (m *Meter) stateOf(s *gpu.Sample) *gpuState {
	if s.Index >= 0 && s.Index < len(m.st) && m.st[s.Index].uuid == s.UUID {
		return m.st[s.Index]
	}
	if i, ok := m.byUUID[s.UUID]; ok {
		return m.st[i]
	}
	return nil
}

// ingest books the interval from the GPU's last reading to s. The caller
// holds m.mu.
func (m *Meter) ingest(st *gpuState, s *gpu.Sample) error {
	if st.have && s.Time.Before(st.lastT) {
		return Errorf(ErrInvalid, "sample of GPU %s at %s is before its previous one at %s: give samples in time order",
			st.uuid, s.Time.Format(time.RFC3339Nano), st.lastT.Format(time.RFC3339Nano))
	}
	st.latest = *s
	pMW, pOK := int64(-1), false
	if s.PowerW.Valid && s.PowerW.Value >= 0 && !math.IsNaN(s.PowerW.Value) && !math.IsInf(s.PowerW.Value, 0) {
		pMW, pOK = int64(math.Round(s.PowerW.Value*1000)), true
	}
	c, cOK := s.EnergyMJ.Value, s.EnergyMJ.Valid
	if !st.have {
		st.have, st.lastT, st.lastC, st.lastCOK, st.lastPMW, st.lastPOK = true, s.Time, c, cOK, pMW, pOK
		st.due = m.windowEnd(s.Time)
		return nil
	}
	if s.Time.Equal(st.lastT) {
		// A second reading of the same instant (a poll at a handover on a
		// driven clock): no time passed, but power may have stepped.
		st.lastPMW, st.lastPOK = pMW, pOK
		return nil
	}
	dt := s.Time.Sub(st.lastT)
	iv := interval{from: st.lastT, to: s.Time, p0: st.lastPMW, p1: pMW}
	gap := dt > m.o.maxGap || st.fromTail
	st.fromTail = false
	if gap {
		iv.flags |= FlagNoSamples
		st.gaps++
	}
	trapezoid := func() {
		// mW*ns/2 is 1e-9 mJ/2: whole millijoules out, the rest carried.
		hi, lo := bits.Mul64(uint64(st.lastPMW+pMW), uint64(dt))
		lo, cy := bits.Add64(lo, st.carry, 0)
		hi += cy
		q, r := bits.Div64(hi, lo, 2e9)
		iv.mj, st.carry = int64(q), r
		iv.flags |= FlagIntegrated
	}
	switch {
	case cOK && st.lastCOK && c >= st.lastC:
		iv.mj = int64(c - st.lastC)
		iv.flags |= FlagCounter
	case cOK && st.lastCOK:
		// The counter went backwards: the driver reloaded and it starts
		// again from zero at a time nobody knows.
		st.resets++
		iv.flags |= FlagCounterReset
		if pOK && st.lastPOK && !gap {
			trapezoid()
		} else {
			iv.mj = int64(c) // at least what it counted since the reload
			iv.flags |= FlagEnergyUnknown
		}
	case pOK && st.lastPOK && !gap:
		trapezoid()
	default:
		iv.flags |= FlagEnergyUnknown
	}
	if cOK {
		iv.counterEnd = c
	} else {
		iv.flags &^= FlagCounter
	}
	before := st.facilityMJ
	st.meteredMJ += iv.mj
	st.facilityMJ = int64(math.Round(float64(st.meteredMJ) * m.o.wall * m.o.pue))
	iv.fmj = st.facilityMJ - before
	st.pending = append(st.pending, iv)
	st.lastT, st.lastC, st.lastCOK, st.lastPMW, st.lastPOK = s.Time, c, cOK, pMW, pOK
	return nil
}

// Poll samples every GPU once through the gpu.Manager and observes the
// samples. Devices that fail to answer are booked as FlagEnergyUnknown;
// their errors are returned with the meter's own.
func (m *Meter) Poll(ctx context.Context) error {
	m.pollMu.Lock()
	defer m.pollMu.Unlock()
	var err error
	m.scratch, err = m.gpus.SampleAll(ctx, m.scratch)
	if err != nil && len(m.scratch) == 0 {
		return err
	}
	return errors.Join(err, m.Observe(ctx, m.scratch))
}

// Run samples every GPU each interval until ctx ends, and at once when
// work starts or ends on a GPU (when the Timeline has Watch, as
// *workload.Manager does), so handovers fall on samples. It logs what
// fails and goes on. When ctx ends it books what is pending (Flush) and
// returns ctx's error, joined with the flush's.
func (m *Meter) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 || every >= m.o.maxGap {
		return Errorf(ErrInvalid, "meter run every %v: want more than 0 and less than the maximum sample gap %v (WithMaxSampleGap)", every, m.o.maxGap)
	}
	start := m.o.clock.Now()
	var events <-chan workload.Event
	if w, ok := m.timeline.(watcher); ok {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		events = w.Watch(wctx, 0) // closes with wctx
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastErr string
	poll := func() {
		err := m.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil && err.Error() != lastErr {
			m.o.log.Warn("accounting: sampling and booking had problems; going on", "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
	}
	poll()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return errors.Join(ctx.Err(), m.Flush(fctx))
		case <-tick.C:
			poll()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if len(ev.GPUs) > 0 && !ev.Time.Before(start) {
				poll()
			}
		}
	}
}

// Flush attributes everything observed so far and appends every record,
// the last one of each GPU ending at its newest sample. Records that
// follow continue from there.
func (m *Meter) Flush(ctx context.Context) error {
	return m.settle(ctx, true)
}

// Close flushes (for at most 10 s) and refuses later calls with ErrClosed.
// It does not close the ledger. It is idempotent.
func (m *Meter) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := m.Flush(ctx)
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return err
}

// settle attributes the pending intervals of the GPUs that are due (all,
// when final) and appends the finished records, with any the ledger
// refused before.
func (m *Meter) settle(ctx context.Context, final bool) error {
	m.settleMu.Lock()
	defer m.settleMu.Unlock()
	var errs []error
	m.recs = m.recs[:0]
	for _, st := range m.st {
		m.mu.Lock()
		if len(st.pending) == 0 || (!final && st.lastT.Before(st.due)) {
			m.mu.Unlock()
			if final && st.hasOpen {
				m.emit(ctx, st, &errs)
			}
			continue
		}
		ivs := st.pending
		st.pending, st.spare = st.spare[:0], ivs
		last := st.lastT
		m.mu.Unlock()

		m.attribute(ctx, st, ivs, last, &errs)
		if final && st.hasOpen {
			m.emit(ctx, st, &errs)
		}
		m.mu.Lock()
		st.due = m.windowEnd(last)
		if st.hasOpen {
			st.due = m.windowEnd(st.open.Start)
		}
		m.mu.Unlock()
	}
	m.book(m.recs)
	m.unsent = append(m.unsent, m.recs...)
	if len(m.unsent) > 0 {
		err := m.ledger.Append(ctx, m.unsent)
		m.mu.Lock()
		m.ledgerEr = err
		m.mu.Unlock()
		if err != nil {
			if !errors.Is(err, ErrLedger) {
				err = Errorf(ErrLedger, "append %d records: %w", len(m.unsent), err)
			}
			errs = append(errs, err)
		} else {
			m.unsent = m.unsent[:0]
		}
	}
	return errors.Join(errs...)
}

// attribute books intervals ivs of st, which end at last, into records.
// The caller holds m.settleMu.
func (m *Meter) attribute(ctx context.Context, st *gpuState, ivs []interval, last time.Time, errs *[]error) {
	first := ivs[0].from
	holds, terr := m.timeline.Allocations(st.uuid, first, last)
	if terr != nil {
		*errs = append(*errs, fmt.Errorf("allocation timeline of GPU %s from %s to %s: %w; booked as a gap",
			st.uuid, first.Format(time.RFC3339), last.Format(time.RFC3339), terr))
		m.o.log.Warn("accounting: allocation timeline unreadable; booking as a gap", "gpu", st.uuid, "err", terr)
	}
	// The holders of [first, last], in order, idle between them.
	st.segs = st.segs[:0]
	at := first
	for _, a := range holds {
		from, to := a.From, a.To
		if to.IsZero() || to.After(last) {
			to = last
		}
		if from.Before(at) {
			from = at
		}
		if !to.After(from) {
			continue
		}
		if from.After(at) {
			st.segs = append(st.segs, segment{from: at, to: from})
		}
		st.segs = append(st.segs, segment{from: from, to: to, a: a})
		at = to
	}
	if last.After(at) {
		st.segs = append(st.segs, segment{from: at, to: last})
	}
	for _, iv := range ivs {
		m.cut(st, iv, terr != nil)
		m.share(ctx, st, iv, terr != nil, errs)
	}
}

// cut splits iv at each change of holder and each window boundary into
// st.cuts. The caller holds m.settleMu.
func (m *Meter) cut(st *gpuState, iv interval, noTimeline bool) {
	st.cuts = st.cuts[:0]
	gap := iv.flags&FlagNoSamples != 0 || noTimeline
	at := iv.from
	si := 0
	for at.Before(iv.to) {
		end := m.windowEnd(at)
		if end.After(iv.to) {
			end = iv.to
		}
		seg := -1
		if !gap {
			for si < len(st.segs) && !st.segs[si].to.After(at) {
				si++
			}
			seg = si
			if si < len(st.segs) && st.segs[si].to.Before(end) {
				end = st.segs[si].to
			}
		}
		st.cuts = append(st.cuts, piece{from: at, to: end, seg: seg})
		at = end
	}
}

// share divides iv's energy over st.cuts and books each piece. The caller
// holds m.settleMu.
func (m *Meter) share(ctx context.Context, st *gpuState, iv interval, noTimeline bool, errs *[]error) {
	n := len(st.cuts)
	st.weights = st.weights[:0]
	// The first change of holder inside the interval: before it the GPU
	// drew as the first reading says, after it as the second.
	var change time.Time
	for i := 1; i < n; i++ {
		if st.cuts[i].seg != st.cuts[i-1].seg {
			change = st.cuts[i].from
			break
		}
	}
	// Power times nanoseconds fits 64 bits for up to an hour at 1 kW.
	byPower := !change.IsZero() && iv.p0 >= 0 && iv.p1 >= 0 && iv.p0+iv.p1 > 0 && iv.to.Sub(iv.from) <= time.Hour
	for _, c := range st.cuts {
		w := uint64(c.to.Sub(c.from))
		if byPower {
			p := iv.p0
			if !c.from.Before(change) {
				p = iv.p1
			}
			w *= uint64(p)
		}
		st.weights = append(st.weights, w)
	}
	st.shares = grow(st.shares, n)
	st.fshares = grow(st.fshares, n)
	splitExact(iv.mj, st.weights, st.shares)
	splitExact(iv.fmj, st.weights, st.fshares)
	counter := iv.counterEnd - uint64(iv.mj)
	for i, c := range st.cuts {
		counter += uint64(st.shares[i])
		r := Record{Start: c.from, End: c.to, GPU: st.uuid, Kind: KindGap, EnergyMJ: st.shares[i], FacilityEnergyMJ: st.fshares[i],
			EndCounterMJ: counter, Flags: iv.flags}
		if noTimeline {
			r.Flags |= FlagNoTimeline
		}
		if !change.IsZero() {
			r.Flags |= FlagSplit
		}
		var hold workload.Allocation
		if c.seg >= 0 {
			hold = st.segs[c.seg].a
			r.Workload, r.Attempt, r.Tenant, r.Kind = hold.Workload, hold.Attempt, hold.Tenant, hold.Kind
			if hold.Workload == "" {
				r.Kind = KindIdle
			}
		}
		cost := 0.0
		if m.o.tariff == nil {
			r.Flags |= FlagCostUnknown
		} else {
			var err error
			if cost, err = Cost(m.o.tariff, r.Start, r.End, r.FacilityEnergyMJ); err != nil {
				r.Flags |= FlagCostUnknown
				*errs = append(*errs, fmt.Errorf("price the energy of GPU %s: %w", st.uuid, err))
			}
		}
		m.add(ctx, st, r, cost, hold.PricePerGPUHour, errs)
	}
}

func grow(s []int64, n int) []int64 {
	if cap(s) < n {
		return make([]int64, n)
	}
	return s[:n]
}

// add extends the open record with r, or emits it and opens r, when the
// holder changes or r starts a new window. The caller holds m.settleMu.
func (m *Meter) add(ctx context.Context, st *gpuState, r Record, cost, pricePerHour float64, errs *[]error) {
	o := &st.open
	if st.hasOpen && (o.Workload != r.Workload || o.Attempt != r.Attempt || o.Kind != r.Kind || o.Tenant != r.Tenant ||
		!r.Start.Equal(o.End) || r.Start.Truncate(m.o.window) != o.Start.Truncate(m.o.window)) {
		m.emit(ctx, st, errs)
	}
	if !st.hasOpen {
		st.open, st.hasOpen, st.openCnt, st.cost, st.price = r, true, r.Flags&FlagCounter != 0, cost, pricePerHour
	} else {
		o.End = r.End
		o.EnergyMJ += r.EnergyMJ
		o.FacilityEnergyMJ += r.FacilityEnergyMJ
		o.EndCounterMJ = r.EndCounterMJ
		o.Flags |= r.Flags
		st.openCnt = st.openCnt && r.Flags&FlagCounter != 0
		st.cost += cost
	}
	if o.End.Equal(o.End.Truncate(m.o.window)) {
		m.emit(ctx, st, errs) // the window is complete
	}
}

// emit finishes the open record: revenue, cost, flags. The caller holds
// m.settleMu.
func (m *Meter) emit(ctx context.Context, st *gpuState, errs *[]error) {
	r := st.open
	st.hasOpen = false
	r.Cost = AmountOf(st.cost)
	if !st.openCnt {
		r.Flags &^= FlagCounter
		r.EndCounterMJ = 0
	}
	switch {
	case r.Kind == KindIdle || r.Kind == KindGap:
	case r.Kind == workload.KindMining:
		if m.o.mining == nil {
			r.Flags |= FlagRevenueUnknown
			break
		}
		v, err := m.o.mining.MiningRevenue(ctx, r.GPU, r.Workload, r.Start, r.End)
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			err = fmt.Errorf("the source said %v", v)
		}
		if err != nil {
			r.Flags |= FlagRevenueUnknown
			*errs = append(*errs, fmt.Errorf("mining revenue of %s on GPU %s from %s: %w", r.Workload, r.GPU, r.Start.Format(time.RFC3339), err))
			break
		}
		r.Revenue = AmountOf(v)
	default:
		r.Revenue = AmountOf(st.price * r.Duration().Hours())
	}
	m.recs = append(m.recs, r)
}

// book adds records to the totals.
func (m *Meter) book(recs []Record) {
	if len(recs) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		tk := totalKey{tenant: r.Tenant, kind: r.Kind}
		m.addTotal(m.totalsTK, tk, r)
		if r.Workload != "" {
			m.addTotal(m.totalsWL, totalKey{workload: r.Workload, tenant: r.Tenant, kind: r.Kind}, r)
		}
	}
	for len(m.totalsWL) > m.o.maxWorkloads {
		var oldest totalKey
		var when time.Time
		for k, t := range m.totalsWL {
			if when.IsZero() || t.last.Before(when) {
				oldest, when = k, t.last
			}
		}
		delete(m.totalsWL, oldest)
	}
}

func (m *Meter) addTotal(into map[totalKey]*Total, k totalKey, r Record) {
	t := into[k]
	if t == nil {
		t = &Total{Workload: k.workload, Tenant: k.tenant, Kind: k.kind}
		into[k] = t
	}
	t.Seconds += r.Duration().Seconds()
	t.EnergyMJ += r.EnergyMJ
	t.FacilityEnergyMJ += r.FacilityEnergyMJ
	t.Cost += r.Cost
	t.Revenue += r.Revenue
	t.last = r.End
}
