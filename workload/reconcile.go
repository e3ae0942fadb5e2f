package workload

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gpufarm/gpufarm/isolation"
)

// The reconcile path: what a new Run finds. The records are loaded and
// matched with the containers the runtime still has: what runs is
// re-adopted, what ended while nobody watched is recorded with its real
// exit status (never run twice), what vanished is requeued (paid work
// resumes from its checkpoint) or ended (a miner), and containers without
// a live record are stopped and removed, so nothing runs unaccounted.

// storeReadError is a store that cannot list its records: Run cannot
// know what it owns, and ends.
type storeReadError struct{ err error }

func (e *storeReadError) Error() string { return "load workload records: " + e.err.Error() }
func (e *storeReadError) Unwrap() error { return e.err }

type ended struct {
	e  *entry
	st *isolation.ExitStatus
}

// fix is a change reconcile must record before Run schedules.
type fix struct {
	e *entry
	c change
}

// reconcile takes over from an earlier Run. A runtime error is returned
// for the caller to retry; nothing in memory changes until the runtime
// has answered.
func (r *runner) reconcile(ctx context.Context) error {
	m := r.m
	m.mu.Lock()
	err := m.load()
	m.mu.Unlock()
	if err != nil {
		return &storeReadError{err}
	}
	var infos []isolation.Info
	if rec, ok := m.rt.(isolation.Recoverer); ok {
		infos, err = rec.Recover(ctx)
	} else {
		infos, err = m.rt.List(ctx, isolation.Filter{})
	}
	if err != nil {
		return fmt.Errorf("list containers to re-adopt: %w", err)
	}
	held, _ := m.holds.List(ctx, isolation.Filter{}) // external workloads' holds, made again by load
	infos = append(infos, held...)
	containers := map[isolation.Ref]isolation.Info{}
	for _, in := range infos {
		containers[in.Ref] = in
	}

	m.mu.Lock()
	if err := m.load(); err != nil {
		m.mu.Unlock()
		return &storeReadError{err}
	}
	var finished []ended
	var waiters []*entry
	var fixes []fix
	adopted := map[isolation.Ref]bool{}
	for _, e := range m.live {
		w := e.w
		if w.State == StateQueued {
			continue
		}
		in, ok := containers[w.Container]
		switch {
		case ok && in.State == isolation.StateRunning:
			adopted[in.Ref] = true
			m.adopt(e, in)
			if w.State == StateScheduled {
				// It started just before the manager went down.
				fixes = append(fixes, fix{e, change{to: StateRunning, reason: "started before the manager restarted",
					edit: func(w *Workload) { w.StartedAt = in.CreatedAt }, ev: Event{Type: EventStarted}}})
			}
			waiters = append(waiters, e)
			m.log.Info("re-adopted running workload", "id", w.Spec.ID, "container", in.Ref.String(), "gpus", w.GPUs)
		case ok && in.State == isolation.StateStopped && in.Exit != nil && w.Attempt > 0:
			// It ran and ended while nobody watched: record how.
			adopted[in.Ref] = true
			m.hold(e)
			finished = append(finished, ended{e, in.Exit})
		default:
			// Never started, or gone with the node: nothing of it runs.
			if ok {
				adopted[in.Ref] = true
				m.cleanup = append(m.cleanup, in.Ref)
			}
			for _, u := range w.GPUs {
				m.setLoad(u, 0, nil) // what ran there is gone
			}
			if w.State == StateScheduled {
				fixes = append(fixes, fix{e, change{to: StateQueued, reason: "the manager restarted before the container started; requeued",
					edit: func(w *Workload) { w.GPUs = nil }, ev: Event{Type: EventQueued}}})
				continue
			}
			m.hold(e)
			finished = append(finished, ended{e, nil})
			m.log.Warn("workload's container vanished while the manager was down", "id", w.Spec.ID, "container", w.Container.String())
		}
	}
	m.mu.Unlock()

	// Nothing is scheduled before these are recorded, so a store that
	// fails now holds Run here rather than leaving a record behind.
	for _, f := range fixes {
		if err := r.commit(ctx, f.e, func() (change, bool) { return f.c, f.e.w.State == StateScheduled }, nil); err != nil {
			return err
		}
	}
	for _, in := range infos {
		if adopted[in.Ref] {
			continue
		}
		e, err := r.adoptUnrecorded(ctx, in)
		if err != nil {
			return err
		}
		if e != nil {
			// A record lost (a memory store, a store wiped): the labels
			// say enough to account for it and wait for its end.
			waiters = append(waiters, e)
			continue
		}
		m.log.Warn("removing container with no live workload", "container", in.Ref.String(), "workload", in.Workload, "state", string(in.State))
		r.spawn(ctx, func(ctx context.Context) { r.removeOrphan(ctx, in) })
	}
	for _, f := range finished {
		r.exited(ctx, f.e, f.st)
	}
	m.mu.Lock()
	for _, e := range waiters {
		e.awaiting = true
	}
	m.mu.Unlock()
	for _, e := range waiters {
		r.spawn(ctx, func(ctx context.Context) { r.await(ctx, e) })
	}
	return nil
}

