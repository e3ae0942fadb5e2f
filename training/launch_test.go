package training_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/workload"
)

func job(t testing.TB, kind training.LauncherKind, gpus int) training.Job {
	return training.Job{
		ID: "ft-1", Tenant: "acme", Image: "registry.example/acme/train:1", Priority: 2, PricePerGPUHour: 0.4,
		Launcher: training.Launcher{Kind: kind}, Script: []string{"train.py", "--epochs", "3"}, GPUs: gpus,
		Checkpoint: training.Checkpoint{HostDir: ckptDir(t), Layout: checkpoint.LayoutHF}, Preemptible: true,
	}
}

func env(spec workload.Spec, key string) (string, bool) {
	for _, kv := range spec.Env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// TestLaunchCommands: each launcher's command and environment for one
// node and for a node's share of a job on several.
func TestLaunchCommands(t *testing.T) {
	a40 := devices(t, sim.PresetA40)
	tests := []struct {
		name    string
		edit    func(j *training.Job)
		command []string
		network isolation.Network
	}{
		{"torchrun, one node", func(j *training.Job) {},
			[]string{"torchrun", "--nnodes=1", "--nproc-per-node=2", "--node-rank=0", "--master-addr=127.0.0.1", "--master-port=29500", "--max-restarts=0", "train.py", "--epochs", "3"}, ""},
		{"torchrun, node 1 of 2", func(j *training.Job) {
			j.Nodes = training.Nodes{Count: 2, Rank: 1, MasterAddr: "10.0.0.1", MasterPort: 29400}
			j.Launcher.MaxRestarts = 3
		}, []string{"torchrun", "--nnodes=2", "--nproc-per-node=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29400", "--max-restarts=3", "train.py", "--epochs", "3"}, isolation.NetworkHost},
		{"accelerate, one node, bf16", func(j *training.Job) {
			j.Launcher = training.Launcher{Kind: training.Accelerate, MixedPrecision: "bf16"}
		}, []string{"accelerate", "launch", "--multi_gpu", "--num_processes=2", "--num_machines=1", "--machine_rank=0", "--main_process_ip=127.0.0.1",
			"--main_process_port=29500", "--max_restarts=0", "--rdzv_backend=static", "--mixed_precision=bf16", "train.py", "--epochs", "3"}, ""},
		{"accelerate with DeepSpeed, node 0 of 2", func(j *training.Job) {
			j.Launcher = training.Launcher{Kind: training.Accelerate, DeepSpeedConfig: "/cfg/ds.json"}
			j.Nodes = training.Nodes{Count: 2, MasterAddr: "10.0.0.1"}
		}, []string{"accelerate", "launch", "--use_deepspeed", "--deepspeed_config_file=/cfg/ds.json", "--num_processes=4", "--num_machines=2", "--machine_rank=0",
			"--main_process_ip=10.0.0.1", "--main_process_port=29500", "--max_restarts=0", "--rdzv_backend=static", "--same_network", "train.py", "--epochs", "3"}, isolation.NetworkHost},
		{"deepspeed, one node", func(j *training.Job) {
			j.Launcher = training.Launcher{Kind: training.DeepSpeed, DeepSpeedConfig: "/cfg/ds.json"}
		}, []string{"deepspeed", "--num_nodes=1", "--num_gpus=2", "--master_addr=127.0.0.1", "--master_port=29500",
			"train.py", "--epochs", "3", "--deepspeed", "--deepspeed_config", "/cfg/ds.json"}, ""},
		{"deepspeed, node 1 of 2 without ssh", func(j *training.Job) {
			j.Launcher = training.Launcher{Kind: training.DeepSpeed}
			j.Nodes = training.Nodes{Count: 2, Rank: 1, MasterAddr: "10.0.0.1"}
		}, []string{"deepspeed", "--num_nodes=2", "--num_gpus=2", "--master_addr=10.0.0.1", "--master_port=29500", "--no_ssh", "--node_rank=1",
			"train.py", "--epochs", "3"}, isolation.NetworkHost},
		{"own program", func(j *training.Job) {
			j.Launcher.Program = []string{"python", "-m", "torch.distributed.run"}
			j.GPUs = 1
		}, []string{"python", "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=1", "--node-rank=0", "--master-addr=127.0.0.1", "--master-port=29500", "--max-restarts=0", "train.py", "--epochs", "3"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := job(t, training.Torchrun, 2)
			tt.edit(&j)
			plan, err := j.Build(a40)
			require.NoError(t, err)
			s := plan.Spec
			assert.Equal(t, tt.command, s.Command)
			assert.Equal(t, tt.network, s.Network)
			addr, _ := env(s, "MASTER_ADDR")
			port, _ := env(s, "MASTER_PORT")
			assert.Contains(t, strings.Join(s.Command, " "), "="+addr+" ", "MASTER_ADDR is the command's")
			assert.Contains(t, strings.Join(s.Command, " "), "="+port+" ", "MASTER_PORT is the command's")
			v, _ := env(s, "PYTHONUNBUFFERED")
			assert.Equal(t, "1", v, "progress lines reach the log as they are printed")
			assert.Equal(t, workload.KindTraining, s.Kind)
			assert.True(t, s.Preemptible)
			assert.Equal(t, training.DefaultStopGrace, s.StopGrace)
			assert.Equal(t, []isolation.Mount{{Source: j.Checkpoint.HostDir, Target: training.DefaultCheckpointDir}}, s.Mounts)
			assert.Contains(t, s.Labels, training.LabelConfig)
			require.NoError(t, s.Validate())
		})
	}
}

// TestWorkers: the environment each process gets follows the torchrun
// contract, ranks continuing across nodes.
func TestWorkers(t *testing.T) {
	j := job(t, training.Torchrun, 2)
	j.Nodes = training.Nodes{Count: 3, Rank: 2, MasterAddr: "10.0.0.1"}
	j.WorldSize = 6
	plan, err := j.Build(devices(t, sim.PresetA40))
	require.NoError(t, err)
	require.Len(t, plan.Workers, 2)
	assert.Equal(t, training.Worker{LocalRank: 1, Rank: 5, Env: []string{
		"RANK=5", "LOCAL_RANK=1", "WORLD_SIZE=6", "LOCAL_WORLD_SIZE=2", "GROUP_RANK=2", "MASTER_ADDR=10.0.0.1", "MASTER_PORT=29500"}}, plan.Workers[1])
}

// TestNCCLFromInventory: consumer cards have no peer-to-peer, so NCCL is
// told; datacenter cards keep it; nobody has InfiniBand unless told; the
// job's own settings win.
func TestNCCLFromInventory(t *testing.T) {
	tests := []struct {
		name           string
		preset         string
		edit           func(j *training.Job)
		p2pOff, ibOff  string
		noteContaining string
	}{
		{"RTX 3090s", sim.PresetRTX3090, func(*training.Job) {}, "1", "1", "NVIDIA GeForce RTX 3090 is a consumer card: no PCIe peer-to-peer"},
		{"A40s", sim.PresetA40, func(*training.Job) {}, "", "1", "NCCL_IB_DISABLE=1"},
		{"an NVLink bridge and InfiniBand", sim.PresetRTX3090, func(j *training.Job) { j.Fabric = &training.Fabric{NVLink: true, InfiniBand: true} }, "", "", ""},
		{"the job's own setting wins", sim.PresetRTX3090, func(j *training.Job) { j.Env = []string{"NCCL_P2P_DISABLE=0", "NCCL_DEBUG=INFO"} }, "0", "1", ""},
		{"one GPU talks to nobody", sim.PresetRTX3090, func(j *training.Job) { j.GPUs = 1 }, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := job(t, training.Torchrun, 2)
			tt.edit(&j)
			plan, err := j.Build(devices(t, tt.preset))
			require.NoError(t, err)
			p2p, _ := env(plan.Spec, "NCCL_P2P_DISABLE")
			ib, _ := env(plan.Spec, "NCCL_IB_DISABLE")
			assert.Equal(t, tt.p2pOff, p2p)
			assert.Equal(t, tt.ibOff, ib)
			if tt.noteContaining != "" {
				assert.Contains(t, strings.Join(plan.Notes, "\n"), tt.noteContaining)
			}
		})
	}
	assert.Equal(t, training.Fabric{PeerToPeer: true}, training.FabricOf(devices(t, sim.PresetA40)))
	assert.Equal(t, training.Fabric{}, training.FabricOf(devices(t, sim.PresetRTX3080Riser)))
}

