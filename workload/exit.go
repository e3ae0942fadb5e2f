package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
)

// The exit path: from a running container to its end in the record. The
// GPUs are freed only when the runtime confirms that the container's
// process has ended; while it cannot say, they stay with the workload and
// are quarantined with the reason.

// await waits for e's container to end and records how. A Wait that fails
// is not an exit: the container is inspected, and only an exit the runtime
// confirms (or a container it no longer has) ends the workload.
func (r *runner) await(ctx context.Context, e *entry) {
	m := r.m
	m.mu.Lock()
	ref := e.w.Container
	m.mu.Unlock()
	for n := 1; ; n++ {
		st, err := m.rtFor(ref).Wait(ctx, ref)
		if ctx.Err() != nil {
			return // Run is ending; the next Run adopts the container
		}
		if err == nil {
			r.exited(ctx, e, &st)
			return
		}
		ictx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
		info, ierr := m.rtFor(ref).Inspect(ictx, ref)
		cancel()
		switch {
		case ierr == nil && info.State == isolation.StateStopped && info.Exit != nil:
			r.exited(ctx, e, info.Exit)
			return
		case errors.Is(ierr, isolation.ErrNotFound):
			r.exited(ctx, e, nil) // gone: nothing of it runs
			return
		case ierr == nil:
			m.log.Warn("wait for container failed but it still runs; waiting again", "container", ref.String(), "state", string(info.State), "err", err)
		default:
			why := fmt.Sprintf("cannot confirm that container %s ended: wait: %v; inspect: %v", ref, err, ierr)
			m.log.Error("GPU kept out of use until its container's end is confirmed", "container", ref.String(), "err", why)
			m.quarantineOf(e, why)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff(m.o.retryBase, m.o.retryMax, n)):
		}
	}
}

// quarantineOf quarantines the GPUs e holds.
func (m *Manager) quarantineOf(e *entry, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sl := range m.slots {
		if sl.holder == e.w.Spec.ID {
			sl.quarantine = why
		}
	}
}

// outcome is what becomes of a workload whose container ended (st nil: it
// vanished). The caller holds m.mu.
func (e *entry) outcome(st *isolation.ExitStatus) (State, EventType, string) {
	w := e.w
	paid := w.Spec.Kind.Paid()
	switch {
	case w.Outcome == StateCancelled:
		return StateCancelled, EventCancelled, "cancelled"
	case w.Outcome == StateFailed:
		return StateFailed, EventFailed, w.Reason
	case w.State == StatePreempting && paid:
		return StateQueued, EventPreempted, w.Reason
	case w.State == StatePreempting:
		return StateExited, EventPreempted, w.Reason
	case st == nil && paid:
		return StateQueued, EventQueued, "its container vanished; requeued"
	case st == nil:
		return StateFailed, EventFailed, "its container vanished"
	}
	return StateExited, EventExited, string(st.Reason)
}

// exited records the end of e's container and frees its GPUs. The record
// is written first; while the store fails, the GPUs stay held and the
// write is retried.
func (r *runner) exited(ctx context.Context, e *entry, st *isolation.ExitStatus) {
	m := r.m
	var after chan struct{} // the launch of the workload that displaced e
	var ref isolation.Ref
	// The output is kept before the end is recorded, so whoever hears of
	// the end finds it with Logs; miners' is not kept.
	m.mu.Lock()
	ref0 := e.w.Container
	m.mu.Unlock()
	r.keepLog(ctx, e, ref0)
	note := ""
	if m.o.exitReporter != nil {
		m.mu.Lock()
		w := e.w.clone()
		m.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
		note = m.o.exitReporter.ExitReport(rctx, w, st)
		cancel()
	}
	err := r.commit(ctx, e, func() (change, bool) {
		to, evType, reason := e.outcome(st)
		gpus := slices.Clone(e.w.GPUs)
		return change{to: to, reason: reason, edit: func(w *Workload) {
			if st != nil {
				x := *st
				w.Exit = &x
			}
			if evType == EventPreempted && to == StateQueued {
				w.Preemptions++
			}
			if to == StateQueued {
				w.GPUs = nil // a requeued workload holds nothing
			}
			w.ExitNote = note
		}, ev: Event{Type: evType, Exit: st, GPUs: gpus, Note: note}}, e.w.State.live()
	}, func() {
		now := time.Now()
		for _, sl := range m.slots {
			if sl.holder != e.w.Spec.ID {
				continue
			}
			m.release(sl)
			sl.quarantine = unquarantine(sl.quarantine)
			m.setLoad(sl.dev.UUID, 0, nil)
			if next := m.live[sl.next]; next != nil {
				next.releasedAt = now
			}
		}
		if by := m.live[e.preemptedBy]; by != nil {
			after = by.launched
		}
		e.stopping, e.awaiting, e.pids, e.preemptedBy = false, false, nil, ""
		ref = e.w.Container
		m.dropMiner(ctx, e)
		m.released()
	})
	if err != nil {
		return // Run is ending: the next Run finds the container ended and records it
	}
	// The workload that displaced e starts first; e's container is deleted
	// after, off the handover's critical path.
	r.spawn(ctx, func(ctx context.Context) {
		if after != nil {
			select {
			case <-after:
			case <-ctx.Done():
			}
		}
		r.deleteContainer(ctx, ref)
	})
}

