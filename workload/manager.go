package workload

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// Manager runs the workloads of one node: it queues them, places them on
// whole GPUs, lets miners fill what is idle, preempts by the rules of
// Policy and priority, hands GPUs over cleanly, obeys a power budget, and
// keeps its records in a Store. Run drives it; the other methods are safe
// to call from any goroutine, before or while Run runs.
//
// Every change of a workload goes through one state machine (see State):
// the record is written to the store first, then memory changes and the
// watchers hear of it. GPUs are freed only when the runtime confirms that
// the container holding them has ended.
type Manager struct {
	gpus  *gpu.Manager
	rt    isolation.Runtime
	holds *holds // the holds of external workloads, their runtime
	store Store
	log   *slog.Logger
	clock gpu.Clock
	o     options

	mu        sync.Mutex
	work      map[string]*entry // every record in memory, finished ones too
	live      map[string]*entry // the ones not finished: what a pass walks
	slots     []*slot
	byUUID    map[string]int
	seq       uint64
	events    []Event       // the newest o.eventLog events
	evictions int           // how often events left memory
	notify    chan struct{} // closed and replaced at every event
	changed   chan struct{} // closed and replaced when a GPU is released
	budgetW   float64
	minerN    int
	node      string // why the whole node is cordoned, or ""

	loaded     bool  // the store's records are in memory
	storeErr   error // the last store write failed; new launches wait
	storeSince time.Time

	life    lifecycle
	done    chan struct{} // closed when Run returns
	cleanup []isolation.Ref

	drawW      float64 // total GPU draw at the last measurement
	curtailing bool
	curtailMu  sync.Mutex // one curtailment at a time
	curtailReq chan curtailReq
	measuring  bool
	filling    bool

	cands   []candidate // scratch for decide
	healthy []bool      // scratch: placeable by slot, per scheduling pass

	kick chan struct{}
}

// lifecycle is where the Manager itself is: one value, so that Run, Close
// and the calls that depend on them see one answer.
type lifecycle int

const (
	created lifecycle = iota // Run not yet called
	running
	stopped // Run returned
	closed
)

// entry is a workload's record plus what the manager tracks while it lives.
type entry struct {
	w           Workload
	id          string    // w.Spec.ID, which never changes: readable without the lock
	paid        bool      // w.Spec.Kind.Paid(), likewise
	preemptedBy string    // who takes its GPUs: they start before its container is deleted
	stopping    bool      // a runtime Stop is under way
	awaiting    bool      // a goroutine waits for its container
	scheduledAt time.Time // when its GPUs were reserved
	victims     []string
	pids        []int
	models      []string      // normalised GPURequest.Models
	abort       chan struct{} // closed to abandon a launch
	abortTo     State         // what an abandoned launch becomes: queued, failed or cancelled
	abortWhy    string
	releasedAt  time.Time     // when the last earlier holder freed a GPU of its launch
	launched    chan struct{} // closed when its launch ends, started or not
	notBefore   time.Time     // real time: not placed before (retry backoff)
	waitWhy     string        // why the policy keeps it off mining GPUs
}

func newEntry(w Workload) *entry { return &entry{w: w, id: w.Spec.ID, paid: w.Spec.Kind.Paid()} }

// slot is one GPU as the scheduler sees it.
type slot struct {
	dev gpu.Device
	// holder is the workload whose container is on the GPU (starting,
	// running or stopping); next is the one that has reserved it.
	holder, next string
	// quarantine, when set, keeps the GPU out of use until Release: a
	// handover found a process left on it, or the runtime could not
	// confirm that the container on it ended.
	quarantine string
	cordon     string       // why an operator took it out of service
	drain      bool         // its work is being moved off
	hung       string       // why it is taken for hung: a call did not return in time
	probing    bool         // a probe of a hung GPU is under way
	model      string       // normalised model name, for GPURequest.Models
	link       gpu.Link     // the link readiness judges by (gpu.Readiness.Link)
	use        gpu.Use      // what readiness admits, health aside
	useWhy     string       // readiness's flags, for refusals
	holds      []Allocation // the newest holds, oldest first
	lowered    bool         // the power cap lowered its limit
	limitW     float64      // the limit the cap set, 0 when it set none
	lastW      float64      // measured draw, or the draw booked for work just placed
}