// TestRisersRefuseDataParallel: two RTX 3080s on x1 risers are refused
// for data-parallel training, with the link and what an all-reduce would
// cost; forced, the job runs and the plan says the cost.
func TestRisersRefuseDataParallel(t *testing.T) {
	risers := devices(t, sim.PresetRTX3080Riser)
	j := job(t, training.Torchrun, 2)
	j.Model = &gpu.MemoryNeed{Params: 1e9, Method: gpu.MethodLoRA}
	_, err := j.Build(risers)
	require.ErrorIs(t, err, training.ErrUnfit)
	require.ErrorIs(t, err, workload.ErrUnplaceable)
	msg := err.Error()
	for _, want := range []string{
		"the job needs 2 GPUs, 0 of this node's 8 can run it",
		"GPUs 0, 1, 2, 3, 4, 5, 6, 7 (NVIDIA GeForce RTX 3080)",
		"host link gen1 x1, 0.25 GB/s, below the 7.5 GB/s data-parallel training needs",
		"a ring all-reduce of 2.0 GB of fp16 gradients across 2 GPUs at 0.25 GB/s takes 8.0 s a step",
		"set ForceDataParallel",
	} {
		assert.Contains(t, msg, want)
	}

	j.ForceDataParallel = true
	plan, err := j.Build(risers)
	require.NoError(t, err)
	assert.True(t, plan.Spec.GPUs.IgnoreReadiness)
	assert.Equal(t, gpu.Link{}, plan.Spec.GPUs.MinLink)
	assert.Contains(t, strings.Join(plan.Notes, "\n"), "forced data parallel: a ring all-reduce of 2.0 GB")

	// Pinned by a control plane: the same refusal names the GPU.
	j = job(t, training.Torchrun, 0)
	j.UUIDs = []string{risers[3].UUID, risers[5].UUID}
	_, err = j.Build(risers)
	require.ErrorIs(t, err, training.ErrUnfit)
	assert.Contains(t, err.Error(), "GPU 3 "+risers[3].UUID+" (NVIDIA GeForce RTX 3080): host link gen1 x1")
}

