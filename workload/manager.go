package workload

import (
	"context"
	"errors"
	"fmt"
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
type Manager struct {
	gpus  *gpu.Manager
	rt    isolation.Runtime
	store Store
	log   *slog.Logger
	clock gpu.Clock
	o     options

	mu      sync.Mutex
	work    map[string]*entry
	slots   []*slot
	byUUID  map[string]int
	seq     uint64
	events  []Event // the last o.eventLog events
	notify  chan struct{}
	changed chan struct{} // closed and replaced when a GPU is released
	budgetW float64
	closed  bool
	running bool
	ran     bool
	done    chan struct{} // closed when Run returns
	minerN  int

	drawW      float64 // total GPU draw at the last measurement
	curtailing bool
	curtailMu  sync.Mutex // one curtailment at a time
	curtailReq chan curtailReq

	cands   []candidate // scratch for decide
	healthy []bool      // scratch: health by slot, per scheduling pass

	kick   chan struct{}
	closeO sync.Once
}

// entry is a workload's record plus what the manager tracks while it lives.
type entry struct {
	w           Workload
	cancel      bool      // Cancel was asked
	failReason  string    // set when the manager stops it because it cannot go on
	preemptedBy string    // who takes its GPUs
	stopping    bool      // a stop is under way
	scheduledAt time.Time // when its GPUs were reserved
	victims     []string
	pids        []int
	models      []string      // normalised GPURequest.Models
	abort       chan struct{} // closed to abandon a launch
	releasedAt  time.Time     // when the last earlier holder freed a GPU of its launch
	launched    chan struct{} // closed when its launch ends, started or not
}

// slot is one GPU as the scheduler sees it.
type slot struct {
	dev gpu.Device
	// holder is the workload whose container is on the GPU (starting,
	// running or stopping); next is the one that has reserved it.
	holder, next string
	// quarantine, when set, keeps the GPU out of use until
	// Manager.Release: a handover found a process left on it.
	quarantine string
	model      string   // normalised model name, for GPURequest.Models
	link       gpu.Link // usable link, for GPURequest.MinLink
	lowered    bool     // the power cap lowered its limit
	lastW      float64  // measured draw, or the draw booked for work just placed
}

// New makes a Manager over the node's GPUs and a container runtime. It
// takes ownership of neither: close them after the Manager.
func New(gpus *gpu.Manager, rt isolation.Runtime, opts ...Option) (*Manager, error) {
	var errs []error
	if gpus == nil {
		errs = append(errs, fmt.Errorf("%w: nil gpu.Manager", ErrInvalid))
	}
	if rt == nil {
		errs = append(errs, fmt.Errorf("%w: nil isolation.Runtime", ErrInvalid))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.store == nil {
		o.store = NewMemoryStore()
	}
	if o.policy == nil {
		o.policy = AlwaysRent()
	}
	m := &Manager{
		gpus: gpus, rt: rt, store: o.store, log: o.log, clock: o.clock, o: o,
		work:       map[string]*entry{},
		byUUID:     map[string]int{},
		notify:     make(chan struct{}),
		changed:    make(chan struct{}),
		budgetW:    o.budgetW,
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		curtailReq: make(chan curtailReq),
	}
	// Sequence numbers start at the clock in microseconds, so that a
	// restarted manager never repeats one a watcher has seen.
	if now := m.clock.Now().UnixMicro(); now > 0 {
		m.seq = uint64(now)
	}
	for i, d := range gpus.Devices() {
		m.slots = append(m.slots, &slot{dev: d, model: normModel(d.Name), link: usableLink(d)})
		m.byUUID[d.UUID] = i
	}
	return m, nil
}

// Close closes the store. Containers keep running; a new Manager re-adopts
// them. Stop Run first by cancelling its context and waiting for it: Close
// refuses while Run runs. Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	running := m.running
	m.mu.Unlock()
	if running {
		return fmt.Errorf("%w: Run is still running: cancel its context and wait for it before Close", ErrInvalid)
	}
	var err error
	m.closeO.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		err = m.store.Close()
	})
	return err
}

