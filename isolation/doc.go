// Package isolation runs workloads in containers that see only their GPUs,
// one containerd namespace per tenant, hardened by default.
//
// The workload manager talks to a Runtime. Two implement it:
//
//   - Containerd: containers in containerd 1.6 or newer through the v2 Go
//     client. It also implements Recoverer (re-adopt containers after the
//     SDK restarts) and ImageStore (import an OCI tar, pull with
//     credentials, per tenant).
//   - Process: plain host processes for development machines. It isolates
//     nothing and logs a warning saying so. It needs WithLogDir.
//
// Recover, Import and Pull are reached by a type assertion on the Runtime
// to Recoverer or ImageStore. Options are checked: a bad value fails
// NewContainerd or NewProcess with ErrInvalid, every problem listed.
//
// # Containers
//
// A Spec names the image, arguments, environment, user, GPUs, limits,
// mounts and network of one container. Spec.Validate reports every problem
// at once, each wrapping ErrInvalid (and gpu.ErrInvalid); Create adds
// unknown CDI devices and images (ErrNotFound) to the same report, and
// creates nothing unless all is well. Whatever the image says, a container
// runs as the spec's user (nobody, 65534:65534, by default), with no new
// privileges, no capabilities, containerd's default seccomp profile, a
// read-only root filesystem with a tmpfs /tmp, and a network namespace
// holding only loopback unless it asks for the host network.
//
// # GPUs
//
// GPUs enter a container only through CDI: Spec.GPUs carries fully
// qualified CDI names ("nvidia.com/gpu=GPU-<uuid>", "nvidia.com/gpu=0",
// "nvidia.com/gpu=all") that a CDIRegistry resolves from explicit spec
// directories (/etc/cdi and /var/run/cdi, where nvidia-ctk writes, by
// default) and injects into the OCI spec: device nodes, device cgroup
// rules, driver mounts and hooks. The registry is this package's own CDI
// cache, rescanned on Create and never in the background, because
// containerd's pkg/cdi.WithCDIDevices works only on CDI's process-wide
// default cache. Each GPU also carries its UUID, which the labels record
// for accounting and recovery; when it is missing, the containerd runtime
// finds it in the CDI spec that names the same device nodes by UUID, and
// otherwise refuses the spec. On machines without GPUs, WriteSimulatedCDI makes real
// character devices (major 195) and a spec for them, so device isolation
// is tested for real: a container opens its own node with ENXIO (allowed,
// no driver), does not see the others, and gets EPERM from the device
// cgroup for a node smuggled in through a bind mount.
//
// # Tenants, labels and recovery
//
// Each tenant is the containerd namespace Namespace(tenant)
// ("gpufarm-<tenant>"), so no tenant can list or touch another's
// containers or images. Containers carry labels (LabelWorkload, LabelKind,
// LabelTenant, LabelGPUs, ...) that List filters on and that let a new
// Containerd find them again: Recover reports every container once,
// running ones keep running, and leftovers of interrupted creations are
// removed.
//
// # Lifecycle
//
// Create, Start, Signal, Stop (stop signal, grace, then SIGKILL to every
// process), Wait (exit code and Reason: exited, stopped, killed at the end
// of the grace, or OOM-killed by the memory limit), Delete (with the
// snapshot and the logs). Reasons are kept in containerd labels, so a
// restarted SDK reports them the same way.
//
// # Logs
//
// A container's stdout and stderr go to one file per container under the
// log directory, written by containerd's shim so they survive SDK
// restarts. The SDK caps each file (WithLogCapBytes): it keeps the newest
// output, dropping the oldest; see Logs and the notes in logs.go.
package isolation
