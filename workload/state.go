package workload

import (
	"context"
	"slices"
	"time"
)

// State is where a workload is in its life.
type State string

const (
	// StateQueued: waiting for GPUs.
	StateQueued State = "queued"
	// StateScheduled: GPUs are reserved; earlier holders are draining and
	// the container is being prepared.
	StateScheduled State = "scheduled"
	StateRunning   State = "running"
	// StatePreempting: asked to stop so that other work (or a power cap, or
	// a drain) can have its GPUs, with its stop signal and grace; paid work
	// returns to the queue when it has stopped.
	StatePreempting State = "preempting"
	// StateStopping: asked to stop for good (Cancel, or a fault of its
	// GPU); Workload.Outcome says how it will end.
	StateStopping State = "stopping"
	// Final states.
	StateExited    State = "exited"    // the process ended on its own (Exit says how)
	StateFailed    State = "failed"    // it could not run or its GPU failed (Reason says why)
	StateCancelled State = "cancelled" // Cancel stopped it
)

// Final reports whether the workload will never run again.
func (s State) Final() bool {
	return s == StateExited || s == StateFailed || s == StateCancelled
}

// live reports whether the workload is in the scheduler's hands.
func (s State) live() bool { return !s.Final() }

// moves is the state machine: every state a workload may move to from
// each state. A live state may also stay where it is while its record
// changes (a new attempt, progress, a requested outcome). Nothing leaves a
// final state; Forget and retention delete the record.
var moves = map[State][]State{
	StateQueued:     {StateScheduled, StateCancelled, StateFailed},
	StateScheduled:  {StateRunning, StateQueued, StateCancelled, StateFailed, StateExited},
	StateRunning:    {StatePreempting, StateStopping, StateQueued, StateExited, StateFailed, StateCancelled},
	StatePreempting: {StateStopping, StateQueued, StateExited, StateFailed, StateCancelled},
	StateStopping:   {StateExited, StateFailed, StateCancelled},
}

// finalEvent is the event of each final state.
var finalEvent = map[State]EventType{StateExited: EventExited, StateFailed: EventFailed, StateCancelled: EventCancelled}

// legal reports whether a workload may move from one state to another.
func legal(from, to State) bool {
	return (from == to && from.live()) || slices.Contains(moves[from], to)
}

// change is one change of a workload's record: the state it moves to,
// what else changes, and the event that tells it.
type change struct {
	to     State
	reason string // the new Workload.Reason, when not empty
	edit   func(w *Workload)
	// ev is the event to emit; a zero Type emits none. Its ID, Kind,
	// Tenant, Seq, Time and (when nil) GPUs and Reason are filled in.
	ev Event
}

// apply is the one place where a workload's record changes. It refuses an
// illegal move, writes the new record (and its event, in the same write
// when the store keeps events) to the store, and only then changes memory
// and tells the watchers. On a store error nothing changes in memory and
// the error, wrapping ErrStore, is returned. The caller holds m.mu.
func (m *Manager) apply(ctx context.Context, e *entry, c change) error {
	from := e.w.State
	if !legal(from, c.to) {
		m.log.Error("illegal workload state change refused", "id", e.w.Spec.ID, "from", string(from), "to", string(c.to))
		return errorf(ErrInvalid, "workload %q: %s to %s is not a legal move", e.w.Spec.ID, from, c.to)
	}
	next := e.w.clone()
	next.State = c.to
	if c.reason != "" {
		next.Reason = c.reason
	}
	if c.edit != nil {
		c.edit(&next)
	}
	now := m.clock.Now()
	if c.to.Final() && next.EndedAt.IsZero() {
		next.EndedAt = now
	}
	if from == StateRunning && (c.to == StatePreempting || c.to == StateStopping) {
		next.StopAskedAt = now // the grace starts; a later change of mind keeps it
	}
	var ev *Event
	if c.ev.Type != "" {
		x := c.ev
		x.Seq = m.seq + 1
		x.ID, x.Kind, x.Tenant, x.Attempt = next.Spec.ID, next.Spec.Kind, next.Spec.Tenant, next.Attempt
		if x.Time.IsZero() {
			x.Time = now
		}
		if x.GPUs == nil {
			x.GPUs = slices.Clone(next.GPUs)
		}
		if x.Reason == "" {
			x.Reason = c.reason
		}
		if x.Type != EventProgress {
			next.Seq = x.Seq
		}
		ev = &x
	}
	if err := m.persist(ctx, next, ev); err != nil {
		return errorf(ErrStore, "record workload %q (%s to %s): %w", next.Spec.ID, from, c.to, err)
	}
	e.w = next
	if c.to.Final() {
		delete(m.live, next.Spec.ID)
	} else {
		m.live[next.Spec.ID] = e
	}
	if ev != nil {
		m.seq = ev.Seq
		m.remember(*ev)
	}
	return nil
}

// persist writes a record, with its event when the store keeps events,
// within the store deadline. A write started is finished even if ctx is
// cancelled: a shutdown must not leave half a change. The caller holds
// m.mu.
func (m *Manager) persist(ctx context.Context, w Workload, ev *Event) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.o.storeTimeout)
	defer cancel()
	var err error
	if es, ok := m.store.(EventStore); ok && ev != nil {
		err = es.Commit(sctx, w, *ev)
	} else {
		err = m.store.Put(sctx, w)
	}
	m.noteStore(err)
	return err
}

// noteStore records whether the store works: a failure stops new launches
// and is told to the watchers and through Health, until a write succeeds
// again. The caller holds m.mu.
func (m *Manager) noteStore(err error) {
	switch {
	case err != nil && m.storeErr == nil:
		m.storeErr, m.storeSince = err, m.clock.Now()
		m.log.Error("workload store write failed; no new work starts until it works again", "err", err)
		m.remember(Event{Seq: m.seq + 1, Type: EventStoreFailed, Time: m.storeSince, Reason: err.Error()})
		m.seq++
	case err != nil:
		m.storeErr = err
	case m.storeErr != nil:
		m.log.Info("workload store works again", "down_for", m.clock.Now().Sub(m.storeSince))
		m.storeErr = nil
		m.remember(Event{Seq: m.seq + 1, Type: EventStoreRecovered, Time: m.clock.Now()})
		m.seq++
		m.poke()
	}
}

// backoff is the wait before the nth retry: base doubling up to max.
func backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}
