package workload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// The launch path: from the scheduling decision to a running container.
// The container is created and prepared while the GPUs' earlier holders
// drain; then the GPUs are checked and reset (hygiene) and the container
// starts. Every runtime and GPU call has a deadline. A failure that may
// pass (the runtime unavailable, a deadline, Run stopping) puts paid work
// back in the queue with backoff; only a permanent one fails it.

const defaultStopGrace = isolation.DefaultStopGrace

// launch prepares e's container while the GPUs' holders drain, then hands
// the GPUs over and starts it.
func (r *runner) launch(ctx context.Context, e *entry, abort, launched chan struct{}) {
	m := r.m
	defer close(launched)
	// The attempt's container is recorded before it exists, so that a
	// restart finds it whatever happens next.
	var ref isolation.Ref
	var cspec isolation.Spec
	var gpus []string
	var t0 time.Time
	var rt isolation.Runtime // the node's, or the holds of an external workload
	err := r.commit(ctx, e, func() (change, bool) {
		ref = isolation.Ref{Tenant: e.w.Spec.Tenant, ID: fmt.Sprintf("%s-%d", e.w.Spec.ID, e.w.Attempt+1)}
		return change{to: StateScheduled, edit: func(w *Workload) { w.Attempt++; w.Container = ref }}, true
	}, func() {
		cspec, t0, gpus, rt = m.containerSpec(e), e.scheduledAt, slices.Clone(e.w.GPUs), m.rtOf(e)
	})
	if err != nil {
		return // Run is ending: the record says scheduled, and the next Run requeues it
	}
	if m.o.attemptHook != nil {
		m.mu.Lock()
		w := e.w.clone()
		m.mu.Unlock()
		hctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
		a, err := m.o.attemptHook.PrepareAttempt(hctx, w)
		cancel()
		if err == nil {
			cspec.Args, cspec.Env, cspec.Mounts = a.Command, a.Env, a.Mounts
			err = cspec.Validate()
		}
		if err != nil {
			r.launchFailed(ctx, e, ref, "prepare attempt", err, false)
			return
		}
	}

	cctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
	_, err = rt.Create(cctx, cspec)
	cancel()
	if err != nil {
		r.launchFailed(ctx, e, ref, "create container", err, false)
		return
	}
	if p, ok := rt.(isolation.Preparer); ok {
		pctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
		err = p.Prepare(pctx, ref)
		cancel()
		if err != nil {
			r.launchFailed(ctx, e, ref, "prepare container", err, true)
			return
		}
	}
	prepare := time.Since(t0)
	if !r.drained(ctx, e, abort) {
		r.abandon(ctx, e, ref, true)
		return
	}
	m.mu.Lock()
	drain := e.releasedAt.Sub(t0)
	m.mu.Unlock()
	h0 := time.Now()
	if err := r.hygiene(ctx, gpus, abort); err != nil {
		if isClosed(abort) || ctx.Err() != nil {
			r.abandon(ctx, e, ref, true)
			return
		}
		m.log.Error("handover refused: GPU not clean; it is quarantined and the workload requeued", "id", e.id, "err", err)
		r.abandonAs(ctx, e, ref, StateQueued, "handover refused: "+err.Error()+"; requeued", true, false)
		return
	}
	hygiene := time.Since(h0)
	if isClosed(abort) { // cancelled, or a GPU failed, during the handover
		r.abandon(ctx, e, ref, true)
		return
	}
	if m.o.startHook != nil {
		m.mu.Lock()
		w := e.w.clone()
		m.mu.Unlock()
		hctx, cancel := context.WithTimeout(ctx, m.o.deviceTimeout)
		err := m.o.startHook.BeforeStart(hctx, w)
		cancel()
		if err != nil {
			r.launchFailed(ctx, e, ref, "before the start", err, true)
			return
		}
	}
	sctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
	err = rt.Start(sctx, ref)
	cancel()
	if err != nil {
		r.launchFailed(ctx, e, ref, "start container", err, true)
		return
	}
	var pids []int
	var addr netip.Addr
	ictx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
	if info, err := rt.Inspect(ictx, ref); err == nil && info.PID > 0 {
		pids, addr = []int{info.PID}, info.Address
	}
	cancel()
	ev := Event{Type: EventStarted}
	m.mu.Lock()
	if len(e.victims) > 0 {
		ev.Handover = &Handover{From: slices.Clone(e.victims), Drain: drain, Prepare: prepare, Hygiene: hygiene, Total: time.Since(t0)}
	}
	m.mu.Unlock()
	err = r.commit(ctx, e, func() (change, bool) {
		return change{to: StateRunning, edit: func(w *Workload) {
			w.StartedAt, w.Exit, w.Retries, w.Ready, w.StopAskedAt = m.clock.Now(), nil, 0, false, time.Time{}
			w.Address = addr
		}, ev: ev}, true
	}, func() {
		e.pids, e.abort, e.awaiting = pids, nil, true
		load := e.w.Spec.load()
		for _, u := range e.w.GPUs {
			m.setLoad(u, load, pids)
		}
	})
	if err != nil {
		return // Run is ending; the container runs, and the next Run adopts it
	}
	r.spawn(ctx, func(ctx context.Context) { r.await(ctx, e) })
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// commit applies the change build returns, retrying with backoff while the
// store fails, until it holds or ctx ends; then runs after, under m.mu.
// build runs under m.mu at each try and may say there is nothing left to
// do.
func (r *runner) commit(ctx context.Context, e *entry, build func() (change, bool), after func()) error {
	m := r.m
	for n := 1; ; n++ {
		m.mu.Lock()
		c, ok := build()
		var err error
		if ok {
			err = m.apply(ctx, e, c)
		}
		if ok && err == nil && after != nil {
			after()
		}
		m.mu.Unlock()
		if !ok || err == nil || !errors.Is(err, ErrStore) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff(m.o.retryBase, m.o.retryMax, n)):
		}
	}
}