// removeOrphan stops and deletes a container no live workload owns; a
// failure leaves it for the tick's cleanup.
func (r *runner) removeOrphan(ctx context.Context, in isolation.Info) {
	m := r.m
	if in.State == isolation.StateRunning {
		sctx, cancel := context.WithTimeout(ctx, in.StopGrace+m.o.runtimeTimeout)
		_, err := m.rtFor(in.Ref).Stop(sctx, in.Ref)
		cancel()
		if err != nil && !errors.Is(err, isolation.ErrNotFound) && !errors.Is(err, isolation.ErrState) {
			m.log.Warn("stop orphan container failed; retrying at the next tick", "container", in.Ref.String(), "err", err)
			m.mu.Lock()
			m.cleanup = append(m.cleanup, in.Ref)
			m.mu.Unlock()
			return
		}
	}
	r.deleteContainer(ctx, in.Ref)
}

// adopt makes e, found running in container in, the holder of its GPUs
// and puts its load on them. The caller holds m.mu.
func (m *Manager) adopt(e *entry, in isolation.Info) {
	m.hold(e)
	if in.PID > 0 {
		e.pids = []int{in.PID}
	}
	for _, u := range e.w.GPUs {
		m.setLoad(u, e.w.Spec.load(), e.pids)
	}
}

// hold marks e's GPUs as held by it. The caller holds m.mu.
func (m *Manager) hold(e *entry) {
	for _, u := range e.w.GPUs {
		if i, ok := m.byUUID[u]; ok {
			m.take(m.slots[i], e)
		}
	}
}

// adoptUnrecorded re-adopts a running container of this SDK that has no
// record, from its labels, when its GPUs are known and free; it retries
// the record while the store fails. It returns nil when the container is
// not one to adopt: an older attempt's, a finished workload's, or one whose
// GPUs are taken.
func (r *runner) adoptUnrecorded(ctx context.Context, in isolation.Info) (*entry, error) {
	m := r.m
	m.mu.Lock()
	_, known := m.work[in.Workload]
	m.mu.Unlock()
	if known {
		return nil, nil
	}
	if in.State != isolation.StateRunning || in.Workload == "" || len(in.GPUs) == 0 || !Kind(in.Kind).valid() {
		return nil, nil
	}
	spec := Spec{
		ID: in.Workload, Kind: Kind(in.Kind), Tenant: in.Tenant, Image: in.Image,
		GPUs: GPURequest{UUIDs: slices.Clone(in.GPUs)}, StopSignal: in.StopSignal, StopGrace: in.StopGrace,
		Preemptible: Kind(in.Kind) == KindMining,
	}
	e := newEntry(Workload{
		Spec: spec, State: StateRunning, GPUs: slices.Clone(in.GPUs), Container: in.Ref, Attempt: 1,
		SubmittedAt: in.CreatedAt, StartedAt: in.CreatedAt,
	})
	adoptable := func() bool {
		if _, known := m.work[spec.ID]; known {
			return false
		}
		for _, u := range in.GPUs {
			i, ok := m.byUUID[u]
			if !ok || m.slots[i].holder != "" {
				return false
			}
		}
		return true
	}
	adopted := false
	err := r.commit(ctx, e, func() (change, bool) {
		if !adoptable() {
			return change{}, false
		}
		m.work[spec.ID] = e // taken back below if the write fails
		return change{to: StateRunning, reason: "re-adopted from its container's labels: the manager had no record of it",
			edit: func(w *Workload) { w.Address = in.Address }, ev: Event{Type: EventStarted}}, true
	}, func() {
		adopted = true
		m.adopt(e, in)
		m.log.Warn("re-adopted a container the manager had no record of", "container", in.Ref.String(), "workload", spec.ID)
	})
	if !adopted {
		m.mu.Lock()
		if m.work[spec.ID] == e {
			delete(m.work, spec.ID)
		}
		m.mu.Unlock()
		return nil, err
	}
	return e, nil
}