// New makes a Manager over the node's GPUs and a container runtime. It
// takes ownership of neither: close them after the Manager.
func New(gpus *gpu.Manager, rt isolation.Runtime, opts ...Option) (*Manager, error) {
	var errs []error
	if gpus == nil {
		errs = append(errs, errors.New("nil gpu.Manager: pass gpu.New(...)"))
	}
	if rt == nil {
		errs = append(errs, errors.New("nil isolation.Runtime: pass a runtime of isolation/containerd or isolation/process"))
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errorf(ErrInvalid, "new workload manager: %w", err)
	}
	if o.store == nil {
		o.store = NewMemoryStore()
	}
	if o.policy == nil {
		o.policy = AlwaysRent()
	}
	m := &Manager{
		gpus: gpus, rt: rt, holds: newHolds(), store: o.store, log: o.log, clock: o.clock, o: o,
		work:       map[string]*entry{},
		live:       map[string]*entry{},
		byUUID:     map[string]int{},
		notify:     make(chan struct{}),
		changed:    make(chan struct{}),
		budgetW:    o.budgetW,
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		curtailReq: make(chan curtailReq),
	}
	// Sequence numbers start at the clock in microseconds, so that a
	// restarted manager never repeats one a watcher has seen even when its
	// store keeps no events; Run raises it past what the store holds.
	if now := m.clock.Now().UnixMicro(); now > 0 {
		m.seq = uint64(now)
	}
	for i, d := range gpus.Devices() {
		r := gpu.Assess(d, gpu.Health{Healthy: true})
		why := make([]string, len(r.Flags))
		for i, f := range r.Flags {
			why[i] = string(f)
		}
		m.slots = append(m.slots, &slot{dev: d, model: normModel(d.Name), link: r.Link, use: r.Use, useWhy: joinOr(why, "no flags")})
		m.byUUID[d.UUID] = i
	}
	return m, nil
}

// Close closes the store. Containers keep running; a new Manager re-adopts
// them. Stop Run first by cancelling its context and waiting for it: Close
// refuses while Run runs. Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	switch m.life {
	case running:
		m.mu.Unlock()
		return errorf(ErrInvalid, "close workload manager: Run is still running: cancel its context and wait for it first")
	case closed:
		m.mu.Unlock()
		return nil
	}
	m.life = closed
	close(m.notify) // watchers see the end
	m.notify = make(chan struct{})
	m.mu.Unlock()
	return m.store.Close()
}

// usable refuses calls on a closed manager, and calls that need Run on a
// manager whose Run has returned. The caller holds m.mu.
func (m *Manager) usable(needRun bool) error {
	switch {
	case m.life == closed:
		return errorf(ErrClosed, "workload manager is closed: make a new one over the same store")
	case needRun && m.life == stopped:
		return errorf(ErrClosed, "workload manager's Run has returned: make a new Manager over the same store and runtime, and run it")
	}
	return m.load()
}