// Submit validates spec and queues it. It fails at once with ErrInvalid
// (every problem named), ErrExists for a known ID, and ErrUnplaceable when
// no GPU of this node could ever meet the request.
func (m *Manager) Submit(ctx context.Context, spec Spec) (Workload, error) {
	if err := spec.Validate(); err != nil {
		return Workload{}, err
	}
	if err := m.placeable(spec); err != nil {
		return Workload{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Workload{}, ErrClosed
	}
	if _, ok := m.work[spec.ID]; ok {
		return Workload{}, fmt.Errorf("%w: workload %q: pick another ID or Cancel the old one", ErrExists, spec.ID)
	}
	e := &entry{w: Workload{Spec: spec.clone(), State: StateQueued, SubmittedAt: m.clock.Now()}}
	m.work[spec.ID] = e
	if err := m.persistEmit(ctx, e, Event{Type: EventQueued}); err != nil {
		delete(m.work, spec.ID)
		return Workload{}, err
	}
	m.poke()
	return e.w.clone(), nil
}

// Cancel stops a workload for good: a queued one leaves the queue, a
// running one is stopped with its grace (a training job can checkpoint).
func (m *Manager) Cancel(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.entry(id)
	if err != nil {
		return err
	}
	if e.w.State.Final() {
		return nil
	}
	e.cancel = true
	e.w.CancelRequested = true
	switch e.w.State {
	case StateQueued:
		e.w.State = StateCancelled
		e.w.EndedAt = m.clock.Now()
		e.w.Reason = "cancelled while queued"
		return m.persistEmit(ctx, e, Event{Type: EventCancelled, Reason: e.w.Reason})
	case StateScheduled:
		if e.abort != nil {
			close(e.abort)
			e.abort = nil
		}
	}
	// Durable before Cancel returns: a restart must not let it run on.
	if err := m.store.Put(ctx, e.w.clone()); err != nil {
		return fmt.Errorf("store cancellation of %q: %w", id, err)
	}
	m.poke()
	return nil
}

// entry finds a workload by ID. The caller holds m.mu.
func (m *Manager) entry(id string) (*entry, error) {
	e, ok := m.work[id]
	if !ok {
		return nil, fmt.Errorf("%w: workload %q", ErrNotFound, id)
	}
	return e, nil
}

// Forget removes the record of a finished workload, from memory and from
// the store, so that its ID can be used again. The events stay with the
// watchers. A workload that has not finished cannot be forgotten.
func (m *Manager) Forget(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.entry(id)
	if err != nil {
		return err
	}
	if !e.w.State.Final() {
		return fmt.Errorf("%w: workload %q is %s: Cancel it and wait until it has ended", ErrInvalid, id, e.w.State)
	}
	if err := m.store.Delete(ctx, id); err != nil {
		return fmt.Errorf("forget workload %q: %w", id, err)
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

// GPU is one GPU as the workload manager sees it.
type GPU struct {
	Device gpu.Device
	// Healthy is false once the GPU reported a fatal fault.
	Healthy bool
	// Workload holds the GPU (starting, running or stopping), of Kind and
	// Tenant; Next has reserved it. Both are empty when the GPU is idle.
	Workload, Next string
	Kind           Kind
	Tenant         string
	// Quarantine says why the GPU is out of use, when it is.
	Quarantine string
}

// GPUs returns every GPU with what holds it.
func (m *Manager) GPUs() []GPU {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]GPU, len(m.slots))
	for i, s := range m.slots {
		h, err := m.gpus.Health(s.dev.UUID)
		out[i] = GPU{Device: s.dev, Healthy: err == nil && h.Healthy, Workload: s.holder, Next: s.next, Quarantine: s.quarantine}
		if e := m.work[s.holder]; e != nil {
			out[i].Kind, out[i].Tenant = e.w.Spec.Kind, e.w.Spec.Tenant
		}
	}
	return out
}

// Release returns a quarantined GPU to service, after an operator cleared
// whatever a handover found on it.
func (m *Manager) Release(uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.byUUID[uuid]
	if !ok {
		return fmt.Errorf("%w: GPU %q", ErrNotFound, uuid)
	}
	m.slots[i].quarantine = ""
	m.poke()
	return nil
}

// ReportProgress records what a running workload says of itself and
// tells the watchers. Adapters that parse training logs call it.
func (m *Manager) ReportProgress(ctx context.Context, id string, p Progress) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.entry(id)
	if err != nil {
		return err
	}
	m.emit(e, Event{Type: EventProgress, Progress: &p})
	return nil
}

// Watch returns the events with a sequence number above after, first those
// still remembered, then new ones as they happen, until ctx ends. A watcher
// that falls more than the event log behind sees a gap in Seq.
func (m *Manager) Watch(ctx context.Context, after uint64) <-chan Event {
	ch := make(chan Event, 64)
	go func() {
		defer close(ch)
		last := after
		for {
			m.mu.Lock()
			// The log is in Seq order: start after the last one sent.
			i := sort.Search(len(m.events), func(i int) bool { return m.events[i].Seq > last })
			batch := slices.Clone(m.events[i:])
			notify := m.notify
			m.mu.Unlock()
			for _, ev := range batch {
				select {
				case ch <- ev:
					last = ev.Seq
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-notify:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// emit stamps an event for e, remembers it and wakes the watchers. The
// caller holds m.mu.
func (m *Manager) emit(e *entry, ev Event) Event {
	m.seq++
	ev.Seq = m.seq
	ev.ID = e.w.Spec.ID
	ev.Kind = e.w.Spec.Kind
	ev.Tenant = e.w.Spec.Tenant
	if ev.Time.IsZero() {
		ev.Time = m.clock.Now()
	}
	if ev.GPUs == nil {
		ev.GPUs = slices.Clone(e.w.GPUs)
	}
	if ev.Type != EventProgress {
		e.w.Seq = ev.Seq
	}
	if len(m.events) >= m.o.eventLog {
		m.events = slices.Delete(m.events, 0, len(m.events)-m.o.eventLog+1)
	}
	m.events = append(m.events, ev)
	close(m.notify)
	m.notify = make(chan struct{})
	m.log.Debug("workload event", "seq", ev.Seq, "type", string(ev.Type), "id", ev.ID, "gpus", ev.GPUs, "reason", ev.Reason)
	return ev
}

// persistEmit emits ev and stores the record. The caller holds m.mu.
func (m *Manager) persistEmit(ctx context.Context, e *entry, ev Event) error {
	m.emit(e, ev)
	if err := m.store.Put(context.WithoutCancel(ctx), e.w.clone()); err != nil {
		m.log.Error("workload store write failed; the record is only in memory", "id", e.w.Spec.ID, "err", err)
		return fmt.Errorf("store workload %q: %w", e.w.Spec.ID, err)
	}
	return nil
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
