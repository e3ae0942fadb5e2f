package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/mining"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// sampleEvery is how often the meter samples the GPUs, as a node's meter
// would (its default largest gap between samples is 30 s).
const sampleEvery = 30 * time.Second

// switchTime is how long a GPU earns nothing when it starts c: a miner
// builds its DAG (about a minute on Ethash), a rental waits for the
// handover and the customer's container, unbilled.
func switchTime(c choice) time.Duration {
	switch c.act {
	case actMine:
		return time.Minute
	case actRent:
		return 5 * time.Minute
	}
	return 0
}

// decision is a change of what one GPU does, and what it earned until the
// GPU's next decision (End).
type decision struct {
	At       time.Time
	GPU      int
	UUID     string
	From, To choice
	First    bool // the day's first choice
	Why      string
	End      time.Time
	// Made is the GPU's margin over [At, End); Gain is Made less what
	// staying put made on the same GPU then.
	Made, Gain accounting.Amount
}

// dayResult is one strategy's day.
type dayResult struct {
	name      string
	devices   []gpu.Device
	ledger    *accounting.MemoryLedger
	decisions []decision
	choices   [][]choice // per step, per GPU: what it runs after the step's decisions
	trace     []string   // GPU 0's options and the switcher's word at each step
}

// gpuState is what the farm keeps of one GPU.
type gpuState struct {
	on      choice    // what it runs, or is switching to
	readyAt time.Time // while switching: when the new work starts
	tuned   bool
	hold    int // index of its open hold in farm.holds, -1 for none
	last    int // index of its latest decision, -1 for none
}

// farm runs one strategy over the day on its own simulated rig: it puts
// each choice's load on the simulated GPUs, keeps the allocation timeline,
// and lets the SDK's meter sample, attribute and price every interval.
type farm struct {
	day    []step
	devs   []gpu.Device
	model  []rigModel
	rig    *sim.Rig
	gpus   *gpu.Manager
	clk    *sim.ManualClock
	tuner  *mining.Tuner
	meter  *accounting.Meter
	state  []gpuState
	holds  [][]workload.Allocation // per GPU, oldest first
	coinOf map[string]string       // mining workload ID -> coin tag
	res    *dayResult
}

// runDay plays the day with strategy s on a fresh rig of preset p.
func runDay(ctx context.Context, p sim.Preset, day []step, s strategy, tou accounting.Tariff, log *slog.Logger) (*dayResult, error) {
	clk := sim.NewClock(day[0].At)
	rig, err := sim.New(p, sim.WithClock(clk), sim.WithLogger(log))
	if err != nil {
		return nil, err
	}
	gpus, err := gpu.New(ctx, rig, gpu.WithClock(clk), gpu.WithLogger(log))
	if err != nil {
		return nil, err
	}
	defer gpus.Close()
	f := &farm{day: day, devs: gpus.Devices(), rig: rig, gpus: gpus, clk: clk, coinOf: map[string]string{}}
	var profiles []mining.Profile
	for _, d := range f.devs {
		m, ok := modelOf(d.Name)
		if !ok {
			return nil, fmt.Errorf("no mining benchmark for GPU %d (%s): use a preset of %s", d.Index, d.Name, supportedPresets())
		}
		f.model = append(f.model, m)
		profiles = append(profiles, m.tune)
		f.state = append(f.state, gpuState{hold: -1, last: -1})
	}
	f.holds = make([][]workload.Allocation, len(f.devs))
	if f.tuner, err = mining.NewTuner(gpus, profiles, log); err != nil {
		return nil, err
	}
	f.res = &dayResult{name: s.name(), devices: f.devs, ledger: accounting.NewMemoryLedger()}
	f.meter, err = accounting.New(ctx, gpus, accounting.TimelineFunc(f.allocations), f.res.ledger,
		accounting.WithTariff(tou), accounting.WithMiningRevenue(accounting.MiningRevenueFunc(f.miningRevenue)),
		accounting.WithClock(clk), accounting.WithLogger(log))
	if err != nil {
		return nil, err
	}
	defer f.meter.Close()

	for i, st := range day {
		if err := f.advance(ctx, st.At); err != nil {
			return nil, err
		}
		if err := f.decide(ctx, i, st, s); err != nil {
			return nil, err
		}
		// A second sample at the same instant: the power stepped.
		if err := f.meter.Poll(ctx); err != nil {
			return nil, err
		}
	}
	end := day[len(day)-1].At.Add(stepLen)
	if err := f.advance(ctx, end); err != nil {
		return nil, err
	}
	for g := range f.devs {
		f.closeHold(g, end)
		if l := f.state[g].last; l >= 0 {
			f.res.decisions[l].End = end
		}
	}
	if err := f.meter.Close(); err != nil {
		return nil, fmt.Errorf("book the last records: %w", err)
	}
	f.res.name = s.name() // a strategy may name itself after what it chose
	return f.res, nil
}

