package workload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// Run re-adopts what the runtime still runs, then schedules until ctx ends.
// Every goroutine the manager starts belongs to Run and has ended when Run
// returns. Containers keep running after Run returns; a new Manager over
// the same store and runtime adopts them. Run runs once per Manager.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.ran {
		m.mu.Unlock()
		return fmt.Errorf("%w: Run runs once per Manager; make a new Manager to run again", ErrInvalid)
	}
	m.ran, m.running = true, true
	m.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
		close(m.done)
	}()
	r := &runner{m: m, wg: &wg}
	if err := r.reconcile(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	health := m.gpus.Watch(ctx)
	tick := time.NewTicker(m.o.tick)
	defer tick.Stop()
	for {
		r.schedule(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.kick:
		case ev, ok := <-health:
			if !ok {
				health = nil
				continue
			}
			if ev.Fatal {
				r.gpuFailed(ctx, ev)
			}
		case req := <-m.curtailReq:
			r.spawn(ctx, func(ctx context.Context) { r.curtail(ctx, req) })
		case <-tick.C:
			r.tick(ctx)
		}
	}
}

// runner is one Run: it owns the goroutines Run starts.
type runner struct {
	m  *Manager
	wg *sync.WaitGroup
}

// spawn starts a goroutine owned by Run.
func (r *runner) spawn(ctx context.Context, fn func(ctx context.Context)) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn(ctx)
	}()
}

// health reads every GPU's health once per pass. The caller holds m.mu.
func (m *Manager) health() []bool {
	if m.healthy == nil {
		m.healthy = make([]bool, len(m.slots))
	}
	for i, sl := range m.slots {
		h, err := m.gpus.Health(sl.dev.UUID)
		m.healthy[i] = err == nil && h.Healthy
	}
	return m.healthy
}

// schedule places queued work, starts the stops that were asked for and
// fills idle GPUs with miners.
func (r *runner) schedule(ctx context.Context) {
	m := r.m
	m.mu.Lock()
	var queued []*entry
	for _, e := range m.work {
		switch {
		case e.w.State == StateQueued && !e.cancel:
			queued = append(queued, e)
		case e.w.State == StateRunning && (e.cancel || e.failReason != "") && !e.stopping:
			r.stop(ctx, e, "")
		case e.w.State == StatePreempting && !e.stopping:
			r.stop(ctx, e, "") // an earlier stop failed: try again
		}
	}
	sort.Slice(queued, func(i, j int) bool {
		a, b := queued[i].w, queued[j].w
		if pa, pb := a.Spec.Kind.Paid(), b.Spec.Kind.Paid(); pa != pb {
			return pa
		}
		if a.Spec.Priority != b.Spec.Priority {
			return a.Spec.Priority > b.Spec.Priority
		}
		if !a.SubmittedAt.Equal(b.SubmittedAt) {
			return a.SubmittedAt.Before(b.SubmittedAt)
		}
		return a.Spec.ID < b.Spec.ID
	})
	healthy := m.health()
	m.placeQueued(queued, healthy, func(e *entry, chosen []candidate) { r.place(ctx, e, chosen) })
	idle := m.idleSlots(healthy)
	m.mu.Unlock()
	if m.o.filler != nil && len(idle) > 0 {
		r.fill(ctx, idle)
	}
}

// anyAvailable reports whether some GPU is free, mining or held by
// preemptible work: without one no placement can succeed, and the queue
// need not be walked. The caller holds m.mu.
func (m *Manager) anyAvailable(healthy []bool) bool {
	for i, sl := range m.slots {
		if sl.next != "" || sl.quarantine != "" {
			continue
		}
		if sl.holder == "" && healthy[i] {
			return true
		}
		if h := m.work[sl.holder]; h != nil && !h.stopping && h.w.State == StateRunning &&
			(h.w.Spec.Kind == KindMining || h.w.Spec.Preemptible) {
			return true
		}
	}
	return false
}

// shape is what a decision depends on besides the node: specs of the same
// shape get the same answer within one pass.
type shape struct {
	paid         bool
	priority     int
	price        float64
	count        int
	memory       uint64
	cc           gpu.ComputeCapability
	link         gpu.Link
	models, pins string
}

