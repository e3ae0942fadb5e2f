package isolation

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"regexp"

	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/gpufarm/gpufarm/gpu"
)

// Labels the runtimes put on every container. containerd keeps them, so a
// new Runtime finds its containers again after the SDK process restarts.
const (
	LabelPrefix   = "io.gpufarm/"
	LabelManaged  = LabelPrefix + "managed"  // "true": created by this SDK
	LabelWorkload = LabelPrefix + "workload" // Spec.Workload
	LabelKind     = LabelPrefix + "kind"     // Spec.Kind
	LabelTenant   = LabelPrefix + "tenant"   // Spec.Tenant
	LabelGPUs     = LabelPrefix + "gpus"     // GPU UUIDs, comma-separated
	LabelImage    = LabelPrefix + "image"    // Spec.Image

	LabelDevices    = LabelPrefix + "cdi-devices" // CDI names, comma-separated
	LabelStopSignal = LabelPrefix + "stop-signal" // decimal signal number
	LabelStopGrace  = LabelPrefix + "stop-grace"  // Go duration
)

// Defaults applied to a Spec's zero fields.
const (
	DefaultUser       = "65534:65534" // nobody:nogroup
	DefaultStopSignal = syscall.SIGTERM
	DefaultStopGrace  = 10 * time.Second
)

// Network is the container's network.
type Network string

const (
	// NetworkNone (the default, also ""): a private network namespace with
	// only a loopback interface.
	NetworkNone Network = "none"
	// NetworkBridge is the tenant network: a network namespace of its own
	// on the tenant's bridge, with outbound traffic allowed and the host,
	// the node's loopback services and other tenants out of reach.
	NetworkBridge Network = "bridge"
	// NetworkHost shares the host's network namespace, /etc/hosts and
	// /etc/resolv.conf. Miners need it to reach their pools.
	NetworkHost Network = "host"
)

// GPU is one device given to a container.
type GPU struct {
	// Device is the fully qualified CDI name, e.g. "nvidia.com/gpu=GPU-8f1f...".
	Device string
	// UUID is the GPU's UUID, recorded in the container's labels for
	// accounting and recovery, so it is required. GPUFor sets it. When it
	// is empty, the containerd runtime takes it from its CDI specs if they
	// name the same device by UUID (nvidia-ctk names each GPU by index and
	// by UUID); otherwise Create fails with ErrInvalid. A name standing
	// for several GPUs ("nvidia.com/gpu=all") has no one UUID: list the
	// GPUs instead.
	UUID string
}

// GPUFor names a discovered device by UUID (by index when it has none) in
// the kind nvidia-ctk and WriteSimulatedCDI both use, "nvidia.com/gpu".
// Names by UUID survive re-enumeration; index names do not.
func GPUFor(d gpu.Device) GPU {
	name := d.UUID
	if name == "" {
		name = strconv.Itoa(d.Index)
	}
	return GPU{Device: parser.QualifiedName("nvidia.com", "gpu", name), UUID: d.UUID}
}

// Limits are resource limits. Zero means no limit: a zero limit is never
// useful, so zero and "absent" are the same here.
type Limits struct {
	// CPUMillis is CPU time per second of wall time, in thousandths of a
	// core (1500 = one and a half cores), enforced by CFS quota.
	CPUMillis int64
	// MemoryBytes is the memory limit. Exceeding it gets the container
	// OOM-killed, which Wait reports as ReasonOOMKilled.
	MemoryBytes int64
	// Pids is the most processes and threads the container may have.
	Pids int64
	// CPUShares is the container's weight when CPUs are contended
	// (cgroup cpu.shares; 1024 is one ordinary process's).
	CPUShares int64
}

type namedLimit struct {
	name string
	v    int64
}

// named lists the limits with their field names, in field order.
func (l Limits) named() []namedLimit {
	return []namedLimit{{"CPUMillis", l.CPUMillis}, {"MemoryBytes", l.MemoryBytes}, {"Pids", l.Pids}, {"CPUShares", l.CPUShares}}
}

// Mount is a host directory or file bind-mounted into the container.
type Mount struct {
	Source   string // absolute host path; must exist
	Target   string // absolute path in the container
	ReadOnly bool   // datasets are read-only; a checkpoint directory is not
}