// advance moves the clock to t, sampling every sampleEvery, and starts
// the work of GPUs whose switch is over.
func (f *farm) advance(ctx context.Context, t time.Time) error {
	for now := f.clk.Now(); now.Before(t); {
		if err := ctx.Err(); err != nil {
			return err
		}
		now = now.Add(sampleEvery)
		if now.After(t) {
			now = t
		}
		f.clk.Set(now)
		if err := f.meter.Poll(ctx); err != nil {
			return err
		}
		started := false
		for g := range f.devs {
			if r := f.state[g].readyAt; !r.IsZero() && !r.After(now) {
				if err := f.start(ctx, g); err != nil {
					return err
				}
				started = true
			}
		}
		if started {
			if err := f.meter.Poll(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// decide asks the strategy about every GPU at step i and carries out the
// changes. The customer's offer has room for st.Offer.GPUs: GPUs already
// rented keep their places, in index order; the rest go to the first
// GPUs that choose it.
func (f *farm) decide(ctx context.Context, i int, st step, s strategy) error {
	keep := map[int]bool{}
	for g := range f.devs {
		if on := f.state[g].on; on.act == actRent && on.tenant == st.Offer.Tenant && len(keep) < st.Offer.GPUs {
			keep[g] = true
		}
	}
	free := st.Offer.GPUs - len(keep)
	choices := make([]choice, len(f.devs))
	for g, d := range f.devs {
		cur := f.state[g].on
		opts := f.model[g].options(st, keep[g] || (cur.act != actRent && free > 0))
		to, why := s.choose(d.UUID, cur, i == 0, opts)
		if cur.act == actRent && !keep[g] && i > 0 {
			why = fmt.Sprintf("%s wants %d GPUs from now, not this one; %s", cur.tenant, st.Offer.GPUs, why)
		}
		if g == 0 {
			f.res.trace = append(f.res.trace, fmt.Sprintf("%s  %s  [%s]", st.At.Format("15:04"), list(opts), s.note()))
		}
		if to.act == actRent && !keep[g] {
			free--
		}
		choices[g] = to.choice
		switch {
		case i == 0 || to.choice != cur:
			if err := f.change(ctx, g, to.choice, st.At, i == 0, why); err != nil {
				return err
			}
		case cur.act == actRent && f.state[g].readyAt.IsZero():
			// Still rented, at this step's price.
			f.closeHold(g, st.At)
			f.openHold(g, st.At)
		}
	}
	f.res.choices = append(f.res.choices, choices)
	return nil
}

// change records a decision and moves GPU g to c: its work stops now and
// c starts after c's switch time (at once on the first step, when the day
// finds the rig already at work).
func (f *farm) change(ctx context.Context, g int, c choice, at time.Time, first bool, why string) error {
	st := &f.state[g]
	if st.last >= 0 {
		f.res.decisions[st.last].End = at
	}
	f.res.decisions = append(f.res.decisions, decision{At: at, GPU: g, UUID: f.devs[g].UUID, From: st.on, To: c, First: first, Why: why})
	st.last = len(f.res.decisions) - 1
	f.closeHold(g, at)
	if err := f.rig.SetLoad(g, sim.Load{}); err != nil {
		return err
	}
	if st.tuned && c.act != actMine {
		if err := f.tuner.Restore(ctx, f.devs[g].UUID); err != nil {
			return err
		}
		st.tuned = false
	}
	st.on = c
	st.readyAt = at
	if !first {
		st.readyAt = at.Add(switchTime(c))
	}
	if !st.readyAt.After(at) {
		return f.start(ctx, g)
	}
	return nil
}

// start puts GPU g to its chosen work: the load on the simulated GPU, the
// mining tune, and a hold on the timeline.
func (f *farm) start(ctx context.Context, g int) error {
	st := &f.state[g]
	d, m := f.devs[g], f.model[g]
	now := f.clk.Now()
	st.readyAt = time.Time{}
	var l sim.Load
	switch st.on.act {
	case actMine:
		if !st.tuned {
			if _, _, err := f.tuner.Apply(ctx, d, m.bench.Algorithm); err != nil {
				return err
			}
			st.tuned = true
		}
		l = sim.Load{Util: 1, MemUtil: 1, MemoryBytes: 4 << 30} // the DAG and the miner
	case actRent:
		l = sim.Load{Util: m.rentUtil, MemUtil: 0.6, MemoryBytes: d.MemoryBytes / 10 * 8}
	case actIdle:
		return nil
	}
	if err := f.rig.SetLoad(g, l); err != nil {
		return err
	}
	f.openHold(g, now)
	return nil
}

// openHold puts GPU g's work on the timeline from at: a workload per
// decision, one hold per step while rented, so each hold has the step's
// price.
func (f *farm) openHold(g int, at time.Time) {
	st := &f.state[g]
	dec := f.res.decisions[st.last]
	a := workload.Allocation{GPU: f.devs[g].UUID, Attempt: 1, From: at}
	switch st.on.act {
	case actMine:
		a.Workload = fmt.Sprintf("mine-%s-gpu%d-%s", st.on.coin, g, dec.At.Format("1504"))
		a.Tenant, a.Kind = "mining", workload.KindMining
		f.coinOf[a.Workload] = st.on.coin
	case actRent:
		a.Workload = fmt.Sprintf("rent-%s-gpu%d-%s", st.on.tenant, g, dec.At.Format("1504"))
		a.Tenant, a.Kind = st.on.tenant, workload.KindInference
		a.PricePerGPUHour = f.stepAt(at).Offer.PerGPUHour
	}
	f.holds[g] = append(f.holds[g], a)
	st.hold = len(f.holds[g]) - 1
}

func (f *farm) closeHold(g int, at time.Time) {
	if h := f.state[g].hold; h >= 0 {
		f.holds[g][h].To = at
		f.state[g].hold = -1
	}
}

// allocations is the farm's timeline for the meter: the holds of a GPU
// that overlap [from, to].
func (f *farm) allocations(uuid string, from, to time.Time) ([]workload.Allocation, error) {
	for g, d := range f.devs {
		if d.UUID != uuid {
			continue
		}
		var out []workload.Allocation
		for _, a := range f.holds[g] {
			if a.From.Before(to) && (a.To.IsZero() || a.To.After(from)) {
				out = append(out, a)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no GPU %s on this rig", uuid)
}

// miningRevenue is what a miner earned over [from, to): the SDK's revenue
// formula on the coin's numbers of each step, at the GPU's benchmark rate.
func (f *farm) miningRevenue(_ context.Context, uuid, id string, from, to time.Time) (float64, error) {
	tag, ok := f.coinOf[id]
	if !ok {
		return 0, fmt.Errorf("no miner %s on this rig", id)
	}
	var m rigModel
	for g, d := range f.devs {
		if d.UUID == uuid {
			m = f.model[g]
		}
	}
	usd := 0.0
	for i, st := range f.day {
		end := st.At.Add(stepLen)
		if i+1 < len(f.day) {
			end = f.day[i+1].At
		}
		lo, hi := later(from, st.At), earlier(to, end)
		if !hi.After(lo) {
			continue
		}
		c, ok := st.coin(tag)
		if !ok {
			return 0, errors.New("no coin " + tag + " at " + st.At.Format(time.RFC3339))
		}
		usd += c.RevenuePerDay(m.bench.Rate, poolFee) * st.BTCUSD * hi.Sub(lo).Hours() / 24
	}
	return usd, nil
}

// stepAt is the step in force at t.
func (f *farm) stepAt(t time.Time) step {
	s := f.day[0]
	for _, st := range f.day {
		if st.At.After(t) {
			break
		}
		s = st
	}
	return s
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