// permanent reports whether a launch error will not pass by trying again:
// a bad spec, a missing image or device, a permission the runtime lacks.
// A container that vanished between create and start is not permanent.
func permanent(step string, err error) bool {
	switch {
	case errors.Is(err, isolation.ErrInvalid), errors.Is(err, isolation.ErrPermission), errors.Is(err, isolation.ErrUnsupported),
		errors.Is(err, isolation.ErrDenied), errors.Is(err, ErrInvalid):
		return true
	case errors.Is(err, isolation.ErrNotFound):
		return strings.HasPrefix(step, "create")
	}
	return false
}

// launchFailed ends a launch whose runtime call failed: for good when the
// error is permanent, back to the queue with backoff otherwise. When Run is
// stopping, what the container became is checked first: one that started
// after all is left for the next Run to adopt.
func (r *runner) launchFailed(ctx context.Context, e *entry, ref isolation.Ref, step string, err error, created bool) {
	m := r.m
	if ctx.Err() != nil {
		r.stopDuringLaunch(e, ref, created)
		return
	}
	if permanent(step, err) {
		m.log.Error("launch failed for good", "id", e.id, "step", step, "err", err)
		r.abandonAs(ctx, e, ref, StateFailed, step+": "+err.Error(), created, false)
		return
	}
	m.mu.Lock()
	wait := backoff(m.o.retryBase, m.o.retryMax, e.w.Retries+1)
	m.mu.Unlock()
	m.log.Warn("launch failed; requeued with backoff", "id", e.id, "step", step, "err", err, "retry_in", wait)
	r.abandonAs(ctx, e, ref, StateQueued, fmt.Sprintf("%s: %v; requeued, next try in %v", step, err, wait), created, true)
}