func shapeOf(s Spec) shape {
	return shape{
		paid: s.Kind.Paid(), priority: s.Priority, price: s.PricePerGPUHour, count: s.GPUs.count(),
		memory: s.GPUs.MinMemoryBytes, cc: s.GPUs.MinComputeCapability, link: s.GPUs.MinLink,
		models: strings.Join(s.GPUs.Models, "\x00"), pins: strings.Join(s.GPUs.UUIDs, "\x00"),
	}
}

// placeQueued walks the queue in order and places each spec that can have
// GPUs now. A long queue costs little: once a shape of request is refused,
// the specs of the same shape behind it are skipped, and nothing is tried
// while no GPU is free or mining. The caller holds m.mu.
func (m *Manager) placeQueued(queued []*entry, healthy []bool, place func(*entry, []candidate)) {
	refused := map[shape]bool{}
	avail := m.anyAvailable(healthy)
	for _, e := range queued {
		if !avail {
			return
		}
		k := shapeOf(e.w.Spec)
		if refused[k] {
			continue
		}
		chosen := m.decide(e, healthy)
		if chosen == nil {
			refused[k] = true
			continue
		}
		place(e, chosen)
		avail = m.anyAvailable(healthy)
	}
}

// decide is the allocation decision: the GPUs e would take now, by best fit,
// the economic policy and the power budget, or nil. The caller holds m.mu.
func (m *Manager) decide(e *entry, healthy []bool) []candidate {
	n := e.w.Spec.GPUs.count()
	cands := m.candidates(e, healthy, m.cands)
	m.cands = cands[:0]
	chosen := m.choose(cands, n)
	if chosen == nil {
		return nil
	}
	var mining []gpu.Device
	for _, c := range chosen {
		if c.class == classMining {
			mining = append(mining, m.slots[c.slot].dev)
		}
	}
	if len(mining) > 0 {
		if ok, why := m.o.policy.Displace(e.w.Spec, mining); !ok {
			if e.w.Reason != why {
				e.w.Reason = why
				m.log.Info("workload waits for idle GPUs: mining pays more", "id", e.w.Spec.ID, "why", why)
			}
			cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.class == classMining })
			if chosen = m.choose(cands, n); chosen == nil {
				return nil
			}
		}
	}
	if !m.admit(chosen) {
		return nil
	}
	return chosen
}

// place reserves the chosen GPUs for e, preempts their holders and starts
// the launch. The caller holds m.mu.
func (r *runner) place(ctx context.Context, e *entry, chosen []candidate) {
	m := r.m
	e.w.State = StateScheduled
	e.w.GPUs = e.w.GPUs[:0]
	e.w.Reason = ""
	e.victims = nil
	e.scheduledAt = time.Now()
	e.releasedAt = e.scheduledAt
	e.abort = make(chan struct{})
	e.launched = make(chan struct{})
	victims := map[string]*entry{}
	for _, c := range chosen {
		sl := m.slots[c.slot]
		sl.next = e.w.Spec.ID
		e.w.GPUs = append(e.w.GPUs, sl.dev.UUID)
		if c.holder != nil {
			victims[c.holder.w.Spec.ID] = c.holder
		}
	}
	for id, v := range victims {
		e.victims = append(e.victims, id)
		r.preempt(ctx, v, e.w.Spec.ID)
	}
	sort.Strings(e.victims)
	reason := ""
	if len(e.victims) > 0 {
		reason = "taking GPUs from " + strings.Join(e.victims, ", ")
	}
	_ = m.persistEmit(ctx, e, Event{Type: EventScheduled, Reason: reason})
	abort, launched := e.abort, e.launched
	r.spawn(ctx, func(ctx context.Context) { r.launch(ctx, e, abort, launched) })
}

// preempt asks a running workload to yield. The caller holds m.mu.
func (r *runner) preempt(ctx context.Context, v *entry, by string) {
	v.preemptedBy = by
	r.stop(ctx, v, "preempted by "+by)
}