// load reads the records and the node settings from the store, once,
// before anything reads or changes them: a call made right after New
// sees the workloads an earlier manager left. The caller holds m.mu.
func (m *Manager) load() error {
	if m.loaded {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.o.storeTimeout)
	defer cancel()
	recs, err := m.store.List(ctx)
	if err != nil {
		return errorf(ErrStore, "load workload records: %w", err)
	}
	if err := m.loadCordons(ctx); err != nil {
		return errorf(ErrStore, "load cordons: %w", err)
	}
	if err := m.loadBudget(ctx); err != nil {
		return errorf(ErrStore, "load the power budget: %w", err)
	}
	if es, ok := m.store.(EventStore); ok {
		last, err := es.LastSeq(ctx)
		if err != nil {
			return errorf(ErrStore, "load the event log: %w", err)
		}
		m.seq = max(m.seq, last)
	}
	for _, w := range recs {
		m.seq = max(m.seq, w.Seq)
		e := newEntry(w)
		m.work[w.Spec.ID] = e
		if w.State.live() {
			m.live[w.Spec.ID] = e
			if w.Spec.External && w.Container != (isolation.Ref{}) && w.State != StateQueued {
				m.holds.restore(w)
			}
		}
	}
	m.loaded = true
	return nil
}

// Submit validates spec and queues it. It fails at once with ErrInvalid
// (every problem named), ErrExists for a known ID, ErrUnplaceable when no
// GPU of this node could ever meet the request, ErrStore when the record
// could not be written, and ErrClosed once Run has returned. A workload
// submitted before Run starts is placed when it does.
func (m *Manager) Submit(ctx context.Context, spec Spec) (Workload, error) {
	spec, err := m.admissible(spec)
	if err != nil {
		return Workload{}, err
	}
	if err := m.placeable(spec); err != nil {
		return Workload{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(true); err != nil {
		return Workload{}, err
	}
	if _, ok := m.work[spec.ID]; ok {
		return Workload{}, errorf(ErrExists, "workload %q already exists: pick another ID, or Forget the old one once it has ended", spec.ID)
	}
	e := newEntry(Workload{Spec: spec.clone(), State: StateQueued, SubmittedAt: m.clock.Now()})
	if err := m.admitNew(ctx, e); err != nil {
		return Workload{}, err
	}
	m.poke()
	return e.w.clone(), nil
}

// admissible validates a spec, checks it against its tenant's policy and
// fills in the policy's default limits.
func (m *Manager) admissible(spec Spec) (Spec, error) {
	if err := spec.Validate(); err != nil {
		return Spec{}, err
	}
	pol := m.o.tenancy.For(spec.Tenant)
	cs := pol.Apply(spec.containerSpec(fallback(spec.ID, "x")+"-1", nil))
	if err := pol.Check(cs); err != nil {
		return Spec{}, errorf(ErrInvalid, "workload %q: %w", spec.ID, err)
	}
	spec = spec.clone()
	spec.Resources = cs.Limits
	return spec, nil
}

// admitNew writes a new record, queued, and takes it in. The caller holds
// m.mu.
func (m *Manager) admitNew(ctx context.Context, e *entry) error {
	m.work[e.w.Spec.ID] = e
	if err := m.apply(ctx, e, change{to: StateQueued, ev: Event{Type: EventQueued}}); err != nil {
		delete(m.work, e.w.Spec.ID)
		return err
	}
	return nil
}

// Cancel stops a workload for good: a queued one leaves the queue, a
// running one is stopped with its grace (a training job can checkpoint).
// The cancellation is durable before Cancel returns: if the manager
// restarts first, the next one carries it out. Cancelling a finished
// workload does nothing.
func (m *Manager) Cancel(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.target(id)
	if err != nil {
		return err
	}
	const why = "cancelled"
	cancelled := func(w *Workload) { w.Outcome = StateCancelled }
	switch e.w.State {
	case StateQueued:
		err = m.apply(ctx, e, change{to: StateCancelled, reason: "cancelled while queued", edit: cancelled, ev: Event{Type: EventCancelled}})
	case StateScheduled:
		if err = m.apply(ctx, e, change{to: StateScheduled, edit: cancelled}); err == nil {
			m.abortLaunch(e, StateCancelled, "cancelled before it started")
		}
	case StateRunning, StatePreempting:
		err = m.apply(ctx, e, change{to: StateStopping, reason: why, edit: cancelled, ev: Event{Type: EventStopping}})
	case StateStopping:
		// Already stopping for a fault: the cancellation wins, as it
		// does over a failed launch, and the fault stays in Reason.
		if e.w.Outcome != StateCancelled {
			err = m.apply(ctx, e, change{to: StateStopping, edit: cancelled})
		}
	}
	if err == nil {
		m.poke()
	}
	return err
}

// abortLaunch abandons e's launch, which then ends as to says. The caller
// holds m.mu.
func (m *Manager) abortLaunch(e *entry, to State, why string) {
	if e.abort == nil {
		return
	}
	// A cancellation wins over a failure, a failure over a requeue.
	if e.abortTo == "" || rank(to) > rank(e.abortTo) {
		e.abortTo, e.abortWhy = to, why
	}
	close(e.abort)
	e.abort = nil
}

func rank(s State) int {
	switch s {
	case StateCancelled:
		return 3
	case StateFailed:
		return 2
	case StateQueued:
		return 1
	}
	return 0
}

// target finds a workload a call is about to change: the manager must
// not be closed. The caller holds m.mu.
func (m *Manager) target(id string) (*entry, error) {
	if err := m.usable(false); err != nil {
		return nil, err
	}
	return m.entry(id)
}

// entry finds a workload by ID. The caller holds m.mu.
func (m *Manager) entry(id string) (*entry, error) {
	if err := m.load(); err != nil {
		return nil, err
	}
	e, ok := m.work[id]
	if !ok {
		return nil, errorf(ErrNotFound, "workload %q not found", id)
	}
	return e, nil
}

// Forget removes the record of a finished workload, with its kept log,
// from memory and from the store, so that its ID can be used again. The
// events stay in the event log. A workload that has not finished cannot
// be forgotten.
func (m *Manager) Forget(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.target(id)
	if err != nil {
		return err
	}
	if !e.w.State.Final() {
		return errorf(ErrInvalid, "workload %q is %s: Cancel it and wait until it has ended", id, e.w.State)
	}
	return m.forget(ctx, id)
}

// forget deletes a finished record. The caller holds m.mu.
func (m *Manager) forget(ctx context.Context, id string) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.o.storeTimeout)
	defer cancel()
	err := m.store.Delete(sctx, id)
	m.noteStore(err)
	if err != nil {
		return errorf(ErrStore, "forget workload %q: %w", id, err)
	}
	delete(m.work, id)
	return nil
}