// stopDuringLaunch puts a launch that Run's end interrupted back in the
// queue, unless its container started after all (the next Run adopts it).
func (r *runner) stopDuringLaunch(e *entry, ref isolation.Ref, created bool) {
	m := r.m
	ctx, cancel := context.WithTimeout(context.Background(), m.o.storeTimeout)
	defer cancel()
	if created {
		info, err := m.rtFor(ref).Inspect(ctx, ref)
		switch {
		case err == nil && info.State == isolation.StateRunning:
			return
		case err == nil:
			if derr := m.rtFor(ref).Delete(ctx, ref); derr != nil {
				return // the next Run finds it and decides
			}
		case !errors.Is(err, isolation.ErrNotFound):
			return
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.w.State == StateScheduled {
		_ = m.apply(ctx, e, change{to: StateQueued, reason: "the manager stopped during the launch; requeued",
			edit: func(w *Workload) { w.GPUs = nil }, ev: Event{Type: EventQueued}})
	}
}

// abandon ends a launch that was abandoned (drain interrupted, Cancel, a
// GPU fault) as its abort asked: requeued, failed or cancelled.
func (r *runner) abandon(ctx context.Context, e *entry, ref isolation.Ref, created bool) {
	if ctx.Err() != nil {
		r.stopDuringLaunch(e, ref, created)
		return
	}
	r.m.mu.Lock()
	to, why := e.abortTo, e.abortWhy
	if e.w.Outcome == StateCancelled {
		to, why = StateCancelled, "cancelled before it started"
	}
	r.m.mu.Unlock()
	if to == "" {
		to, why = StateQueued, "handover abandoned"
	}
	if to == StateQueued && !strings.Contains(why, "requeued") {
		why += "; requeued"
	}
	r.abandonAs(ctx, e, ref, to, why, created, false)
}

// abandonAs deletes a launch's container when it was created and records
// the outcome; then the launch's GPUs are free again.
func (r *runner) abandonAs(ctx context.Context, e *entry, ref isolation.Ref, to State, reason string, created, retry bool) {
	m := r.m
	if created {
		r.deleteContainer(ctx, ref)
	}
	if to == StateQueued && !e.paid {
		to = StateFailed // a miner is not requeued: the filler makes a new one
	}
	_ = r.commit(ctx, e, func() (change, bool) {
		to, reason := to, reason
		switch {
		case e.w.Outcome == StateCancelled:
			to, reason = StateCancelled, "cancelled before it started"
		case to == StateQueued && e.abortTo == StateFailed:
			to, reason = StateFailed, e.abortWhy
		}
		evType := finalEvent[to]
		if to == StateQueued {
			evType = EventQueued
		}
		return change{to: to, reason: reason, edit: func(w *Workload) {
			if to == StateQueued {
				w.GPUs = nil
				if retry {
					w.Retries++
				}
			}
		}, ev: Event{Type: evType}}, e.w.State == StateScheduled
	}, func() {
		for _, sl := range m.slots {
			if sl.next == e.w.Spec.ID {
				sl.next = ""
			}
			if sl.holder == e.w.Spec.ID {
				m.release(sl)
			}
		}
		e.abort = nil
		if retry {
			e.notBefore = time.Now().Add(backoff(m.o.retryBase, m.o.retryMax, e.w.Retries))
		}
		m.dropMiner(ctx, e)
		m.released()
	})
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
				sl.next = ""
				m.take(sl, e)
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
// miner's tuning included, reaches the next. The GPUs are checked at once:
// a lingering process on one must not hold up the others' checks.
func (r *runner) hygiene(ctx context.Context, gpus []string, abort chan struct{}) error {
	m := r.m
	hctx, cancel := context.WithTimeout(ctx, m.o.hygieneTimeout)
	defer cancel()
	go func() { // ends with hctx, which the deferred cancel ends
		select {
		case <-abort:
			cancel()
		case <-hctx.Done():
		}
	}()
	var g errgroup.Group
	g.SetLimit(8)
	errs := make([]error, len(gpus))
	for k, u := range gpus {
		g.Go(func() error { errs[k] = m.cleanGPU(hctx, m.byUUID[u]); return nil })
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// cleanGPU waits until no compute process is left on the GPU of slot i,
// then restores its defaults; on failure it quarantines the GPU. ctx
// carries the hygiene deadline.
func (m *Manager) cleanGPU(ctx context.Context, i int) error {
	u := m.slots[i].dev.UUID
	var seen []gpu.Process // the last list that came back
	var seenErr error      // or why the last call failed
	for {
		var procs []gpu.Process
		err := m.device(ctx, i, "process list", func(ctx context.Context) (err error) {
			procs, err = m.gpus.Processes(ctx, u)
			return err
		})
		if errors.Is(err, gpu.ErrUnsupported) || (err == nil && len(procs) == 0) {
			break
		}
		if ctx.Err() == nil || err == nil {
			seen, seenErr = procs, err // not a call the hygiene deadline cut short
		}
		var reason string
		switch {
		case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			return ctx.Err() // abandoned: nothing is wrong with the GPU
		case ctx.Err() != nil && len(seen) > 0:
			pids := make([]string, len(seen))
			for k, p := range seen {
				pids[k] = fmt.Sprint(p.PID)
			}
			reason = fmt.Sprintf("process %s still on the GPU %v after its workload ended", strings.Join(pids, ","), m.o.hygieneTimeout)
		case ctx.Err() != nil:
			reason = fmt.Sprintf("cannot list its processes within %v: %v", m.o.hygieneTimeout, cmp.Or(seenErr, err))
		case err != nil && !errors.Is(err, gpu.ErrBusy) && !errors.Is(err, context.DeadlineExceeded):
			reason = "cannot list its processes: " + err.Error()
		}
		if reason != "" {
			m.quarantine(i, reason)
			return fmt.Errorf("GPU %s: %s", u, reason)
		}
		select {
		case <-ctx.Done():
		case <-time.After(m.o.hygienePoll):
		}
	}
	err := m.device(context.WithoutCancel(ctx), i, "restore defaults", func(ctx context.Context) error {
		return m.gpus.RestoreDefaults(ctx, u)
	})
	if err != nil {
		reason := "cannot restore its default power limit and clocks: " + err.Error()
		m.quarantine(i, reason)
		return fmt.Errorf("GPU %s: %s", u, reason)
	}
	m.mu.Lock()
	m.slots[i].lowered, m.slots[i].limitW = false, 0
	m.mu.Unlock()
	return nil
}

func (m *Manager) quarantine(i int, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slots[i].quarantine = reason
	m.log.Error("GPU quarantined", "gpu", i, "uuid", m.slots[i].dev.UUID, "reason", reason)
}

// containerSpec turns a workload into a container. The caller holds m.mu.
func (m *Manager) containerSpec(e *entry) isolation.Spec {
	var gpus []isolation.GPU
	for _, u := range e.w.GPUs {
		gpus = append(gpus, isolation.GPUFor(m.slots[m.byUUID[u]].dev))
	}
	return e.w.Spec.containerSpec(e.w.Container.ID, gpus)
}