// Spec describes one container. The zero values of the optional fields
// give the hardened defaults: user nobody, no network, no GPUs.
type Spec struct {
	// ID names the container within its tenant: letters, digits and
	// single '.', '_' or '-' between them, at most 76 characters.
	ID string
	// Tenant owns the container. Each tenant is a containerd namespace
	// (see Namespace): no tenant can list or touch another's containers.
	Tenant string
	// Workload is the workload this container runs, for labels; ID when empty.
	Workload string
	// Kind is the workload kind for labels ("training", "mining", ...).
	Kind string
	// Image is the image reference. The image must be in the tenant's
	// namespace: import or pull it for that tenant first.
	Image string
	// Args follow the image entrypoint and replace its Cmd when not empty.
	Args []string
	// Env adds to the image's environment, "KEY=value".
	Env []string
	// WorkingDir overrides the image's working directory (absolute).
	WorkingDir string
	// User is "uid" or "uid:gid" in numbers; DefaultUser when empty. Root
	// ("0") must be asked for explicitly.
	User string
	// GPUs are given to the container through CDI, and only those.
	GPUs []GPU
	// Limits are CPU, memory and process limits.
	Limits Limits
	// Mounts are bind mounts: read-only datasets, a writable checkpoint dir.
	Mounts []Mount
	// Network is NetworkNone (default), NetworkBridge or NetworkHost.
	Network Network
	// Labels are extra container labels. Keys under LabelPrefix are reserved.
	Labels map[string]string
	// StopSignal is what Stop sends first; DefaultStopSignal when zero.
	StopSignal syscall.Signal
	// StopGrace is how long Stop waits after StopSignal before it kills;
	// DefaultStopGrace when zero.
	StopGrace time.Duration
	// TmpBytes is the size of the writable tmpfs at /tmp; 64 MiB when
	// zero. It counts against Limits.MemoryBytes.
	TmpBytes int64
}

const defaultTmpBytes = 64 << 20

// Validate reports every problem of the spec at once, each wrapping
// ErrInvalid. It checks that mount sources exist, so it touches the host
// filesystem, but it creates nothing. Every GPU needs its UUID (see GPU).
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...)))
	}
	if s.ID == "" {
		bad("spec.ID is empty: name the container")
	} else if !ValidIdentifier(s.ID) {
		bad("spec.ID %q: use letters, digits and single '.', '_' or '-' between them, at most 76 characters", s.ID)
	}
	if s.Tenant == "" {
		bad("spec.Tenant is empty: every container belongs to a tenant")
	} else if err := ValidateTenant(s.Tenant); err != nil {
		errs = append(errs, err)
	}
	if s.Image == "" {
		bad("spec.Image is empty: give an image reference")
	}
	for i, e := range s.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsRune(e, 0) {
			bad("spec.Env[%d] %q: want KEY=value", i, e)
		}
	}
	for i, a := range s.Args {
		if strings.ContainsRune(a, 0) {
			bad("spec.Args[%d] contains a NUL byte", i)
		}
	}
	if s.WorkingDir != "" && !path.IsAbs(s.WorkingDir) {
		bad("spec.WorkingDir %q is not absolute", s.WorkingDir)
	}
	if s.User != "" {
		if _, _, err := ParseUser(s.User); err != nil {
			bad("spec.User %q: %v", s.User, err)
		}
	}
	seenDev := map[string]bool{}
	for i, g := range s.GPUs {
		if _, _, _, err := parser.ParseQualifiedName(g.Device); err != nil {
			bad("spec.GPUs[%d].Device %q is not a CDI device name (want vendor.com/class=name, e.g. nvidia.com/gpu=0): %v", i, g.Device, err)
		} else if seenDev[g.Device] {
			bad("spec.GPUs[%d].Device %q is given twice", i, g.Device)
		}
		seenDev[g.Device] = true
		switch {
		case g.UUID == "":
			bad("spec.GPUs[%d].UUID is empty: give the UUID of the GPU behind %q (GPUFor sets it; accounting and recovery need it)", i, g.Device)
		case strings.ContainsAny(g.UUID, ", "):
			bad("spec.GPUs[%d].UUID %q contains a comma or space", i, g.UUID)
		}
	}
	for _, l := range s.Limits.named() {
		if l.v < 0 {
			bad("spec.Limits.%s is %d: give 0 for no limit or a positive value", l.name, l.v)
		}
	}
	if s.Limits.CPUMillis > 0 && s.Limits.CPUMillis < 10 {
		bad("spec.Limits.CPUMillis is %d: the kernel's smallest quota is 10 (1%% of a core)", s.Limits.CPUMillis)
	}
	if s.TmpBytes < 0 {
		bad("spec.TmpBytes is %d: give 0 for the default or a positive size", s.TmpBytes)
	}
	targets := map[string]bool{}
	for i, m := range s.Mounts {
		if m.Source == "" || !filepath.IsAbs(m.Source) {
			bad("spec.Mounts[%d].Source %q is not an absolute host path", i, m.Source)
		} else if _, err := os.Stat(m.Source); err != nil {
			bad("spec.Mounts[%d].Source %q: %v: create it before the container", i, m.Source, errors.Unwrap(err))
		}
		switch t := path.Clean(m.Target); {
		case m.Target == "" || !path.IsAbs(m.Target):
			bad("spec.Mounts[%d].Target %q is not an absolute path", i, m.Target)
		case t == "/" || t == "/proc" || strings.HasPrefix(t, "/proc/") || t == "/sys" || strings.HasPrefix(t, "/sys/") || t == "/dev" || strings.HasPrefix(t, "/dev/"):
			bad("spec.Mounts[%d].Target %q would cover a system path", i, m.Target)
		case targets[t]:
			bad("spec.Mounts[%d].Target %q is mounted twice", i, m.Target)
		default:
			targets[t] = true
		}
	}
	switch s.Network {
	case "", NetworkNone, NetworkBridge, NetworkHost:
	default:
		bad("spec.Network %q: want %q, %q or %q", s.Network, NetworkNone, NetworkBridge, NetworkHost)
	}
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, LabelPrefix) {
			bad("spec.Labels %q: keys under %q are reserved", k, LabelPrefix)
		}
		if k == "" || len(k)+len(s.Labels[k]) > 4096 {
			bad("spec.Labels %q: key empty or key and value longer than 4096 bytes", k)
		}
	}
	if s.StopSignal < 0 || s.StopSignal > 64 {
		bad("spec.StopSignal %d is not a signal", int(s.StopSignal))
	}
	if s.StopGrace < 0 {
		bad("spec.StopGrace %v is negative: give 0 for the default", s.StopGrace)
	}
	return errors.Join(errs...)
}

