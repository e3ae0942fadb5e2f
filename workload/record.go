package workload

import (
	"net/netip"
	"slices"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
)

// Workload is the manager's record of one workload: the spec and what
// became of it. Records are durable in the Store.
type Workload struct {
	Spec  Spec
	State State
	// GPUs are the UUIDs held (scheduled or running) or last held.
	GPUs []string
	// Container is the current or last container.
	Container isolation.Ref
	// Address is where the running attempt's container is on its tenant
	// network (isolation.NetworkBridge): the host reaches its ports there.
	// The zero Addr on other networks.
	Address netip.Addr
	// Attempt counts launches; a requeued workload's next container is
	// attempt+1.
	Attempt     int
	Preemptions int
	// Retries counts launches that failed for a reason that may pass (the
	// runtime unavailable, a deadline); the next waits longer.
	Retries     int
	SubmittedAt time.Time
	StartedAt   time.Time // of the current or last attempt
	EndedAt     time.Time
	Exit        *isolation.ExitStatus
	// Reason says why the workload is where it is: why it failed, was
	// preempted, requeued or cancelled.
	Reason string
	// Outcome, set while a workload is asked to stop for good (Cancel, a
	// GPU fault), is the final state it will reach when its container has
	// ended, also if the manager restarts before then.
	Outcome State
	// Progress is the last progress the workload reported.
	Progress *Progress
	// StopAskedAt is when the running attempt was first asked to stop
	// (preempted, cancelled, drained, or its GPU failed): the start of its
	// stop grace. Zero while nobody asked.
	StopAskedAt time.Time
	// Ready is set by MarkReady once the running attempt answers (an
	// inference server's health endpoint); each new attempt starts unready.
	Ready bool
	// ExitNote is what the ExitReporter found when the last container
	// ended, e.g. whether a checkpoint landed during the stop grace.
	ExitNote string
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
	if w.Progress != nil {
		p := *w.Progress
		w.Progress = &p
	}
	return w
}

// EventType says what happened.
type EventType string

// Events of one workload.
const (
	EventQueued     EventType = "queued" // submitted, or back in the queue (Reason says why)
	EventScheduled  EventType = "scheduled"
	EventStarted    EventType = "started"
	EventProgress   EventType = "progress"
	EventReady      EventType = "ready" // the running attempt answers: MarkReady
	EventPreempting EventType = "preempting"
	EventStopping   EventType = "stopping"
	EventPreempted  EventType = "preempted"
	EventExited     EventType = "exited"
	EventFailed     EventType = "failed"
	EventCancelled  EventType = "cancelled"
)

// Events of the node; their ID is empty.
const (
	EventCordoned   EventType = "cordoned"   // GPUs names the GPU; none for the whole node
	EventUncordoned EventType = "uncordoned" // likewise
	// EventStoreFailed: a store write failed; no new work starts until
	// EventStoreRecovered. Neither is in the store's event log.
	EventStoreFailed    EventType = "store-failed"
	EventStoreRecovered EventType = "store-recovered"
)

// Event is one change of one workload, or of the node. Seq numbers are
// strictly increasing, also across restarts of the manager, so a watcher
// can tell what it missed and resume with Watch(ctx, lastSeq); a store
// that keeps events (EventStore) replays them after a restart.
type Event struct {
	Seq      uint64
	Type     EventType
	ID       string
	Kind     Kind
	Tenant   string
	Attempt  int
	Time     time.Time
	GPUs     []string
	Reason   string
	Exit     *isolation.ExitStatus
	Progress *Progress
	// Note is what the ExitReporter found when the container ended.
	Note string
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
	// Throughput is work per second in ThroughputUnit ("samples",
	// "tokens", "it"); 0 when unknown.
	Throughput     float64
	ThroughputUnit string
	// ETA is the time the workload says it has left; 0 when unknown.
	ETA     time.Duration
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

func (ev Event) clone() Event {
	ev.GPUs = slices.Clone(ev.GPUs)
	if ev.Exit != nil {
		x := *ev.Exit
		ev.Exit = &x
	}
	if ev.Progress != nil {
		p := *ev.Progress
		ev.Progress = &p
	}
	if ev.Handover != nil {
		h := *ev.Handover
		h.From = slices.Clone(h.From)
		ev.Handover = &h
	}
	return ev
}