// stop starts stopping a running workload with its signal and grace. The
// caller holds m.mu.
func (r *runner) stop(ctx context.Context, e *entry, reason string) {
	if e.stopping {
		return
	}
	e.stopping = true
	if reason != "" {
		e.w.State = StatePreempting
		e.w.Reason = reason
		_ = r.m.persistEmit(ctx, e, Event{Type: EventPreempting, Reason: reason})
	}
	ref := e.w.Container
	r.spawn(ctx, func(ctx context.Context) {
		if _, err := r.m.rt.Stop(ctx, ref); err != nil && ctx.Err() == nil {
			// The scheduling pass of the next tick tries again.
			r.m.log.Warn("stop workload failed; retrying", "id", e.w.Spec.ID, "container", ref.String(), "err", err)
			r.m.mu.Lock()
			e.stopping = false
			r.m.mu.Unlock()
		}
	})
}

// idleSlots lists the GPUs a miner may fill. The caller holds m.mu.
func (m *Manager) idleSlots(healthy []bool) []int {
	var idle []int
	for i, sl := range m.slots {
		if sl.holder == "" && sl.next == "" && sl.quarantine == "" && healthy[i] {
			idle = append(idle, i)
		}
	}
	return idle
}

// fill asks the filler for a miner for each idle GPU and places it. The
// filler runs without the lock: it is the user's code.
func (r *runner) fill(ctx context.Context, idle []int) {
	m := r.m
	for _, i := range idle {
		dev := m.slots[i].dev
		spec, ok := m.o.filler.Fill(ctx, dev)
		if !ok {
			continue
		}
		m.mu.Lock()
		sl := m.slots[i]
		if sl.holder != "" || sl.next != "" || sl.quarantine != "" || m.closed {
			m.mu.Unlock()
			continue
		}
		for spec.ID == "" || m.work[spec.ID] != nil {
			m.minerN++
			spec.ID = fmt.Sprintf("mine-gpu%d-%d", i, m.seq+uint64(m.minerN))
		}
		spec.Kind = KindMining
		spec.Preemptible = true
		spec.GPUs = GPURequest{UUIDs: []string{dev.UUID}}
		if err := spec.Validate(); err != nil {
			m.mu.Unlock()
			m.log.Error("filler returned an invalid miner spec; GPU left idle", "gpu", i, "err", err)
			continue
		}
		if !m.admit([]candidate{{slot: i}}) {
			m.mu.Unlock()
			continue
		}
		e := &entry{w: Workload{Spec: spec.clone(), State: StateQueued, SubmittedAt: m.clock.Now()}}
		m.work[spec.ID] = e
		_ = m.persistEmit(ctx, e, Event{Type: EventQueued})
		r.place(ctx, e, []candidate{{slot: i, class: classFree}})
		m.mu.Unlock()
	}
}

