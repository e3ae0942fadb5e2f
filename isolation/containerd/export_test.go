package containerd

import "time"

// SetStaleLeaseAge lets a test treat fresh create leases as interrupted.
func SetStaleLeaseAge(r *Runtime, d time.Duration) { r.staleLease = d }

// SetStopHook runs f at Stop's steps: "before-signal" (before each signal,
// no lock held) and "signalled" (delivered, not yet recorded).
func SetStopHook(r *Runtime, f func(step string)) { r.stopHook = f }

// UUIDsOf are the UUIDs of the GPUs a CDI name gives a container.
func UUIDsOf(r *CDIRegistry, name string) []string { return r.uuidsOf(name) }
