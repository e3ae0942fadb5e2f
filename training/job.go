package training

import (
	"cmp"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/training/progress"
	"github.com/gpufarm/gpufarm/workload"
)

// Defaults of a Job.
const (
	// DefaultCheckpointDir is where the checkpoint folder is mounted in the
	// container.
	DefaultCheckpointDir = "/checkpoints"
	// DefaultStopGrace is a training job's time to checkpoint after its
	// stop signal. A grace must cover the longest step plus a save; the
	// Kubernetes default of 30 s is often too short for that.
	DefaultStopGrace = 2 * time.Minute
	// DefaultMasterPort is the rendezvous port torchrun, Accelerate and
	// DeepSpeed default to.
	DefaultMasterPort = 29500
)

// LauncherKind names a distributed launcher.
type LauncherKind string

const (
	Torchrun   LauncherKind = "torchrun"   // torch.distributed.run
	Accelerate LauncherKind = "accelerate" // accelerate launch
	DeepSpeed  LauncherKind = "deepspeed"  // the deepspeed launcher
)

// LauncherKinds lists the known launchers.
var LauncherKinds = []LauncherKind{Torchrun, Accelerate, DeepSpeed}

// Launcher starts one process per GPU of a node and wires them into one
// job. Its zero value is not usable: set Kind.
type Launcher struct {
	Kind LauncherKind
	// Program is the launcher's command; by default "torchrun",
	// "accelerate launch" or "deepspeed". Set it to what the image has,
	// e.g. {"python", "-m", "torch.distributed.run"}.
	Program []string
	// MaxRestarts lets torchrun and Accelerate restart the workers of a
	// node that failed (default 0: a failure ends the container and the
	// manager's retry and checkpoint contract takes over).
	MaxRestarts int
	// MixedPrecision is Accelerate's --mixed_precision: no, fp16, bf16 or
	// fp8; empty leaves the script's choice.
	MixedPrecision string
	// DeepSpeedConfig is the path of a DeepSpeed config file in the
	// container: Accelerate gets --use_deepspeed with it, a DeepSpeed
	// script --deepspeed --deepspeed_config after its own arguments.
	DeepSpeedConfig string
}

// Nodes places one job on several nodes, each running this node's share:
// a control plane builds the Job once per node with its Rank.
type Nodes struct {
	// Count is the number of nodes; 0 or 1 is a job of this node only.
	Count int
	// Rank is this node's place, 0 to Count-1; node 0 hosts the
	// rendezvous.
	Rank int
	// MasterAddr is node 0's address, which the others reach;
	// 127.0.0.1 for one node.
	MasterAddr string
	// MasterPort is the rendezvous port; DefaultMasterPort when 0.
	MasterPort int
}

// Checkpoint is a job's checkpoint folder: kept on the host across
// attempts and mounted into every container of the job.
type Checkpoint struct {
	// HostDir is the folder on the host. It must exist and be writable by
	// the container's user (nobody, 65534).
	HostDir string
	// Dir is where it is mounted in the container; DefaultCheckpointDir
	// when empty. The script must save there.
	Dir string
	// Layout is how the framework lays out its checkpoints.
	Layout checkpoint.Layout
	// Marker is the marker file of checkpoint.LayoutMarker.
	Marker string
	// Resume is the arguments a restarted attempt gets after the script's
	// own, naming the newest complete checkpoint. {path} is its path in
	// the container, {dir} the checkpoint folder's, {name} its name in
	// the folder (a DeepSpeed tag) and {step} its step. When empty:
	//
	//	hf         --resume_from_checkpoint {path}
	//	lightning  --ckpt_path {path}
	//	deepspeed  --load_dir {dir} --ckpt_id {name}
	//	marker     --resume {path}
	Resume []string
}

// DefaultResume is the resume arguments of each layout (see
// Checkpoint.Resume).
var DefaultResume = map[checkpoint.Layout][]string{
	checkpoint.LayoutHF:        {"--resume_from_checkpoint", "{path}"},
	checkpoint.LayoutLightning: {"--ckpt_path", "{path}"},
	checkpoint.LayoutDeepSpeed: {"--load_dir", "{dir}", "--ckpt_id", "{name}"},
	checkpoint.LayoutMarker:    {"--resume", "{path}"},
}

// Progress says where a job's progress is read.
type Progress struct {
	// Format is the format of its log; by default the one its checkpoint
	// layout's framework prints (hf for the marker layout). With
	// MetricsFile, the file is read instead, as JSON lines.
	Format progress.Format
	// MetricsFile is a JSON-lines metrics file the job writes, as a path
	// in the container inside the checkpoint folder or another mount.
	MetricsFile string
	// TotalSteps is the run's length when its output does not say it
	// (DeepSpeed), for the time left.
	TotalSteps int
}

