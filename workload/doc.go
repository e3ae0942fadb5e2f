// Package workload is the node manager: it keeps every GPU of a node
// earning. Paid work (training, inference, batch) is queued and placed on
// whole, exclusive GPUs by best fit on its constraints, or on the GPUs a
// control plane names; miners fill every idle healthy GPU and yield at
// once when paid work needs it; training yields to training only by
// priority, after its minimum runtime, and always with its stop signal and
// grace so it can checkpoint, then waits in the queue and resumes.
//
// Before a GPU passes to another workload the manager checks that no
// compute process is left on it and restores its default power limit and
// clocks, so a miner's tuning never reaches a customer; a GPU that fails
// the check is quarantined. While the previous holders drain, the next
// container is already being prepared, so only the start is left on the
// critical path.
//
// A site power budget (WithPowerBudget, Curtail) is met in the order
// demand-response programs expect: lower mining power limits, stop mining,
// lower training power limits, and only then stop training.
//
// Records, and with them the queue, are kept in a Store (workload/bolt on a
// node); containers carry labels, so after a restart Run re-adopts what
// still runs and records what vanished. Any isolation.Runtime works: the
// containerd runtime on a node, the process runtime on a laptop, and the
// simulator in gpu/sim stands in for the GPUs (WithLoad(rig.SetGPULoad)
// makes its power follow what runs).
package workload
