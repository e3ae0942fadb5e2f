// Package isolation is the contract between the workload manager and the
// runtimes that run its containers: Runtime, the container Spec with its
// validation and hardened defaults, the labels every container carries,
// and the error categories.
//
// Two packages implement Runtime:
//
//   - isolation/containerd: containers in containerd 1.6 or newer through
//     the v2 Go client, GPUs injected through CDI, one containerd namespace
//     per tenant, hardened by default. It also implements Recoverer
//     (re-adopt containers after the SDK restarts), Preparer (make a
//     container's task ahead of its start) and ImageStore (import an OCI
//     tar, pull with credentials, per tenant).
//   - isolation/process: plain host processes for development machines. It
//     isolates nothing and says so.
//
// This package links neither: a program that uses only the process
// runtime does not pull in containerd's client. Optional features are
// reached by a type assertion on the Runtime, as database/sql reaches a
// driver's optional interfaces.
//
// # Containers
//
// A Spec names the image, arguments, environment, user, GPUs, limits,
// mounts and network of one container. Spec.Validate reports every problem
// at once, each wrapping ErrInvalid (and gpu.ErrInvalid); a runtime's
// Create adds what only it can check (an unknown CDI device or image:
// ErrNotFound) to the same report and creates nothing unless all is well.
// Whatever the image says, a container runs as the spec's user (nobody,
// 65534:65534, by default), with no new privileges, no capabilities, a
// default seccomp profile, a read-only root filesystem with a tmpfs /tmp,
// and a network namespace holding only loopback unless it asks for the
// host network.
//
// # GPUs
//
// GPUs enter a container only through CDI: Spec.GPUs carries fully
// qualified CDI names ("nvidia.com/gpu=GPU-<uuid>", "nvidia.com/gpu=0")
// and the UUID of each GPU, which the labels record for accounting and
// recovery. GPUFor names a discovered gpu.Device.
//
// # Tenants and labels
//
// Each tenant is its own namespace, Namespace(tenant) ("gpufarm-<tenant>"),
// so no tenant can list or touch another's containers or images.
// Containers carry labels (LabelWorkload, LabelKind, LabelTenant,
// LabelGPUs, ...) that List filters on and that let a new runtime find
// them again; InfoFromLabels reads them back.
package isolation
