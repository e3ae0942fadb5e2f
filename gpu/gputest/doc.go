// Package gputest is the conformance suite every gpu.Backend passes.
//
// A backend's own test calls Run with a Harness that builds a fresh backend
// per subtest. The suite checks what the gpu.Manager and every higher layer
// rely on: a consistent inventory, samples that keep absent readings absent,
// a monotonic energy counter, power limits enforced within their
// constraints, categorised errors, context cancellation and an idempotent
// Close. Optional capabilities are tested when the backend has them, and
// the fault checks when the Harness can cause faults: a hung device (Hang)
// must not hold a Sample past its deadline, and injected Xids (InjectXID)
// must reach an event watcher. Checks lists the checks by subtest name.
package gputest
