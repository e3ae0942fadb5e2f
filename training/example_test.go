package training_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/training/checkpoint"
)

// simDevices is the inventory of a simulated rig.
func simDevices(preset string) []gpu.Device {
	p, _ := sim.PresetByName(preset)
	rig, _ := sim.New(p)
	m, _ := gpu.New(context.Background(), rig)
	defer m.Close()
	return m.Devices()
}

// A LoRA fine-tune of a 7B model with torchrun on two RTX 3090s: the
// command, NCCL told that GeForce cards have no peer-to-peer, and the
// memory each GPU must have.
func ExampleJob_Build() {
	ckpt, _ := os.MkdirTemp("", "ckpt")
	defer os.RemoveAll(ckpt)
	_ = os.Chmod(ckpt, 0o777) // the container runs as nobody

	j := training.Job{
		ID: "ft-42", Tenant: "acme", Image: "registry.example/acme/sft:3", Preemptible: true,
		Launcher:   training.Launcher{Kind: training.Torchrun},
		Script:     []string{"train.py", "--output_dir", "/checkpoints"},
		GPUs:       2,
		Checkpoint: training.Checkpoint{HostDir: ckpt, Layout: checkpoint.LayoutHF},
		Model:      &gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodLoRA, SeqLen: 2048, Batch: 4},
	}
	plan, err := j.Build(simDevices(sim.PresetRTX3090))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.Join(plan.Spec.Command, " "))
	for _, kv := range plan.Spec.Env {
		if strings.HasPrefix(kv, "NCCL_") {
			fmt.Println(kv)
		}
	}
	fmt.Printf("each GPU needs %.1f GiB; worker 1 gets %v\n", float64(plan.Spec.GPUs.MinMemoryBytes)/(1<<30), plan.Workers[1].Env[:4])
	// Output:
	// torchrun --nnodes=1 --nproc-per-node=2 --node-rank=0 --master-addr=127.0.0.1 --master-port=29500 --max-restarts=0 train.py --output_dir /checkpoints
	// NCCL_P2P_DISABLE=1
	// NCCL_IB_DISABLE=1
	// each GPU needs 19.2 GiB; worker 1 gets [RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2]
}

// Data-parallel training on ex-mining RTX 3080s on x1 risers is refused,
// with what it would cost; the same cards serve a 4-bit 7B model, with the
// context length the memory fit allows.
func ExampleServer_Build() {
	risers := simDevices(sim.PresetRTX3080Riser)
	ckpt, _ := os.MkdirTemp("", "ckpt")
	defer os.RemoveAll(ckpt)
	_ = os.Chmod(ckpt, 0o777)
	_, err := training.Job{
		ID: "ft-43", Tenant: "acme", Image: "registry.example/acme/sft:3",
		Launcher: training.Launcher{Kind: training.Torchrun}, Script: []string{"train.py"}, GPUs: 4,
		Checkpoint: training.Checkpoint{HostDir: ckpt, Layout: checkpoint.LayoutHF},
	}.Build(risers)
	_, reason, _ := strings.Cut(err.Error(), "(NVIDIA GeForce RTX 3080): ")
	fmt.Println(strings.Split(reason, "; set ")[0])

	plan, err := training.Server{
		ID: "chat-7b", Tenant: "acme", Image: "vllm/vllm-openai:v0.6.3", Kind: training.VLLM,
		Model: "/models/llama-2-7b-awq", GPUs: 1, Need: gpu.MemoryNeed{Params: 7e9, Precision: gpu.PrecisionINT4, SeqLen: 4096},
	}.Build(risers)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.Join(plan.Spec.Command, " "))
	fmt.Println("network", plan.Spec.Network, "health", plan.HealthURL)
	// Output:
	// host link gen1 x1, 0.25 GB/s, below the 7.5 GB/s data-parallel training needs: a ring all-reduce of 1.0 GB of fp16 gradients across 4 GPUs at 0.25 GB/s takes 6.0 s a step
	// /models/llama-2-7b-awq --host 0.0.0.0 --port 8000 --tensor-parallel-size 1 --gpu-memory-utilization 0.9 --max-model-len 4096
	// network bridge health http://127.0.0.1:8000/health
}

// How a training container ended, from its exit code and log tail.
func ExampleClassifyExit() {
	v := training.ClassifyExit(training.ExitInput{
		Exit: nil, Checkpointing: true,
	})
	fmt.Println(v.Class)
	log := []byte("[rank0]:[E321 02:07:08.408271257 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1580, OpType=ALLREDUCE, NumelIn=466119168, NumelOut=466119168, Timeout(ms)=600000) ran for 600060 milliseconds before timing out.\n")
	v = training.ClassifyExit(training.ExitInput{Exit: exitCode(1), Checkpointing: true, Log: log})
	fmt.Println(v.Class)
	// Output:
	// failed
	// nccl-failure
}

func exitCode(code int) *isolation.ExitStatus {
	return &isolation.ExitStatus{Code: code, Reason: isolation.ReasonExited}
}
