package workload

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gpufarm/gpufarm/isolation"
)

// reconcile loads the records and matches them with the containers the
// runtime still has: what runs is re-adopted, what ended while nobody
// watched is recorded, what vanished is requeued (paid work resumes from
// its checkpoint) or dropped (a miner), and containers without a record
// are removed, so nothing runs unaccounted.
func (r *runner) reconcile(ctx context.Context) error {
	m := r.m
	recs, err := m.store.List(ctx)
	if err != nil {
		return fmt.Errorf("load workload records: %w", err)
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
	containers := map[isolation.Ref]isolation.Info{}
	for _, in := range infos {
		containers[in.Ref] = in
	}

	type ended struct {
		e  *entry
		st isolation.ExitStatus
	}
	var finished []ended
	var waiters, stops []*entry
	adopted := map[isolation.Ref]bool{}

	m.mu.Lock()
	for _, w := range recs {
		if _, dup := m.work[w.Spec.ID]; dup {
			continue // submitted before Run: the live entry wins
		}
		if w.Seq > m.seq {
			m.seq = w.Seq
		}
		e := &entry{w: w, cancel: w.CancelRequested}
		m.work[w.Spec.ID] = e
		if w.State.Final() || w.State == StateQueued {
			continue
		}
		in, ok := containers[w.Container]
		switch {
		case ok && in.State == isolation.StateRunning:
			adopted[in.Ref] = true
			m.adopt(e, in)
			if w.State == StatePreempting {
				// The stop was under way when the manager went down.
				e.w.State = StateRunning
				e.preemptedBy = "power cap or preemption before restart"
				stops = append(stops, e)
			} else {
				e.w.State = StateRunning
			}
			waiters = append(waiters, e)
			m.log.Info("re-adopted running workload", "id", w.Spec.ID, "container", in.Ref.String(), "gpus", w.GPUs)
		case ok && in.State == isolation.StateStopped && in.Exit != nil && w.State != StateScheduled:
			adopted[in.Ref] = true
			m.hold(e)
			if w.State == StatePreempting {
				e.preemptedBy = "preemption before restart"
			}
			finished = append(finished, ended{e, *in.Exit})
		default:
			// Never started, or gone with the node: nothing of it runs.
			if ok {
				adopted[in.Ref] = true
				_ = m.rt.Delete(ctx, in.Ref)
			}
			for _, u := range w.GPUs {
				m.setLoad(u, 0, nil) // what ran there is gone
			}
			reason := "container vanished while the manager was down"
			if w.State == StateScheduled {
				reason = "manager restarted before the container started"
			}
			if e.w.Spec.Kind.Paid() {
				e.w.State, e.w.Reason, e.w.GPUs = StateQueued, reason+"; requeued", nil
				_ = m.persistEmit(ctx, e, Event{Type: EventQueued, Reason: e.w.Reason})
			} else {
				e.w.State, e.w.Reason, e.w.EndedAt = StateFailed, reason, m.clock.Now()
				_ = m.persistEmit(ctx, e, Event{Type: EventFailed, Reason: reason})
				delete(m.work, w.Spec.ID)
				_ = m.store.Delete(ctx, w.Spec.ID)
			}
			m.log.Warn("workload did not survive the restart", "id", w.Spec.ID, "reason", reason)
		}
	}
	for _, e := range stops {
		r.stop(ctx, e, "")
		e.w.State = StatePreempting
	}
	m.mu.Unlock()

	var errs []error
	for _, in := range infos {
		if adopted[in.Ref] {
			continue
		}
		if e := r.adoptUnrecorded(ctx, in); e != nil {
			// A record lost (a memory store, a store wiped): the labels
			// say enough to account for it and wait for its end.
			waiters = append(waiters, e)
			continue
		}
		m.log.Warn("removing container with no workload record", "container", in.Ref.String(), "workload", in.Workload)
		if in.State == isolation.StateRunning {
			if _, err := m.rt.Stop(ctx, in.Ref); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := m.rt.Delete(ctx, in.Ref); err != nil && !errors.Is(err, isolation.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	for _, f := range finished {
		r.exited(ctx, f.e, f.st, nil)
	}
	for _, e := range waiters {
		r.spawn(ctx, func(ctx context.Context) { r.await(ctx, e) })
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove orphan containers: %w", err)
	}
	return nil
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
			m.slots[i].holder = e.w.Spec.ID
		}
	}
}

// adoptUnrecorded re-adopts a running container of this SDK that has no
// record, from its labels, when its GPUs are known and free. It returns nil
// when the container is not one to adopt.
func (r *runner) adoptUnrecorded(ctx context.Context, in isolation.Info) *entry {
	m := r.m
	if in.State != isolation.StateRunning || in.Workload == "" || len(in.GPUs) == 0 || !Kind(in.Kind).valid() {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, known := m.work[in.Workload]; known {
		return nil
	}
	for _, u := range in.GPUs {
		i, ok := m.byUUID[u]
		if !ok || m.slots[i].holder != "" {
			return nil
		}
	}
	spec := Spec{
		ID: in.Workload, Kind: Kind(in.Kind), Tenant: in.Tenant, Image: in.Image,
		GPUs: GPURequest{UUIDs: slices.Clone(in.GPUs)}, StopSignal: in.StopSignal, StopGrace: in.StopGrace,
		Preemptible: Kind(in.Kind) == KindMining,
	}
	e := &entry{w: Workload{
		Spec: spec, State: StateRunning, GPUs: slices.Clone(in.GPUs), Container: in.Ref, Attempt: 1,
		SubmittedAt: in.CreatedAt, StartedAt: in.CreatedAt,
		Reason: "re-adopted from its container's labels: the manager had no record of it",
	}}
	m.work[spec.ID] = e
	m.adopt(e, in)
	_ = m.persistEmit(ctx, e, Event{Type: EventStarted, Reason: e.w.Reason})
	m.log.Warn("re-adopted a container the manager had no record of", "container", in.Ref.String(), "workload", spec.ID)
	return e
}
