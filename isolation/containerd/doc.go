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
// the default limits of its tenant's policy (pids, memory, CPU shares), and
// a network namespace holding only loopback unless it asks for the tenant
// network or, where the policy allows, the host network.
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
// Each tenant gets a slot the first time it creates a container, kept in
// a label of its namespace; the slot picks its host ids and its network.
//
// # User namespaces
//
// Each tenant's containers run in a user namespace of their own
// (WithUserNamespaces, on by default): ids 0 to 65535 inside are a range
// of host ids from IDBase that no other tenant has, so two tenants never
// share a host uid, and root inside, where a policy allows it, is nobody
// outside. containerd 1.6 has no idmapped mounts, so the image's layers
// are copied once per image and tenant with their owners moved into the
// range (a few ms for a small image, a copy of the image for a large one),
// and kept as long as the image. Device nodes cannot be made in a user
// namespace and are bound from the host instead; the device cgroup still
// decides which may be opened. The source of a writable mount that root
// owns is given to the tenant (only the folder itself), so what it writes
// there is its own; a mount another tenant owns is refused. The host's
// state and root folders of containerd must be traversable by others
// (0711), as Debian's are.
//
// # Tenant network
//
// isolation.NetworkBridge puts the container in a network namespace of its
// own on its tenant's bridge (one bridge and one /24 of the tenant subnet
// per slot), made with its task through CNI's bridge and host-local
// plugins (Debian's containernetworking-plugins) and removed with the
// container. Outbound traffic is masqueraded; firewall chains (iptables
// and ip6tables) reject what a container sends to the host's own
// addresses, and with them the node's loopback services, or to another
// tenant's bridge, and any connection opened toward a container from
// outside the host. Containers of one tenant reach each other, and the
// host reaches them at isolation.Info.Address. The chains are installed
// before the first container joins and removed at Close when none is
// left. The container gets the host's /etc/resolv.conf: a host whose
// resolver listens on loopback must give tenants another. A container in
// a user namespace whose network namespace the runtime made sees the
// host's /sys, read-only (a new sysfs needs a network namespace its user
// namespace owns). WithNetwork sets the subnet, the bridge and chain names
// and the plugin and state folders.
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
