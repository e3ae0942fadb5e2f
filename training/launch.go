package training

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// Plan is what Build makes of a job for this node.
type Plan struct {
	// Spec is ready for workload.Manager.Submit; run it under a Manager
	// that has an Adapter as its AttemptHook and ExitReporter.
	Spec workload.Spec
	// Workers are the processes the launcher starts on this node, in CUDA
	// device order, with the environment each gets from it.
	Workers []Worker
	// Memory is what each GPU needs, when the job gave its Model.
	Memory *gpu.MemoryEstimate
	// Notes say why the launch is as it is: NCCL settings and their
	// reasons, link costs a forced job accepted.
	Notes []string
}

// Worker is one process of the job on this node.
type Worker struct {
	LocalRank int // its GPU: cuda:LocalRank
	Rank      int // in the whole job
	// Env is what the launcher gives it: RANK, LOCAL_RANK, WORLD_SIZE,
	// LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR and MASTER_PORT, the
	// torchrun contract the other launchers follow too.
	Env []string
}

// defaultProgram is each launcher's command.
var defaultProgram = map[LauncherKind][]string{
	Torchrun:   {"torchrun"},
	Accelerate: {"accelerate", "launch"},
	DeepSpeed:  {"deepspeed"},
}

// Build checks the job against the node's GPUs (devs, as
// gpu.Manager.Devices returns them) and makes its workload spec: the
// launcher's command and environment, the checkpoint folder mounted, the
// NCCL settings the GPUs call for, and a GPU request that only GPUs able
// to run it meet. Every problem is reported at once, before anything is
// submitted: ErrInvalid for a malformed job, ErrUnfit when the model does
// not fit the GPUs' memory or their links are too slow for data-parallel
// training (an x1 riser), with the numbers.
func (j Job) Build(devs []gpu.Device) (Plan, error) {
	var p problems
	j.validate(&p)
	if len(devs) == 0 {
		p.bad("no GPUs in the inventory: pass the gpu.Manager.Devices() of the node the job runs on")
	}
	pinned := j.pinned(devs, &p)
	var plan Plan
	var est *gpu.MemoryEstimate
	if j.Model != nil && j.Model.Validate() == nil {
		e, _ := j.Model.Estimate()
		est, plan.Memory = &e, &e
	}
	req, chosen := j.request(devs, pinned, est, &p)
	fab := FabricOf(chosen)
	if j.Fabric != nil {
		fab = *j.Fabric
	}
	cmd, env := j.command()
	env, plan.Notes = j.environment(env, fab, chosen)
	if j.ForceDataParallel && j.dataParallel() {
		if cost := allReduceNote(chosen, j.world(), j.gradientBytes()); cost != "" {
			plan.Notes = append(plan.Notes, "forced data parallel: "+cost)
		}
	}
	cfg := config{
		Role: roleTraining, Launcher: j.Launcher.Kind, Layout: j.Checkpoint.Layout, Marker: j.Checkpoint.Marker,
		HostDir: j.Checkpoint.HostDir, Dir: j.checkpointDir(), Resume: j.resume(),
		Format: j.progressFormat(), Total: j.Progress.TotalSteps,
	}
	if j.Progress.MetricsFile != "" {
		cfg.Metrics, _ = j.hostPath(j.Progress.MetricsFile)
	}
	network := j.Network
	if network == "" && j.nodes() > 1 {
		network = isolation.NetworkHost
	}
	plan.Spec = workload.Spec{
		ID: j.ID, Kind: workload.KindTraining, Tenant: j.Tenant, Priority: j.Priority, GPUs: req,
		Image: j.Image, Command: cmd, Env: env,
		Mounts:    append([]isolation.Mount{{Source: j.Checkpoint.HostDir, Target: j.checkpointDir()}}, j.Mounts...),
		Resources: j.Resources, Network: network,
		Preemptible: j.Preemptible, StopSignal: j.StopSignal, StopGrace: cmp.Or(j.StopGrace, DefaultStopGrace),
		MinRuntime: j.MinRuntime, OnGPULoss: j.OnGPULoss, PricePerGPUHour: j.PricePerGPUHour,
		Labels: cfg.label(j.Labels),
	}
	plan.Workers = j.workers()
	if err := plan.Spec.Validate(); err != nil {
		p.wrapped = append(p.wrapped, err)
	}
	if err := p.err(fmt.Sprintf("training job %q", j.ID)); err != nil {
		return Plan{}, err
	}
	return plan, nil
}