// Fabric is how a node's GPUs talk to each other and to other nodes.
type Fabric struct {
	NVLink     bool // GPUs joined by NVLink (or an NVLink bridge)
	PeerToPeer bool // PCIe peer-to-peer between the GPUs works
	InfiniBand bool // an InfiniBand or RoCE fabric reaches the other nodes
}

// Job is a training job, or one node's share of a job on several nodes.
type Job struct {
	ID       string
	Tenant   string
	Image    string
	Priority int
	// PricePerGPUHour is what the customer pays per GPU-hour.
	PricePerGPUHour float64

	Launcher Launcher
	// Script is the training program and its arguments, which the
	// launcher runs once per GPU: {"train.py", "--epochs", "3"}.
	Script []string

	// GPUs is the number of GPUs on this node, one process each.
	GPUs int
	// UUIDs pins the job to these GPUs, in this order (a control plane
	// placed it); GPUs is then their number, or 0.
	UUIDs []string
	// Nodes spreads the job over several nodes; zero for one node.
	Nodes Nodes
	// WorldSize, when set, is checked against nodes times GPUs.
	WorldSize int

	Checkpoint Checkpoint
	Progress   Progress
	// Model, when set, gives the memory each GPU must have (see
	// gpu.MemoryNeed); a model that does not fit is refused before
	// anything is displaced.
	Model *gpu.MemoryNeed

	// ForceDataParallel runs data-parallel training on GPUs whose host
	// link readiness rates too slow for it (x1 risers), which is refused
	// by default.
	ForceDataParallel bool
	// Fabric says how the GPUs are connected; nil takes it from the
	// inventory (see FabricOf).
	Fabric *Fabric

	Env       []string // KEY=VALUE; they win over the launcher's defaults
	Mounts    []isolation.Mount
	Resources isolation.Limits
	// Network is the container's network; a job on several nodes needs
	// the host's (the tenant's policy must allow it), and gets it by
	// default.
	Network isolation.Network

	Preemptible bool
	// StopSignal is what preemption sends first: SIGTERM by default;
	// SIGUSR1 for PyTorch Lightning's requeue handler (which ignores
	// SIGTERM when auto-requeue is on).
	StopSignal syscall.Signal
	// StopGrace is the time from the signal to the kill; DefaultStopGrace
	// when 0.
	StopGrace  time.Duration
	MinRuntime time.Duration
	OnGPULoss  workload.GPULoss
	Labels     map[string]string
}

// nodes is the number of nodes of the job.
func (j Job) nodes() int { return max(j.Nodes.Count, 1) }

// gpus is the number of GPUs of this node's share.
func (j Job) gpus() int {
	if len(j.UUIDs) > 0 {
		return len(j.UUIDs)
	}
	return max(j.GPUs, 0)
}

func (j Job) masterAddr() string {
	if j.nodes() == 1 {
		return cmp.Or(j.Nodes.MasterAddr, "127.0.0.1")
	}
	return j.Nodes.MasterAddr
}

func (j Job) masterPort() int { return cmp.Or(j.Nodes.MasterPort, DefaultMasterPort) }

func (j Job) checkpointDir() string { return cmp.Or(j.Checkpoint.Dir, DefaultCheckpointDir) }

func (j Job) progressFormat() progress.Format {
	switch {
	case j.Progress.Format != "":
		return j.Progress.Format
	case j.Progress.MetricsFile != "":
		return progress.FormatJSONLines
	case j.Checkpoint.Layout == checkpoint.LayoutLightning:
		return progress.FormatLightning
	case j.Checkpoint.Layout == checkpoint.LayoutDeepSpeed:
		return progress.FormatDeepSpeed
	}
	return progress.FormatHF
}

func (j Job) resume() []string {
	if len(j.Checkpoint.Resume) > 0 {
		return j.Checkpoint.Resume
	}
	return DefaultResume[j.Checkpoint.Layout]
}

// containerUID is the user every workload container runs as
// (isolation.DefaultUser): a workload.Spec sets no other.
const containerUID, containerGID = 65534, 65534

