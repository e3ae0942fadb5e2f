package workload

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// Kind is what a workload does. Mining is the filler that yields; the
// others are paid work.
type Kind string

const (
	KindMining    Kind = "mining"
	KindTraining  Kind = "training"
	KindInference Kind = "inference"
	KindBatch     Kind = "batch"
)

// Paid reports whether the kind is rented work rather than mining.
func (k Kind) Paid() bool { return k != KindMining }

func (k Kind) valid() bool {
	switch k {
	case KindMining, KindTraining, KindInference, KindBatch:
		return true
	}
	return false
}

// GPURequest says which GPUs a workload needs: either a count with
// constraints, which the node places, or explicit UUIDs, when a control
// plane has already placed it.
type GPURequest struct {
	Count int
	// Constraints; zero values do not constrain.
	MinMemoryBytes       uint64
	MinComputeCapability gpu.ComputeCapability
	MinLink              gpu.Link // generation and width, compared with the GPU's usable link
	// Models, when not empty, lists the allowed model names (case
	// insensitive, "NVIDIA " prefix optional: "GeForce RTX 3090", "A40").
	Models []string
	// UUIDs pins the workload to these GPUs. Count, when set, must equal
	// their number; the constraints still apply.
	UUIDs []string
	// IgnoreReadiness places training and inference also on GPUs that
	// gpu.Assess rates unfit for that use (an RTX 3080 on an x1 riser is
	// rated for inference, not training). By default they go only where
	// readiness admits them.
	IgnoreReadiness bool
}

// GPULoss says what becomes of a workload whose GPU fails (a device-level
// fault: Xid 79, 48, 74, 95, a lost device).
type GPULoss string

const (
	// GPULossDefault requeues preemptible paid work, to resume from its
	// checkpoint on healthy GPUs, and fails the rest.
	GPULossDefault GPULoss = ""
	GPULossRequeue GPULoss = "requeue"
	GPULossFail    GPULoss = "fail"
)

// Spec describes a workload. Build one by hand, or with the mining and
// training packages' builders.
type Spec struct {
	// ID names the workload on this node; letters, digits, '.', '_' and
	// '-', at most 64, starting with a letter or digit.
	ID     string
	Kind   Kind
	Tenant string // a containerd namespace per tenant; see isolation.ValidateTenant
	// Priority orders paid work; higher goes first and may preempt lower
	// (see Preemptible and MinRuntime). Mining's priority is ignored: it
	// always yields.
	Priority int
	GPUs     GPURequest

	Image     string
	Command   []string // the container's args; empty keeps the image's
	Env       []string // KEY=VALUE
	WorkDir   string
	Mounts    []isolation.Mount
	Resources isolation.Limits
	Network   isolation.Network // none by default; miners need host

	// Preemptible lets higher-priority paid work stop this workload, after
	// MinRuntime, with StopSignal and StopGrace to checkpoint. Mining is
	// always preemptible, at once.
	Preemptible bool
	StopSignal  syscall.Signal // default SIGTERM
	StopGrace   time.Duration  // default isolation.DefaultStopGrace
	MinRuntime  time.Duration
	// OnGPULoss says whether a fault of one of its GPUs requeues the
	// workload or fails it.
	OnGPULoss GPULoss

	// PricePerGPUHour is what the customer pays, in the operator's
	// currency; the economic policy and the accounting read it.
	PricePerGPUHour float64
	// External says someone else runs the workload's containers: kubelet,
	// for a Kubernetes resource claim. The manager places the workload,
	// takes its GPUs from their holders with hygiene (miners yield, power
	// and clocks back to defaults), holds them and accounts for them
	// until Cancel, and starts nothing; Image, Command and the other
	// container fields are unused.
	External bool
	// Load is the expected GPU utilisation, 0 to 1, that the workload puts
	// on each of its GPUs; a simulated rig draws power by it. Zero takes
	// the kind's default.
	Load float64

	Labels map[string]string
}