// WithDefaults fills the zero optional fields; runtimes apply it to a
// valid spec before they act on it.
func (s Spec) WithDefaults() Spec {
	if s.Workload == "" {
		s.Workload = s.ID
	}
	if s.User == "" {
		s.User = DefaultUser
	}
	if s.Network == "" {
		s.Network = NetworkNone
	}
	if s.StopSignal == 0 {
		s.StopSignal = DefaultStopSignal
	}
	if s.StopGrace == 0 {
		s.StopGrace = DefaultStopGrace
	}
	if s.TmpBytes == 0 {
		s.TmpBytes = defaultTmpBytes
	}
	return s
}

// DeviceNames lists the CDI names of the spec's GPUs.
func (s Spec) DeviceNames() []string {
	out := make([]string, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		out = append(out, g.Device)
	}
	return out
}

// ContainerLabels are the labels a runtime puts on the container of a
// defaulted spec: the spec's own and the SDK's, from which InfoFromLabels
// reads it back.
func (s Spec) ContainerLabels() map[string]string {
	l := make(map[string]string, len(s.Labels)+10)
	for k, v := range s.Labels {
		l[k] = v
	}
	uuids := make([]string, 0, len(s.GPUs))
	for _, g := range s.GPUs {
		if g.UUID != "" {
			uuids = append(uuids, g.UUID)
		}
	}
	l[LabelManaged] = "true"
	l[LabelWorkload] = s.Workload
	l[LabelKind] = s.Kind
	l[LabelTenant] = s.Tenant
	l[LabelGPUs] = strings.Join(uuids, ",")
	l[LabelImage] = s.Image
	l[LabelDevices] = strings.Join(s.DeviceNames(), ",")
	l[LabelStopSignal] = strconv.Itoa(int(s.StopSignal))
	l[LabelStopGrace] = s.StopGrace.String()
	return l
}

// ParseUser reads a Spec.User, "uid" or "uid:gid" in numbers; gid
// defaults to uid.
func ParseUser(u string) (uid, gid uint32, err error) {
	us, gs, hasGID := strings.Cut(u, ":")
	parse := func(s string) (uint32, error) {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || v == 1<<32-1 {
			return 0, fmt.Errorf("want numbers, uid or uid:gid (names need the image's /etc/passwd)")
		}
		return uint32(v), nil
	}
	if uid, err = parse(us); err != nil {
		return 0, 0, err
	}
	gid = uid
	if hasGID {
		if gid, err = parse(gs); err != nil {
			return 0, 0, err
		}
	}
	return uid, gid, nil
}

// ValidateTenant checks that a tenant name makes a valid containerd
// namespace, reporting ErrInvalid.
func ValidateTenant(tenant string) error {
	if tenant == "" || !ValidIdentifier(tenant) || len(NamespacePrefix+tenant) > maxIdentifier {
		return fmt.Errorf("%w: tenant %q: use letters, digits and single '.', '_' or '-' between them, at most %d characters",
			ErrInvalid, tenant, maxIdentifier-len(NamespacePrefix))
	}
	return nil
}

// maxIdentifier and identifierPattern are containerd's rules for
// container IDs and namespaces, kept here so that the contract does not
// link containerd.
const maxIdentifier = 76

var identifierPattern = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// ValidIdentifier reports whether s is a valid container ID or namespace:
// letters and digits with single '.', '_' or '-' between them, at most 76.
func ValidIdentifier(s string) bool {
	return len(s) <= maxIdentifier && identifierPattern.MatchString(s)
}
