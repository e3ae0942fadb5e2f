// Package workload is the node manager: it keeps every GPU of a node
// earning. Paid work (training, inference, batch) is queued and placed on
// whole, exclusive GPUs by best fit on its constraints, or on the GPUs a
// control plane names; miners fill every idle healthy GPU and yield at
// once when paid work needs it; training yields to training only by
// priority, after its minimum runtime, and always with its stop signal and
// grace so it can checkpoint, then waits in the queue and resumes.
// Training and inference go only to GPUs whose readiness (gpu.Assess)
// admits that use, unless the request says otherwise.
//
// # One state machine
//
// A workload's life is one table of states and moves (see State). Every
// change passes one function that refuses an illegal move, writes the
// record (and its event) to the Store first, and only then changes memory
// and tells the watchers. A store that fails is reported to the caller
// (Submit, Cancel, Cordon return ErrStore and change nothing), and inside
// Run it stops new launches and shows in Status and as an event until it
// works again. Records load from the store on first use, so a new Manager
// answers for what an earlier one left.
//
// # Failure paths
//
//   - Only device-level faults (Xid 79, 48, 74, 95, a lost device, as gpu
//     classifies them) end work on a GPU: preemptible paid work is requeued
//     to resume from its checkpoint (Spec.OnGPULoss says otherwise), the
//     rest fails with the fault. A broken health event stream leaves health
//     unknown: nothing new goes there, and running work runs on.
//   - Every GPU call has a deadline (WithDeviceTimeout); a GPU that does
//     not answer is taken for hung and gets no new work, and the rest of
//     the node goes on. Runtime and store calls have deadlines too.
//   - GPUs are freed only when the runtime confirms that the container on
//     them ended; while it cannot say, they stay quarantined with the
//     reason.
//   - A launch that fails for a reason that may pass (the runtime
//     unavailable, a deadline, Run stopping) puts paid work back in the
//     queue with backoff; a permanent one (a bad spec, a missing image, a
//     permission) fails it.
//   - After a restart, Run re-adopts what runs, records with its real exit
//     status what ended while nobody watched, and requeues what vanished;
//     nothing runs twice and nothing runs unaccounted.
//
// # Handover hygiene
//
// Before a GPU passes to another workload the manager checks that no
// compute process is left on it and restores its default power limit and
// clocks, so a miner's tuning never reaches a customer; a GPU that fails
// the check is quarantined until Release. While the previous holders
// drain, the next container is already being prepared, so only the start
// is left on the critical path.
//
// # Operators
//
// Cordon and CordonNode take a GPU or the node out of service; Drain and
// DrainNode move the work off with its checkpoint grace. Logs returns a
// workload's output, kept after its container is gone until Forget or
// the retention (WithRetention) ends. Watch streams events, and replays
// them across restarts when the store keeps them (EventStore).
//
// A site power budget (WithPowerBudget, Curtail) is met in the order
// demand-response programs expect, each step only as far as needed: lower
// mining power limits, stop mining, lower training power limits, and only
// then stop training.
//
// Records, and with them the queue, are kept in a Store (workload/bolt on
// a node). Any isolation.Runtime works: isolation/containerd on a node,
// isolation/process on a laptop; the simulator in gpu/sim stands in for
// the GPUs (WithLoad(rig.SetGPULoad) makes its power follow what runs).
package workload