// Get returns the record of a workload.
func (m *Manager) Get(id string) (Workload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.entry(id)
	if err != nil {
		return Workload{}, err
	}
	return e.w.clone(), nil
}

// Filter selects workloads for List; zero fields match everything.
type Filter struct {
	Kind   Kind
	Tenant string
	States []State
}

// List returns the records that match f, ordered by submission.
func (m *Manager) List(f Filter) []Workload {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.load(); err != nil {
		m.log.Error("list workloads: the store cannot be read; listing what is in memory", "err", err)
	}
	var out []Workload
	for _, e := range m.work {
		w := e.w
		if (f.Kind != "" && w.Spec.Kind != f.Kind) || (f.Tenant != "" && w.Spec.Tenant != f.Tenant) ||
			(len(f.States) > 0 && !slices.Contains(f.States, w.State)) {
			continue
		}
		out = append(out, w.clone())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].SubmittedAt.Equal(out[j].SubmittedAt) {
			return out[i].SubmittedAt.Before(out[j].SubmittedAt)
		}
		return out[i].Spec.ID < out[j].Spec.ID
	})
	return out
}

// ReportProgress records what a running workload says of itself, on its
// record (Get shows the last) and as an event. Adapters that parse
// training logs call it.
func (m *Manager) ReportProgress(ctx context.Context, id string, p Progress) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.target(id)
	if err != nil {
		return err
	}
	if !e.w.State.live() {
		return errorf(ErrInvalid, "workload %q has %s: it reports no more progress", id, e.w.State)
	}
	return m.apply(ctx, e, change{to: e.w.State, edit: func(w *Workload) { w.Progress = &p }, ev: Event{Type: EventProgress, Progress: &p}})
}