// pinned resolves the job's UUIDs against the inventory.
func (j Job) pinned(devs []gpu.Device, p *problems) []gpu.Device {
	var out []gpu.Device
	for i, u := range j.UUIDs {
		k := slices.IndexFunc(devs, func(d gpu.Device) bool { return d.UUID == u })
		if k < 0 {
			p.bad("UUIDs[%d] %q: no such GPU on this node", i, u)
			continue
		}
		out = append(out, devs[k])
	}
	return out
}

func (j Job) world() int { return j.nodes() * j.gpus() }

// dataParallel reports whether the job exchanges gradients between GPUs.
func (j Job) dataParallel() bool { return j.world() > 1 }

// gradientBytes is the fp16 gradient exchanged each step, or 1 GB when the
// model is not given.
func (j Job) gradientBytes() float64 {
	if j.Model != nil && j.Model.Params > 0 {
		return 2 * j.Model.Params
	}
	return 1e9
}

// command is the container's command and the launcher's environment.
func (j Job) command() (cmd, env []string) {
	l := j.Launcher
	n, g, rank := j.nodes(), j.gpus(), j.Nodes.Rank
	addr, port := j.masterAddr(), strconv.Itoa(j.masterPort())
	prog := l.Program
	if len(prog) == 0 {
		prog = defaultProgram[l.Kind]
	}
	cmd = slices.Clone(prog)
	script := slices.Clone(j.Script)
	switch l.Kind {
	case Torchrun:
		cmd = append(cmd, "--nnodes="+strconv.Itoa(n), "--nproc-per-node="+strconv.Itoa(g), "--node-rank="+strconv.Itoa(rank),
			"--master-addr="+addr, "--master-port="+port, "--max-restarts="+strconv.Itoa(l.MaxRestarts))
	case Accelerate:
		switch {
		case l.DeepSpeedConfig != "":
			cmd = append(cmd, "--use_deepspeed", "--deepspeed_config_file="+l.DeepSpeedConfig)
		case n*g > 1:
			cmd = append(cmd, "--multi_gpu")
		}
		cmd = append(cmd, "--num_processes="+strconv.Itoa(n*g), "--num_machines="+strconv.Itoa(n), "--machine_rank="+strconv.Itoa(rank),
			"--main_process_ip="+addr, "--main_process_port="+port, "--max_restarts="+strconv.Itoa(l.MaxRestarts), "--rdzv_backend=static")
		if n > 1 {
			cmd = append(cmd, "--same_network")
		}
		if l.MixedPrecision != "" {
			cmd = append(cmd, "--mixed_precision="+l.MixedPrecision)
		}
	case DeepSpeed:
		cmd = append(cmd, "--num_nodes="+strconv.Itoa(n), "--num_gpus="+strconv.Itoa(g), "--master_addr="+addr, "--master_port="+port)
		if n > 1 {
			// No ssh between containers: each node runs its own share.
			cmd = append(cmd, "--no_ssh", "--node_rank="+strconv.Itoa(rank))
		}
		if l.DeepSpeedConfig != "" {
			script = append(script, "--deepspeed", "--deepspeed_config", l.DeepSpeedConfig)
		}
	}
	env = []string{"MASTER_ADDR=" + addr, "MASTER_PORT=" + port, "PYTHONUNBUFFERED=1"}
	if c := j.Resources.CPUMillis; c > 0 && g > 0 {
		env = append(env, "OMP_NUM_THREADS="+strconv.FormatInt(max(c/1000/int64(g), 1), 10))
	}
	return append(cmd, script...), env
}

