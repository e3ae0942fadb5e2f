package isolation

import (
	"context"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// NamespacePrefix starts the containerd namespace of every tenant.
const NamespacePrefix = "gpufarm-"

// Namespace is the containerd namespace of a tenant.
func Namespace(tenant string) string { return NamespacePrefix + tenant }

// Ref names one container: its tenant and its ID within the tenant.
type Ref struct {
	Tenant string
	ID     string
}

func (r Ref) String() string { return r.Tenant + "/" + r.ID }

// State is a container's lifecycle state.
type State string

const (
	StateCreated State = "created" // created, never started (or its task was removed)
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped" // exited; Info.Exit says how
	StateUnknown State = "unknown"
)

// Reason says why a container's process ended.
type Reason string

const (
	// ReasonExited: the process ended on its own; Code is its exit code.
	ReasonExited Reason = "exited"
	// ReasonStopped: the process ended after Stop's signal, within the grace.
	ReasonStopped Reason = "stopped"
	// ReasonKilled: Stop killed the process at the end of the grace.
	ReasonKilled Reason = "killed"
	// ReasonOOMKilled: the kernel killed the process for exceeding
	// Limits.MemoryBytes.
	ReasonOOMKilled Reason = "oom-killed"
)

// ExitStatus is how a container's process ended.
type ExitStatus struct {
	// Code is the exit code; 128+N when signal N ended the process.
	Code      int
	Reason    Reason
	OOMKilled bool
	ExitedAt  time.Time
}

// Info describes a container.
type Info struct {
	Ref
	Workload string
	Kind     string
	Image    string
	// GPUs are the UUIDs of the GPUs given to the container.
	GPUs []string
	// Devices are the CDI names the container was given.
	Devices []string
	// Labels are all the container's labels, the SDK's included.
	Labels     map[string]string
	State      State
	PID        int
	CreatedAt  time.Time
	StopSignal syscall.Signal
	StopGrace  time.Duration
	// Exit is set when State is StateStopped.
	Exit *ExitStatus
	// LogPath is the file the container's stdout and stderr go to.
	LogPath string
	// Address is the container's address on its tenant network
	// (NetworkBridge), once its task was made; the zero Addr otherwise.
	Address netip.Addr
}

// Filter selects containers for List. The zero Filter selects all of
// this runtime's containers in every tenant.
type Filter struct {
	// Tenant limits the list to one tenant when not empty.
	Tenant string
	// Labels must all match (key and value).
	Labels map[string]string
}

// Match reports whether a container of tenant with labels passes the filter.
func (f Filter) Match(tenant string, labels map[string]string) bool {
	if f.Tenant != "" && f.Tenant != tenant {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Runtime runs containers for the workload manager. Implementations are
// safe for concurrent use.
//
// Optional features are separate interfaces, reached by a type assertion
// on the Runtime: Recover through Recoverer (containers that outlive the
// SDK), Import and Pull through ImageStore (per-tenant images). The
// containerd runtime implements both; the process runtime neither.
//
//	if rec, ok := rt.(isolation.Recoverer); ok {
//		infos, err := rec.Recover(ctx)
//		...
//	}
//	if store, ok := rt.(isolation.ImageStore); ok {
//		names, err := store.Import(ctx, tenant, tarReader)
//		...
//	}
type Runtime interface {
	// Create validates spec, resolves its GPUs and image, and creates the
	// container without starting it. Bad input gets ErrInvalid (every
	// problem at once) or ErrNotFound, and nothing is created.
	Create(ctx context.Context, spec Spec) (Info, error)
	// Start starts a created container.
	Start(ctx context.Context, ref Ref) error
	// Signal sends sig to the container's main process.
	Signal(ctx context.Context, ref Ref, sig syscall.Signal) error
	// Stop sends the spec's stop signal, waits up to its grace, then
	// kills every process of the container, and returns how it ended.
	Stop(ctx context.Context, ref Ref) (ExitStatus, error)
	// Wait blocks until the started container exits, or ctx ends.
	Wait(ctx context.Context, ref Ref) (ExitStatus, error)
	// Delete removes a container that is not running, with its root
	// filesystem and its logs.
	Delete(ctx context.Context, ref Ref) error
	// Inspect describes one container.
	Inspect(ctx context.Context, ref Ref) (Info, error)
	// List describes the containers that match filter.
	List(ctx context.Context, filter Filter) ([]Info, error)
	// Logs reads what the container wrote to stdout and stderr, at most
	// the runtime's log cap.
	Logs(ctx context.Context, ref Ref) (io.ReadCloser, error)
	// Close releases the runtime. Containers keep running. It is idempotent.
	Close() error
}

// Preparer is a Runtime that can do the slow part of a start ahead of
// time: Prepare readies a created container so that Start only has to run
// its process. The workload manager prepares the next container while the
// GPUs' previous holders drain; reach it with rt.(isolation.Preparer).
type Preparer interface {
	Prepare(ctx context.Context, ref Ref) error
}

// Recoverer is a Runtime whose containers outlive the SDK process; reach
// it with rt.(isolation.Recoverer).
type Recoverer interface {
	// Recover finds the containers an earlier instance created, re-attaches
	// to them and removes the leftovers of creations that never finished.
	// Each container is reported once.
	Recover(ctx context.Context) ([]Info, error)
}

// ImageStore is a Runtime that keeps images; reach it with
// rt.(isolation.ImageStore). Images belong to a tenant: an image pulled
// with one tenant's credentials is not usable by another.
type ImageStore interface {
	// Import reads an OCI image layout (or docker save) tar into the
	// tenant's namespace, unpacks it and returns the image names.
	Import(ctx context.Context, tenant string, r io.Reader) ([]string, error)
	// Pull fetches ref from its registry into the tenant's namespace and unpacks it.
	Pull(ctx context.Context, tenant, ref string, opts PullOptions) error
}

// PullOptions are registry credentials and transport settings for Pull.
type PullOptions struct {
	// Username and Secret authenticate to the registry; empty for anonymous.
	Username string
	Secret   string
	// PlainHTTP talks HTTP instead of HTTPS (a registry on localhost).
	PlainHTTP bool
}

// InfoFromLabels describes a container from the labels a runtime put on
// it (Spec.ContainerLabels); the runtime adds the state, PID, times and
// log path it knows.
func InfoFromLabels(ref Ref, labels map[string]string) Info {
	info := Info{
		Ref: ref, Workload: labels[LabelWorkload], Kind: labels[LabelKind], Image: labels[LabelImage],
		GPUs: splitList(labels[LabelGPUs]), Devices: splitList(labels[LabelDevices]), Labels: labels,
		State: StateCreated, StopSignal: DefaultStopSignal, StopGrace: DefaultStopGrace,
	}
	if n, err := strconv.Atoi(labels[LabelStopSignal]); err == nil && n > 0 {
		info.StopSignal = syscall.Signal(n)
	}
	if d, err := time.ParseDuration(labels[LabelStopGrace]); err == nil && d > 0 {
		info.StopGrace = d
	}
	return info
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