// idPattern is containerd's identifier rule (single separators between
// letters and digits), at most 64 long so that "-<attempt>" still fits.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// Validate reports every problem of the spec at once, in an error wrapping
// ErrInvalid that names the fields.
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if len(s.ID) > 64 || !idPattern.MatchString(s.ID) {
		bad("ID", "%q: want at most 64 letters and digits with single '.', '_' or '-' between them", s.ID)
	}
	if !s.Kind.valid() {
		bad("Kind", "%q: want mining, training, inference or batch", s.Kind)
	}
	g := s.GPUs
	switch {
	case len(g.UUIDs) == 0 && g.Count <= 0:
		bad("GPUs.Count", "%d: a workload needs at least one GPU (or GPUs.UUIDs)", g.Count)
	case len(g.UUIDs) > 0 && g.Count != 0 && g.Count != len(g.UUIDs):
		bad("GPUs.Count", "%d does not match the %d GPUs.UUIDs", g.Count, len(g.UUIDs))
	}
	seen := map[string]bool{}
	for _, u := range g.UUIDs {
		if u == "" || seen[u] {
			bad("GPUs.UUIDs", "%q is empty or listed twice", u)
		}
		seen[u] = true
	}
	if g.MinLink.Gen < 0 || g.MinLink.Width < 0 || g.MinComputeCapability.Major < 0 || g.MinComputeCapability.Minor < 0 {
		bad("GPUs", "negative constraint")
	}
	if s.StopSignal < 0 || s.StopSignal > 64 {
		bad("StopSignal", "%d is not a signal", s.StopSignal)
	}
	if s.MinRuntime < 0 {
		bad("MinRuntime", "%v is negative", s.MinRuntime)
	}
	if s.PricePerGPUHour < 0 {
		bad("PricePerGPUHour", "%v is negative", s.PricePerGPUHour)
	}
	if s.Load < 0 || s.Load > 1 || math.IsNaN(s.Load) {
		bad("Load", "%v: want 0 to 1", s.Load)
	}
	if math.IsNaN(s.PricePerGPUHour) || math.IsInf(s.PricePerGPUHour, 0) {
		bad("PricePerGPUHour", "%v: want a price", s.PricePerGPUHour)
	}
	switch s.OnGPULoss {
	case GPULossDefault, GPULossRequeue, GPULossFail:
	default:
		bad("OnGPULoss", "%q: want %q, %q or empty", s.OnGPULoss, GPULossRequeue, GPULossFail)
	}
	// The container fields (tenant, image, env, mounts, limits, network,
	// labels) are the isolation layer's: check them by its rules now, so
	// nothing is displaced for a spec the runtime would refuse.
	probe := s.containerSpec(fallback(s.ID, "x")+"-1", []isolation.GPU{{Device: "nvidia.com/gpu=0", UUID: "GPU-0"}})
	if s.External && probe.Image == "" {
		probe.Image = "external" // no image: nothing of the node runs
	}
	if err := probe.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil
	}
	return errorf(ErrInvalid, "workload %q: %w", s.ID, errors.Join(errs...))
}

// requeueOnLoss reports whether a fault of the workload's GPU sends it back
// to the queue rather than failing it.
func (s Spec) requeueOnLoss() bool {
	switch s.OnGPULoss {
	case GPULossRequeue:
		return s.Kind.Paid()
	case GPULossFail:
		return false
	}
	return s.Kind.Paid() && s.Preemptible
}

// load is the utilisation the workload puts on each GPU.
func (s Spec) load() float64 {
	if s.Load > 0 {
		return s.Load
	}
	switch s.Kind {
	case KindMining:
		return 0.98 // memory-hard hashing runs flat out
	case KindTraining:
		return 0.9
	case KindInference:
		return 0.5
	default:
		return 0.8
	}
}

// count is the number of GPUs requested.
func (r GPURequest) count() int {
	if len(r.UUIDs) > 0 {
		return len(r.UUIDs)
	}
	return r.Count
}

// clone returns a deep copy, so a stored spec never shares slices with the
// caller's.
func (s Spec) clone() Spec {
	s.GPUs.Models = slices.Clone(s.GPUs.Models)
	s.GPUs.UUIDs = slices.Clone(s.GPUs.UUIDs)
	s.Command = slices.Clone(s.Command)
	s.Env = slices.Clone(s.Env)
	s.Mounts = slices.Clone(s.Mounts)
	s.Labels = maps.Clone(s.Labels)
	return s
}

// containerSpec is the container of one attempt of the workload.
func (s Spec) containerSpec(id string, gpus []isolation.GPU) isolation.Spec {
	return isolation.Spec{
		ID: id, Tenant: s.Tenant, Workload: s.ID, Kind: string(s.Kind),
		Image: s.Image, Args: s.Command, Env: s.Env, WorkingDir: s.WorkDir,
		Limits: s.Resources, Mounts: s.Mounts, Network: s.Network,
		StopSignal: s.StopSignal, StopGrace: s.StopGrace, Labels: s.Labels, GPUs: gpus,
	}
}

func fallback(s, def string) string {
	if idPattern.MatchString(s) {
		return s
	}
	return def
}