// MarkReady records that a running workload answers: an inference
// server's health endpoint, probed by its launcher. The record says Ready
// until its next attempt, and EventReady tells the watchers.
func (m *Manager) MarkReady(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.target(id)
	if err != nil {
		return err
	}
	if e.w.State != StateRunning {
		return errorf(ErrInvalid, "workload %q is %s: only a running workload can be ready", id, e.w.State)
	}
	if e.w.Ready {
		return nil
	}
	return m.apply(ctx, e, change{to: StateRunning, edit: func(w *Workload) { w.Ready = true }, ev: Event{Type: EventReady}})
}

// Status is the manager's own health.
type Status struct {
	// Running reports whether Run is running.
	Running bool
	// StoreErr is the last store write's error while the store fails; no
	// new work starts meanwhile. StoreFailedAt is when it began.
	StoreErr      error
	StoreFailedAt time.Time
	// Queued, Live and Finished count the records.
	Queued, Live, Finished int
	// DrawW is the GPUs' total draw at the last measurement; BudgetW the
	// standing power budget, 0 for none.
	DrawW, BudgetW float64
	// Cordoned says why the whole node is out of service, when it is.
	Cordoned string
}

// Status reports the manager's health: whether its store works, and what
// it holds.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = m.load() // a failure shows as StoreErr once a write fails too
	st := Status{Running: m.life == running, StoreErr: m.storeErr, StoreFailedAt: m.storeSince,
		Live: len(m.live), Finished: len(m.work) - len(m.live), DrawW: m.drawW, BudgetW: m.budgetW, Cordoned: m.node}
	if st.StoreErr == nil {
		st.StoreFailedAt = time.Time{}
	}
	for _, e := range m.live {
		if e.w.State == StateQueued {
			st.Queued++
		}
	}
	return st
}

// GPU is one GPU as the workload manager sees it.
type GPU struct {
	Device gpu.Device
	// Healthy is false once the GPU reported a fatal fault, while its
	// health is unknown (the event stream is down), and while it is hung.
	Healthy bool
	// Health is why it is not healthy, when it is not.
	Health string
	// Workload holds the GPU (starting, running or stopping), of Kind and
	// Tenant; Next has reserved it. Both are empty when the GPU is idle.
	Workload, Next string
	Kind           Kind
	Tenant         string
	// Quarantine says why the GPU is out of use until Release, when it is.
	Quarantine string
	// Cordoned says why an operator took it out of service: its own
	// cordon, else the node's.
	Cordoned string
	// Use is what readiness admits on it: training, inference or mining.
	Use gpu.Use
}

// GPUs returns every GPU with what holds it.
func (m *Manager) GPUs() []GPU {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]GPU, len(m.slots))
	for i, s := range m.slots {
		ok, why := m.gpuHealth(i)
		out[i] = GPU{Device: s.dev, Healthy: ok, Health: why, Workload: s.holder, Next: s.next,
			Quarantine: s.quarantine, Cordoned: cmp.Or(s.cordon, m.node), Use: s.use}
		if e := m.work[s.holder]; e != nil {
			out[i].Kind, out[i].Tenant = e.w.Spec.Kind, e.w.Spec.Tenant
		}
	}
	return out
}

// gpuHealth says whether the GPU of slot i is fit for new work, health
// wise, and why not. The caller holds m.mu.
func (m *Manager) gpuHealth(i int) (bool, string) {
	sl := m.slots[i]
	if sl.hung != "" {
		return false, sl.hung
	}
	h, err := m.gpus.Health(sl.dev.UUID)
	if err != nil {
		return false, err.Error()
	}
	return h.Healthy, h.Reason
}

// faulted reports whether the GPU has a device-level fault, which ends
// the work on it, and what it is. The caller holds m.mu.
func (m *Manager) faulted(i int) (bool, gpu.Health) {
	h, err := m.gpus.Health(m.slots[i].dev.UUID)
	return err == nil && !h.Healthy && !h.Unknown, h
}

