// Package containerd is the isolation.Runtime of a GPU node: each
// container runs in containerd (1.6 or newer) through the v2 Go client,
// sees only its GPUs, and belongs to its tenant's containerd namespace.
//
// New connects and checks every option at once (ErrInvalid, every
// problem listed). Runtime implements isolation.Runtime,
// isolation.Recoverer, isolation.Preparer and isolation.ImageStore.
//
// # Hardening
//
// Whatever the image says, a container runs as the spec's user (nobody
// by default), with no new privileges, no capabilities, containerd's
// default seccomp profile, a read-only root filesystem with a tmpfs /tmp,
// and a network namespace holding only loopback unless it asks for the
// host network.
//
// # GPUs through CDI
//
// A CDIRegistry resolves the CDI names of a spec from explicit spec
// directories (/etc/cdi and /var/run/cdi, where nvidia-ctk writes, by
// default) and injects them into the OCI spec: device nodes, device cgroup
// rules, driver mounts and hooks. It is this package's own CDI cache,
// rescanned on Create and never in the background, because containerd's
// pkg/cdi.WithCDIDevices works only on CDI's process-wide default cache.
// When a GPU's UUID is missing, Create finds it in the CDI spec that names
// the same device nodes by UUID, and otherwise refuses the spec.
//
// On machines without GPUs, WriteSimulatedCDI makes real character devices
// (major 195) and a spec for them, so device isolation is tested for real:
// a container opens its own node with ENXIO (allowed, no driver), does not
// see the others, and gets EPERM from the device cgroup for a node
// smuggled in through a bind mount.
//
// # Tenants
//
// Every spec is checked against its tenant's policy (WithTenancy; see
// isolation.TenantPolicy) and given its default limits. Images are the
// tenant's own: the daemon must keep content per namespace, or one tenant
// could claim another's private image by its digest alone. Configure it
// so, as the test harness does:
//
//	[plugins."io.containerd.metadata.v1.bolt"]
//	  content_sharing_policy = "isolated"
//
// # Recovery
//
// Containers, their labels and their logs live in containerd and on disk,
// not in the Runtime: Recover reports every container once, running ones
// keep running, and leftovers of interrupted creations are removed.
//
// # Lifecycle
//
// Create, Prepare, Start, Signal, Stop (stop signal, grace, then SIGKILL to
// every process), Wait (exit code and Reason: exited, stopped, killed at
// the end of the grace, or OOM-killed by the memory limit), Delete (with
// the snapshot and the logs). Reasons are kept in containerd labels, so a
// restarted SDK reports them the same way.
//
// # Logs
//
// A container's stdout and stderr go to one file per container under the
// log directory, written by containerd's shim so they survive SDK
// restarts. The runtime caps each file (WithLogCapBytes), keeping the
// newest output.
package containerd