// validate checks the job's own fields, each problem once.
func (j Job) validate(p *problems) {
	if !slices.Contains(LauncherKinds, j.Launcher.Kind) {
		p.bad("Launcher.Kind %q: want one of %v", j.Launcher.Kind, LauncherKinds)
	}
	if j.Launcher.MaxRestarts < 0 {
		p.bad("Launcher.MaxRestarts %d: want 0 or more", j.Launcher.MaxRestarts)
	}
	switch j.Launcher.MixedPrecision {
	case "", "no", "fp16", "bf16", "fp8":
	default:
		p.bad("Launcher.MixedPrecision %q: want no, fp16, bf16 or fp8", j.Launcher.MixedPrecision)
	}
	if len(j.Script) == 0 || j.Script[0] == "" {
		p.bad("Script: empty: give the training program and its arguments, e.g. {\"train.py\", \"--epochs\", \"3\"}")
	}
	p.gpus(j.GPUs, j.UUIDs, "a training job")
	n := j.Nodes
	switch {
	case n.Count < 0:
		p.bad("Nodes.Count %d: want 0 or 1 for one node, or the number of nodes", n.Count)
	case n.Count > 1 && n.MasterAddr == "":
		p.bad("Nodes.MasterAddr: empty: a job on %d nodes needs node 0's address", n.Count)
	}
	if n.Rank < 0 || n.Rank >= j.nodes() {
		p.bad("Nodes.Rank %d: want 0 to %d", n.Rank, j.nodes()-1)
	}
	if n.MasterPort < 0 || n.MasterPort > 65535 {
		p.bad("Nodes.MasterPort %d: want a port, 1 to 65535, or 0 for %d", n.MasterPort, DefaultMasterPort)
	}
	if g := j.gpus(); j.WorldSize != 0 && g > 0 && j.WorldSize != j.nodes()*g {
		p.bad("WorldSize %d does not match %d nodes x %d GPUs = %d processes", j.WorldSize, j.nodes(), g, j.nodes()*g)
	}
	j.validateCheckpoint(p)
	if !slices.Contains(progress.Formats, j.progressFormat()) {
		p.bad("Progress.Format %q: want one of %v", j.Progress.Format, progress.Formats)
	}
	if j.Progress.TotalSteps < 0 {
		p.bad("Progress.TotalSteps %d: want 0 (unknown) or more", j.Progress.TotalSteps)
	}
	if j.StopSignal < 0 || j.StopSignal > 64 {
		p.bad("StopSignal %d is not a signal", j.StopSignal)
	}
	if j.StopGrace < 0 {
		p.bad("StopGrace %v is negative", j.StopGrace)
	}
	if j.Model != nil {
		if err := j.Model.Validate(); err != nil {
			p.bad("Model: %v", strings.TrimPrefix(err.Error(), gpu.ErrInvalid.Error()+": "))
		}
	}
}

func (j Job) validateCheckpoint(p *problems) {
	c := j.Checkpoint
	if err := (checkpoint.Finder{Layout: c.Layout, Marker: c.Marker}).Validate(); err != nil {
		p.bad("Checkpoint: %v", strings.TrimPrefix(err.Error(), checkpoint.ErrInvalid.Error()+": "))
	}
	if !path.IsAbs(j.checkpointDir()) {
		p.bad("Checkpoint.Dir %q: want an absolute path in the container", c.Dir)
	}
	if err := writable(c.HostDir); err != nil {
		p.bad("Checkpoint.HostDir %q: %v", c.HostDir, err)
	}
	if len(c.Resume) > 0 && !slices.ContainsFunc(c.Resume, func(a string) bool { return strings.Contains(a, "{") }) {
		p.bad("Checkpoint.Resume %q names no checkpoint: use {path}, {dir}, {name} or {step}", c.Resume)
	}
	if mf := j.Progress.MetricsFile; mf != "" {
		if _, ok := j.hostPath(mf); !ok {
			p.bad("Progress.MetricsFile %q: not in the checkpoint folder (%s) or a mount: the node cannot read it", mf, j.checkpointDir())
		}
	}
}

// hostPath maps a path in the container to the host through the
// checkpoint folder and the mounts.
func (j Job) hostPath(inContainer string) (string, bool) {
	mounts := append([]isolation.Mount{{Source: j.Checkpoint.HostDir, Target: j.checkpointDir()}}, j.Mounts...)
	for _, m := range mounts {
		rel, err := filepath.Rel(path.Clean(m.Target), path.Clean(inContainer))
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && m.Source != "" {
			return filepath.Join(m.Source, rel), true
		}
	}
	return "", false
}

// writable checks that the container's user can create files in dir.
func writable(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("want an absolute folder on the host")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%v: create it before the job", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("not a folder")
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // no owner to check against
	}
	mode := fi.Mode().Perm()
	var bits os.FileMode
	switch {
	case st.Uid == containerUID:
		bits = mode >> 6
	case st.Gid == containerGID:
		bits = mode >> 3
	default:
		bits = mode
	}
	if bits&3 != 3 {
		return fmt.Errorf("the container's user (uid %d) cannot write it (mode %v, owner %d:%d): chown it to %d:%d or make it writable",
			containerUID, mode, st.Uid, st.Gid, containerUID, containerGID)
	}
	return nil
}
