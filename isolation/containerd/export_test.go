package containerd

import "time"

// SetStaleLeaseAge lets a test treat fresh create leases as interrupted.
func SetStaleLeaseAge(r *Runtime, d time.Duration) { r.staleLease = d }

// SetStopHook runs f at Stop's steps: "before-signal" (before each signal,
// no lock held) and "signalled" (delivered, not yet recorded).
func SetStopHook(r *Runtime, f func(step string)) { r.stopHook = f }

// UUIDOf is the UUID Create fills in for a GPU named by name, or "".
func UUIDOf(r *CDIRegistry, name string) string { return r.uuidOf(name) }