// TestRequestFromMemoryFit: the memory need becomes the GPU request; data
// parallel asks for links that allow it; one QLoRA GPU may be a card
// readiness rates for inference.
func TestRequestFromMemoryFit(t *testing.T) {
	j := job(t, training.Torchrun, 2)
	j.Model = &gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodLoRA, SeqLen: 2048, Batch: 4}
	plan, err := j.Build(devices(t, sim.PresetA40))
	require.NoError(t, err)
	require.NotNil(t, plan.Memory)
	e, _ := j.Model.Estimate()
	assert.Equal(t, e, *plan.Memory)
	assert.Equal(t, e.PerGPUBytes, plan.Spec.GPUs.MinMemoryBytes)
	assert.Equal(t, gpu.Link{Gen: 3, Width: 8}, plan.Spec.GPUs.MinLink)
	assert.False(t, plan.Spec.GPUs.IgnoreReadiness)

	q := job(t, training.Torchrun, 1)
	q.Model = &gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodQLoRA, Precision: gpu.PrecisionINT4, SeqLen: 1024, Batch: 1}
	plan, err = q.Build(devices(t, sim.PresetRTX3080Riser))
	require.NoError(t, err, "readiness admits single-GPU QLoRA on inference cards")
	assert.True(t, plan.Spec.GPUs.IgnoreReadiness)
	assert.Equal(t, gpu.ComputeCapability{Major: 7}, plan.Spec.GPUs.MinComputeCapability)
	assert.Equal(t, gpu.Link{}, plan.Spec.GPUs.MinLink)
}