// Release returns a quarantined GPU to service, after an operator cleared
// whatever a handover found on it.
func (m *Manager) Release(uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, err := m.slotOf(uuid)
	if err != nil {
		return err
	}
	m.slots[i].quarantine = ""
	m.poke()
	return nil
}

func (m *Manager) slotOf(uuid string) (int, error) {
	i, ok := m.byUUID[uuid]
	if !ok {
		return 0, errorf(ErrNotFound, "GPU %q is not on this node: list them with GPUs", uuid)
	}
	return i, nil
}

// Watch returns the events with a sequence number above after: first
// those already recorded (from the store's event log when it keeps one,
// so a watcher resumes across restarts), then new ones as they happen. The
// channel closes when ctx ends, when Run returns (nothing more happens
// after), or when the Manager closes. A watcher that falls more than the
// event retention behind sees a gap in Seq.
func (m *Manager) Watch(ctx context.Context, after uint64) <-chan Event {
	ch := make(chan Event, 64)
	go m.watch(ctx, after, ch) // ends with ctx, Run or Close
	return ch
}

func (m *Manager) watch(ctx context.Context, last uint64, ch chan<- Event) {
	defer close(ch)
	send := func(evs []Event) bool {
		for _, ev := range evs {
			select {
			case ch <- ev:
				last = ev.Seq
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	es, keeps := m.store.(EventStore)
	read := -1 // m.evictions when the store was last read to its end
	for {
		m.mu.Lock()
		i := sort.Search(len(m.events), func(i int) bool { return m.events[i].Seq > last })
		missed := len(m.events) == 0 || m.events[0].Seq > last+1
		batch := make([]Event, len(m.events)-i)
		for j, ev := range m.events[i:] {
			batch[j] = ev.clone()
		}
		notify, life, evictions := m.notify, m.life, m.evictions
		m.mu.Unlock()
		// What memory no longer (or never) held is in the store's log.
		if keeps && missed && read != evictions {
			sctx, cancel := context.WithTimeout(ctx, m.o.storeTimeout)
			evs, err := es.Events(sctx, last, watchPage)
			cancel()
			if err != nil {
				m.log.Warn("watch: reading the event log failed; going on with the events in memory", "err", err)
			}
			if err != nil || len(evs) < watchPage {
				read = evictions
			}
			if !send(evs) {
				return
			}
			continue
		}
		if !send(batch) {
			return
		}
		if len(batch) == 0 && (life == stopped || life == closed) {
			return
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return
		}
	}
}

// watchPage is how many stored events a watcher reads at a time.
const watchPage = 512

// remember keeps an event for the watchers and wakes them. The caller
// holds m.mu.
func (m *Manager) remember(ev Event) {
	if len(m.events) >= m.o.eventLog {
		m.events = slices.Delete(m.events, 0, len(m.events)-m.o.eventLog+1)
		m.evictions++
	}
	m.events = append(m.events, ev)
	close(m.notify)
	m.notify = make(chan struct{})
	m.log.Debug("workload event", "seq", ev.Seq, "type", string(ev.Type), "id", ev.ID, "gpus", ev.GPUs, "reason", ev.Reason)
}

// poke wakes Run.
func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// released wakes launches waiting for GPUs. The caller holds m.mu.
func (m *Manager) released() {
	close(m.changed)
	m.changed = make(chan struct{})
	m.poke()
}

// setLoad tells the LoadFunc. The caller holds m.mu.
func (m *Manager) setLoad(uuid string, util float64, pids []int) {
	if m.o.load != nil {
		m.o.load(uuid, util, pids)
	}
}

func joinOr(ss []string, none string) string {
	if len(ss) == 0 {
		return none
	}
	out := ss[0]
	for _, s := range ss[1:] {
		out += ", " + s
	}
	return out
}