// unquarantine lifts a quarantine that only waited for the container's
// end to be confirmed; one that hygiene set stays.
func unquarantine(q string) string {
	if strings.HasPrefix(q, "cannot confirm that container") {
		return ""
	}
	return q
}

// dropMiner forgets a miner that ended: miners come and go with every
// handover, and their records would pile up; the events tell what they
// did. The caller holds m.mu.
func (m *Manager) dropMiner(ctx context.Context, e *entry) {
	if e.w.Spec.Kind != KindMining || !e.w.State.Final() {
		return
	}
	if err := m.forget(ctx, e.w.Spec.ID); err != nil {
		m.log.Warn("forget ended miner; retention removes it later", "id", e.w.Spec.ID, "err", err)
	}
}

// keepLog saves the tail of an ended container's output in the store,
// after what earlier attempts left, before the container (and with it its
// log) is deleted.
func (r *runner) keepLog(ctx context.Context, e *entry, ref isolation.Ref) {
	m := r.m
	ls, ok := m.store.(LogStore)
	if !ok || m.o.logTail == 0 || !e.paid {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, m.o.storeTimeout)
	defer cancel()
	rc, err := m.rtFor(ref).Logs(lctx, ref)
	if err != nil {
		m.log.Warn("read the output of an ended container", "container", ref.String(), "err", err)
		return
	}
	out, err := tail(rc, m.o.logTail)
	rc.Close()
	if err != nil {
		m.log.Warn("read the output of an ended container", "container", ref.String(), "err", err)
	}
	old, _ := ls.Log(lctx, e.id)
	kept := append(old, fmt.Appendf(nil, "--- %s ---\n", ref.ID)...)
	kept = append(kept, out...)
	if len(kept) > m.o.logTail {
		kept = kept[len(kept)-m.o.logTail:]
	}
	if err := ls.PutLog(lctx, e.id, kept); err != nil {
		m.log.Warn("keep the output of an ended container", "container", ref.String(), "err", err)
	}
}

// tail reads r to its end and returns its last n bytes.
func tail(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, 2*n)
	chunk := make([]byte, 32<<10)
	for {
		k, err := r.Read(chunk)
		buf = append(buf, chunk[:k]...)
		if len(buf) > 2*n {
			buf = append(buf[:0], buf[len(buf)-n:]...)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf[max(0, len(buf)-n):], err
		}
	}
	return buf[max(0, len(buf)-n):], nil
}

// Logs returns the tail of a workload's output: of its running container
// from the runtime, or what was kept when its containers ended (the last
// WithLogTailBytes of all attempts, each after a "--- <container> ---"
// line), until the record is forgotten or its retention ends.
func (m *Manager) Logs(ctx context.Context, id string) ([]byte, error) {
	m.mu.Lock()
	e, err := m.entry(id)
	var ref isolation.Ref
	live := false
	if err == nil {
		ref, live = e.w.Container, e.awaiting
	}
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if live {
		lctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
		defer cancel()
		rc, err := m.rtFor(ref).Logs(lctx, ref)
		if err == nil {
			defer rc.Close()
			return tail(rc, max(m.o.logTail, 1))
		}
		if !errors.Is(err, isolation.ErrNotFound) {
			return nil, fmt.Errorf("logs of workload %q: %w", id, err)
		}
	}
	ls, ok := m.store.(LogStore)
	if !ok {
		return nil, nil
	}
	lctx, cancel := context.WithTimeout(ctx, m.o.storeTimeout)
	defer cancel()
	b, err := ls.Log(lctx, id)
	if err != nil {
		return nil, errorf(ErrStore, "logs of workload %q: %w", id, err)
	}
	return b, nil
}