// TestBadInput: every problem at once, before anything is displaced.
func TestBadInput(t *testing.T) {
	a40 := devices(t, sim.PresetA40)
	locked := t.TempDir()
	require.NoError(t, os.Chmod(locked, 0o755)) // root's, not writable for nobody
	notDir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notDir, nil, 0o644))
	tests := []struct {
		name string
		edit func(j *training.Job)
		is   error
		want []string
	}{
		{"zero GPUs", func(j *training.Job) { j.GPUs = 0 }, training.ErrInvalid, []string{"GPUs 0: a training job needs at least one GPU"}},
		{"checkpoint folder not writable", func(j *training.Job) { j.Checkpoint.HostDir = locked }, training.ErrInvalid,
			[]string{"Checkpoint.HostDir", "the container's user (uid 65534) cannot write it (mode -rwxr-xr-x, owner 0:0): chown it to 65534:65534 or make it writable"}},
		{"checkpoint folder missing or a file", func(j *training.Job) { j.Checkpoint.HostDir = notDir }, training.ErrInvalid, []string{"not a folder"}},
		{"unknown launcher", func(j *training.Job) { j.Launcher.Kind = "horovodrun" }, training.ErrInvalid,
			[]string{`Launcher.Kind "horovodrun": want one of [torchrun accelerate deepspeed]`}},
		{"world size that does not match", func(j *training.Job) { j.WorldSize = 8 }, training.ErrInvalid,
			[]string{"WorldSize 8 does not match 1 nodes x 2 GPUs = 2 processes"}},
		{"model that does not fit, with the numbers", func(j *training.Job) {
			j.Model = &gpu.MemoryNeed{Params: 13e9, Method: gpu.MethodFullFineTune, SeqLen: 2048, Batch: 1}
		}, training.ErrUnfit, []string{
			"the job needs 2 GPUs, 0 of this node's 8 can run it: GPUs 0, 1, 2, 3, 4, 5, 6, 7 (NVIDIA A40): 45.0 GiB of memory; a 13B fp16 full fine-tune at 2048 tokens x 1 sequences needs 196.3 GiB per GPU (1.0 GiB context, 193.7 GiB model state, 1.6 GiB activations)",
			"LoRA would need 26.8 GiB (fits), QLoRA would need 9.3 GiB (fits)"}},
		{"GPU not on the node", func(j *training.Job) { j.GPUs, j.UUIDs = 0, []string{a40[0].UUID, "GPU-gone"} }, training.ErrInvalid,
			[]string{`UUIDs[1] "GPU-gone": no such GPU on this node`}},
		{"several at once, and the workload's own rules", func(j *training.Job) {
			j.GPUs, j.Script, j.Tenant, j.Checkpoint.Layout = -1, nil, "", "orbax"
			j.Nodes = training.Nodes{Count: 2}
			j.StopSignal = syscall.Signal(99)
		}, training.ErrInvalid, []string{"GPUs -1", "Script: empty", `layout "orbax"`, "Nodes.MasterAddr: empty: a job on 2 nodes needs node 0's address", "StopSignal 99", "spec.Tenant is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := job(t, training.Torchrun, 2)
			tt.edit(&j)
			_, err := j.Build(a40)
			require.ErrorIs(t, err, tt.is)
			require.ErrorIs(t, err, gpu.ErrInvalid, "also a gpu category")
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			if errors.Is(tt.is, training.ErrInvalid) {
				assert.NotErrorIs(t, err, training.ErrUnfit)
			}
		})
	}
	_, err := job(t, training.Torchrun, 1).Build(nil)
	require.ErrorIs(t, err, training.ErrInvalid)
	assert.Contains(t, err.Error(), "no GPUs in the inventory")
}