// launch prepares e's container while the GPUs' holders drain, then hands
// the GPUs over and starts it.
func (r *runner) launch(ctx context.Context, e *entry, abort, launched chan struct{}) {
	m := r.m
	defer close(launched)
	m.mu.Lock()
	t0 := e.scheduledAt
	e.w.Attempt++
	e.w.Container = isolation.Ref{Tenant: e.w.Spec.Tenant, ID: fmt.Sprintf("%s-%d", e.w.Spec.ID, e.w.Attempt)}
	cspec := m.containerSpec(e)
	_ = m.store.Put(ctx, e.w.clone())
	m.mu.Unlock()

	// Prepare while the miners drain: only the start is left for after.
	if _, err := m.rt.Create(ctx, cspec); err != nil {
		r.abandon(ctx, e, StateFailed, "create container: "+err.Error(), false)
		return
	}
	if p, ok := m.rt.(isolation.Preparer); ok {
		if err := p.Prepare(ctx, e.w.Container); err != nil {
			r.abandon(ctx, e, StateFailed, "prepare container: "+err.Error(), true)
			return
		}
	}
	prepare := time.Since(t0)
	if !r.drained(ctx, e, abort) {
		r.abandonCreated(ctx, e, "handover abandoned")
		return
	}
	m.mu.Lock()
	drain := e.releasedAt.Sub(t0)
	m.mu.Unlock()
	h0 := time.Now()
	if err := r.hygiene(ctx, e); err != nil {
		m.log.Error("handover refused: GPU not clean; it is quarantined and the workload requeued", "id", e.w.Spec.ID, "err", err)
		r.abandonCreated(ctx, e, "handover refused: "+err.Error())
		return
	}
	hygiene := time.Since(h0)
	select {
	case <-abort: // cancelled, or a GPU failed, during the handover
		r.abandonCreated(ctx, e, "handover abandoned")
		return
	default:
	}
	if err := m.rt.Start(ctx, e.w.Container); err != nil {
		r.abandon(ctx, e, StateFailed, "start container: "+err.Error(), true)
		return
	}
	var pids []int
	if info, err := m.rt.Inspect(ctx, e.w.Container); err == nil && info.PID > 0 {
		pids = []int{info.PID}
	}
	m.mu.Lock()
	e.w.State = StateRunning
	e.w.StartedAt = m.clock.Now()
	e.w.Exit = nil
	e.pids = pids
	e.abort = nil
	ev := Event{Type: EventStarted}
	if len(e.victims) > 0 {
		ev.Handover = &Handover{From: slices.Clone(e.victims), Drain: drain, Prepare: prepare, Hygiene: hygiene, Total: time.Since(t0)}
	}
	_ = m.persistEmit(ctx, e, ev)
	load := e.w.Spec.load()
	for _, u := range e.w.GPUs {
		m.setLoad(u, load, pids)
	}
	m.mu.Unlock()
	r.spawn(ctx, func(ctx context.Context) { r.await(ctx, e) })
}

