// Command quickstart is the main job of the SDK on a simulated 8-GPU rig:
//
//   - fake miners fill all eight GPUs;
//   - a paid fine-tuning job (the fake trainer) needing four GPUs takes them
//     from the miners, with handover hygiene (no process left, default power
//     limit and clocks restored);
//   - an urgent higher-priority job needing six GPUs preempts it: the
//     fine-tune saves its checkpoint within its grace, waits in the queue and
//     resumes from that checkpoint when the urgent job ends;
//   - a site power cap arrives mid-run and is met by stopping miners first;
//   - live lines show what runs where, the draw and the training step, and a
//     closing summary gives the handover timings.
//
// It runs containers on a private containerd when it can start one (root,
// containerd and runc installed), with the simulated GPUs injected through
// CDI; otherwise it falls back to the process runtime and says loudly that
// nothing is isolated.
//
//	go run ./examples/quickstart           # about a minute
//	go run ./examples/quickstart -short    # the CI smoke test, about 25 s
package main