// workers is the environment the launcher gives each process of this node.
func (j Job) workers() []Worker {
	g, rank := j.gpus(), j.Nodes.Rank
	out := make([]Worker, 0, g)
	for local := range g {
		r := rank*g + local
		out = append(out, Worker{LocalRank: local, Rank: r, Env: []string{
			"RANK=" + strconv.Itoa(r), "LOCAL_RANK=" + strconv.Itoa(local), "WORLD_SIZE=" + strconv.Itoa(j.world()),
			"LOCAL_WORLD_SIZE=" + strconv.Itoa(g), "GROUP_RANK=" + strconv.Itoa(rank),
			"MASTER_ADDR=" + j.masterAddr(), "MASTER_PORT=" + strconv.Itoa(j.masterPort()),
		}})
	}
	return out
}

// environment adds the NCCL settings the fabric calls for to the
// launcher's, then the job's own, which win.
func (j Job) environment(env []string, fab Fabric, devs []gpu.Device) ([]string, []string) {
	nccl, notes := ncclDefaults(j.dataParallel(), fab, devs)
	return mergeEnv(append(env, nccl...), j.Env), notes
}

// ncclDefaults are the NCCL settings of a job whose processes talk over
// fab, with the reason of each.
func ncclDefaults(parallel bool, fab Fabric, devs []gpu.Device) (env, notes []string) {
	if !parallel {
		return nil, nil
	}
	if !fab.NVLink && !fab.PeerToPeer {
		env = append(env, "NCCL_P2P_DISABLE=1")
		notes = append(notes, "NCCL_P2P_DISABLE=1: "+p2pWhy(devs))
	}
	if !fab.InfiniBand {
		env = append(env, "NCCL_IB_DISABLE=1")
		notes = append(notes, "NCCL_IB_DISABLE=1: no InfiniBand fabric: NCCL uses sockets between nodes and does not probe for it")
	}
	return env, notes
}

// mergeEnv returns base with over applied: a key of over replaces base's.
func mergeEnv(base, over []string) []string {
	keys := map[string]int{}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range append(slices.Clone(base), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := keys[k]; ok {
			out[i] = kv
			continue
		}
		keys[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// FabricOf says what the inventory tells of how devs are connected. NVML
// reports no NVLink or peer-to-peer status to this SDK yet, so it goes by
// class: GeForce and CMP cards have no PCIe peer-to-peer (the driver
// disables it) and no NVLink; datacenter and workstation cards on links
// of 8 lanes or more do peer-to-peer. InfiniBand is never assumed. Set
// Job.Fabric when the node is known better (an NVLink bridge, a fabric).
func FabricOf(devs []gpu.Device) Fabric {
	f := Fabric{PeerToPeer: len(devs) > 0}
	for _, d := range devs {
		if (d.Class != gpu.ClassDatacenter && d.Class != gpu.ClassWorkstation) || usableLink(d).Width < 8 {
			f.PeerToPeer = false
		}
	}
	return f
}

// p2pWhy says why the GPUs have no peer-to-peer path.
func p2pWhy(devs []gpu.Device) string {
	for _, d := range devs {
		switch {
		case d.Class == gpu.ClassConsumer || d.Class == gpu.ClassMining:
			return fmt.Sprintf("%s is a %s card: no PCIe peer-to-peer and no NVLink, so NCCL goes through host memory", d.Name, d.Class)
		case usableLink(d).Width < 8:
			return fmt.Sprintf("%s runs on %d lanes: peer-to-peer over it would be slower than host memory", d.Name, usableLink(d).Width)
		}
	}
	return "no NVLink or peer-to-peer between the GPUs (Job.Fabric)"
}

// usableLink is the link readiness judges: max generation, trained width.
func usableLink(d gpu.Device) gpu.Link { return gpu.Assess(d, gpu.Health{Healthy: true}).Link }
