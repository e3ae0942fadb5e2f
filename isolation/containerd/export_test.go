package containerd

import "time"

// SetStaleLeaseAge lets a test treat fresh create leases as interrupted.
func SetStaleLeaseAge(r *Runtime, d time.Duration) { r.staleLease = d }

// SetStopHook runs f at Stop's steps: "before-signal" (before each signal,
// no lock held) and "signalled" (delivered, not yet recorded).
func SetStopHook(r *Runtime, f func(step string)) { r.stopHook = f }

// UUIDsOf are the UUIDs of the GPUs a CDI name gives a container.
func UUIDsOf(r *CDIRegistry, name string) []string { return r.uuidsOf(name) }

// NetworkConf is the CNI network list of a tenant slot.
func NetworkConf(r *Runtime, slot int) ([]byte, error) { return r.net.conf(slot, r.tenantSubnet(slot)) }

// NewNetNS and RemoveNetNS make and remove a network namespace bound at
// path, as the runtime does for a container of the tenant network.
var (
	NewNetNS    = newNetNS
	RemoveNetNS = removeNetNS
)