// drained waits until every GPU of e is free of other holders, then makes
// e their holder. It returns false when the launch is abandoned.
func (r *runner) drained(ctx context.Context, e *entry, abort chan struct{}) bool {
	m := r.m
	for {
		m.mu.Lock()
		free := true
		for _, u := range e.w.GPUs {
			if h := m.slots[m.byUUID[u]].holder; h != "" && h != e.w.Spec.ID {
				free = false
			}
		}
		if free {
			for _, u := range e.w.GPUs {
				sl := m.slots[m.byUUID[u]]
				sl.holder, sl.next = e.w.Spec.ID, ""
			}
		}
		changed := m.changed
		m.mu.Unlock()
		if free {
			return true
		}
		select {
		case <-changed:
		case <-abort:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// hygiene makes sure no process is left on e's GPUs and that they run at
// their default power limit and clocks, so nothing of the last tenant, a
// miner's tuning included, reaches the next.
func (r *runner) hygiene(ctx context.Context, e *entry) error {
	// The GPUs are checked at once: a lingering process on one must not
	// hold up the others' checks.
	var g multierror.Group
	for _, u := range e.w.GPUs {
		g.Go(func() error { return r.m.cleanGPU(ctx, u) })
	}
	return g.Wait().ErrorOrNil()
}

// cleanGPU waits until no compute process is left on the GPU, then
// restores its defaults; on failure it quarantines the GPU.
func (m *Manager) cleanGPU(ctx context.Context, u string) error {
	deadline := time.Now().Add(m.o.hygieneTimeout)
	for {
		procs, err := m.gpus.Processes(ctx, u)
		if errors.Is(err, gpu.ErrUnsupported) || (err == nil && len(procs) == 0) {
			break
		}
		if err == nil && time.Now().After(deadline) {
			pids := make([]string, len(procs))
			for i, p := range procs {
				pids[i] = fmt.Sprint(p.PID)
			}
			reason := fmt.Sprintf("process %s still on the GPU %v after its workload ended", strings.Join(pids, ","), m.o.hygieneTimeout)
			m.quarantine(u, reason)
			return fmt.Errorf("GPU %s: %s", u, reason)
		}
		if err != nil && !errors.Is(err, gpu.ErrBusy) {
			m.quarantine(u, "cannot list its processes: "+err.Error())
			return fmt.Errorf("GPU %s: list processes: %w", u, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(m.o.hygienePoll):
		}
	}
	if err := m.gpus.RestoreDefaults(ctx, u); err != nil {
		m.quarantine(u, "cannot restore its default power limit and clocks: "+err.Error())
		return fmt.Errorf("GPU %s: restore defaults: %w", u, err)
	}
	m.mu.Lock()
	m.slots[m.byUUID[u]].lowered = false
	m.mu.Unlock()
	return nil
}

func (m *Manager) quarantine(uuid, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slots[m.byUUID[uuid]].quarantine = reason
}

// abandonCreated deletes a prepared container and requeues e, or ends it if
// it was cancelled or its GPU failed.
func (r *runner) abandonCreated(ctx context.Context, e *entry, why string) {
	r.m.mu.Lock()
	cancelled, failed := e.cancel, e.failReason
	r.m.mu.Unlock()
	switch {
	case cancelled:
		r.abandon(ctx, e, StateCancelled, "cancelled before it started", true)
	case failed != "":
		r.abandon(ctx, e, StateFailed, failed, true)
	default:
		r.abandon(ctx, e, StateQueued, why+"; requeued", true)
	}
}

// abandon ends a launch: it releases e's GPUs and records the outcome.
func (r *runner) abandon(ctx context.Context, e *entry, state State, reason string, created bool) {
	m := r.m
	if created {
		ref := e.w.Container
		if err := m.rt.Delete(context.WithoutCancel(ctx), ref); err != nil {
			m.log.Warn("delete abandoned container", "container", ref.String(), "err", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sl := range m.slots {
		if sl.next == e.w.Spec.ID {
			sl.next = ""
		}
		if sl.holder == e.w.Spec.ID {
			sl.holder = ""
		}
	}
	e.abort = nil
	e.w.State = state
	e.w.Reason = reason
	ev := Event{Type: EventFailed, Reason: reason}
	switch state {
	case StateQueued:
		ev.Type = EventQueued
		e.w.GPUs = nil
	case StateCancelled:
		ev.Type = EventCancelled
	}
	if state.Final() {
		e.w.EndedAt = m.clock.Now()
	}
	_ = m.persistEmit(ctx, e, ev)
	m.released()
}

// await waits for e's container to end and records how.
func (r *runner) await(ctx context.Context, e *entry) {
	st, err := r.m.rt.Wait(ctx, e.w.Container)
	if ctx.Err() != nil {
		return // Run is ending; the next Run adopts the container
	}
	r.exited(ctx, e, st, err)
}

// exited records the end of e's container and frees its GPUs.
func (r *runner) exited(ctx context.Context, e *entry, st isolation.ExitStatus, err error) {
	m := r.m
	m.mu.Lock()
	now0 := time.Now()
	for _, sl := range m.slots {
		if sl.holder == e.w.Spec.ID {
			sl.holder = ""
			m.setLoad(sl.dev.UUID, 0, nil)
			if next := m.work[sl.next]; next != nil {
				next.releasedAt = now0
			}
		}
	}
	// The workload that displaced e starts first; e's container is
	// deleted after, off the handover's critical path.
	var after chan struct{}
	if by := m.work[e.preemptedBy]; by != nil {
		after = by.launched
	}
	e.stopping = false
	e.pids = nil
	now := m.clock.Now()
	if err == nil {
		e.w.Exit = &st
	}
	var ev Event
	switch {
	case e.cancel:
		e.w.State, e.w.Reason = StateCancelled, "cancelled"
		ev = Event{Type: EventCancelled, Reason: e.w.Reason, Exit: e.w.Exit}
	case e.failReason != "":
		e.w.State, e.w.Reason = StateFailed, e.failReason
		ev = Event{Type: EventFailed, Reason: e.w.Reason, Exit: e.w.Exit}
	case e.preemptedBy != "" && e.w.Spec.Kind.Paid():
		// Back to the queue; the next container resumes from the
		// checkpoint the grace let it write.
		e.w.State = StateQueued
		e.w.Preemptions++
		ev = Event{Type: EventPreempted, Reason: e.w.Reason, Exit: e.w.Exit}
	case e.preemptedBy != "":
		e.w.State = StateExited
		ev = Event{Type: EventPreempted, Reason: e.w.Reason, Exit: e.w.Exit}
	case err != nil:
		e.w.State, e.w.Reason = StateFailed, "wait for container: "+err.Error()
		ev = Event{Type: EventFailed, Reason: e.w.Reason}
	default:
		e.w.State = StateExited
		e.w.Reason = string(st.Reason)
		ev = Event{Type: EventExited, Reason: e.w.Reason, Exit: e.w.Exit}
	}
	e.preemptedBy = ""
	if e.w.State.Final() {
		e.w.EndedAt = now
	}
	ev.GPUs = slices.Clone(e.w.GPUs)
	if e.w.State == StateQueued {
		e.w.GPUs = nil // a requeued workload holds nothing
	}
	_ = m.persistEmit(ctx, e, ev)
	if e.w.Spec.Kind == KindMining && e.w.State.Final() {
		// Miners come and go with every handover; their records would
		// pile up. The events tell what they did.
		delete(m.work, e.w.Spec.ID)
		_ = m.store.Delete(context.WithoutCancel(ctx), e.w.Spec.ID)
	}
	ref := e.w.Container
	m.released()
	m.mu.Unlock()
	r.spawn(ctx, func(ctx context.Context) {
		if after != nil {
			select {
			case <-after:
			case <-ctx.Done():
			}
		}
		if err := m.rt.Delete(context.WithoutCancel(ctx), ref); err != nil && !errors.Is(err, isolation.ErrNotFound) {
			m.log.Warn("delete ended container", "container", ref.String(), "err", err)
		}
	})
}

// gpuFailed fails the workload on a GPU that turned unhealthy; the others
// run on.
func (r *runner) gpuFailed(ctx context.Context, ev gpu.Event) {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.byUUID[ev.UUID]
	if !ok {
		return
	}
	h, _ := m.gpus.Health(ev.UUID)
	reason := fmt.Sprintf("GPU %d (%s) failed: %s", i, ev.UUID, h.Reason)
	sl := m.slots[i]
	if e := m.work[sl.holder]; e != nil && (e.w.State == StateRunning || e.w.State == StatePreempting) {
		e.failReason = reason
		m.log.Error("workload lost its GPU", "id", e.w.Spec.ID, "reason", reason)
		r.stop(ctx, e, "")
	}
	// Queued work pinned to the GPU can no longer run as asked.
	for _, e := range m.work {
		if e.w.State == StateQueued && slices.Contains(e.w.Spec.GPUs.UUIDs, ev.UUID) {
			e.w.State, e.w.Reason, e.w.EndedAt = StateFailed, "pinned to "+reason, m.clock.Now()
			_ = m.persistEmit(ctx, e, Event{Type: EventFailed, Reason: e.w.Reason})
		}
	}
	for _, id := range []string{sl.next, sl.holder} {
		if e := m.work[id]; e != nil && e.w.State == StateScheduled && e.abort != nil {
			// Not started yet: a job pinned to this GPU fails, one that
			// asked for a count goes back to the queue for other GPUs.
			if len(e.w.Spec.GPUs.UUIDs) > 0 {
				e.failReason = reason
			}
			close(e.abort)
			e.abort = nil
		}
	}
	m.poke()
}

// containerSpec turns a workload into a container. The caller holds m.mu.
func (m *Manager) containerSpec(e *entry) isolation.Spec {
	var gpus []isolation.GPU
	for _, u := range e.w.GPUs {
		gpus = append(gpus, isolation.GPUFor(m.slots[m.byUUID[u]].dev))
	}
	return e.w.Spec.containerSpec(e.w.Container.ID, gpus)
}

// setLoad tells the LoadFunc. The caller holds m.mu.
func (m *Manager) setLoad(uuid string, util float64, pids []int) {
	if m.o.load != nil {
		m.o.load(uuid, util, pids)
	}
}
