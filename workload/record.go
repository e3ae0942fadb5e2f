package workload

import (
	"slices"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
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
	// StatePreempting: asked to stop so higher-priority work can have its
	// GPUs; a preempted paid workload returns to the queue.
	StatePreempting State = "preempting"
	// Final states.
	StateExited    State = "exited"    // the process ended on its own (Exit says how)
	StateFailed    State = "failed"    // it could not run or its GPU failed (Reason says why)
	StateCancelled State = "cancelled" // Cancel stopped it
)

// Final reports whether the workload will never run again.
func (s State) Final() bool {
	return s == StateExited || s == StateFailed || s == StateCancelled
}

// Workload is the manager's record of one workload: the spec and what
// became of it. Records are durable in the Store.
type Workload struct {
	Spec  Spec
	State State
	// GPUs are the UUIDs held (scheduled or running) or last held.
	GPUs []string
	// Container is the current or last container.
	Container isolation.Ref
	// Attempt counts starts; a preempted workload's next container is
	// attempt+1.
	Attempt     int
	Preemptions int
	SubmittedAt time.Time
	StartedAt   time.Time // of the current or last attempt
	EndedAt     time.Time
	Exit        *isolation.ExitStatus
	// Reason says why the workload failed, was preempted or was cancelled.
	Reason string
	// CancelRequested is set by Cancel: the workload is stopping for good,
	// also if the manager restarts before it has stopped.
	CancelRequested bool
	// Seq is the sequence number of the event that last changed the record.
	Seq uint64
}

func (w Workload) clone() Workload {
	w.Spec = w.Spec.clone()
	w.GPUs = slices.Clone(w.GPUs)
	if w.Exit != nil {
		e := *w.Exit
		w.Exit = &e
	}
	return w
}

// EventType says what happened to a workload.
type EventType string

const (
	EventQueued     EventType = "queued"
	EventScheduled  EventType = "scheduled"
	EventStarted    EventType = "started"
	EventProgress   EventType = "progress"
	EventPreempting EventType = "preempting"
	EventPreempted  EventType = "preempted"
	EventExited     EventType = "exited"
	EventFailed     EventType = "failed"
	EventCancelled  EventType = "cancelled"
)

// Event is one change of one workload. Seq numbers are strictly increasing,
// also across restarts of the manager, so a watcher can tell it missed
// nothing and resume with Watch(ctx, lastSeq).
type Event struct {
	Seq      uint64
	Type     EventType
	ID       string
	Kind     Kind
	Tenant   string
	Time     time.Time
	GPUs     []string
	Reason   string
	Exit     *isolation.ExitStatus
	Progress *Progress
	// Handover is set on EventStarted when the GPUs came from other
	// workloads: how long the handover took.
	Handover *Handover
}

// Progress is what a running workload reports of itself, e.g. a training
// step parsed from its log.
type Progress struct {
	Step    int
	Total   int     // 0 when unknown
	Loss    float64 // valid when HasLoss
	HasLoss bool
	Epoch   float64
	Message string
}

// Handover is the timing of one GPU handover: from the decision to the new
// workload's start.
type Handover struct {
	// From are the workloads that gave up the GPUs.
	From []string
	// Drain is how long the previous holders took to stop and free the
	// GPUs.
	Drain time.Duration
	// Prepare is how long creating and preparing the new container took;
	// it overlaps the drain.
	Prepare time.Duration
	// Hygiene is the time spent checking for leftover processes and
	// restoring power limits and clocks.
	Hygiene time.Duration
	// Total is from the scheduling decision to the container running.
	Total time.Duration
}
