package training_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/workload"
)

func server(kind training.ServerKind, gpus int, need gpu.MemoryNeed) training.Server {
	return training.Server{ID: "chat-1", Tenant: "acme", Image: "vllm/vllm-openai:v0.6.3", Kind: kind, Model: "/models/llama-7b-awq",
		GPUs: gpus, Need: need, PricePerGPUHour: 0.2}
}

// TestServeOnRisers: a 4-bit 7B model on one RTX 3080 of a riser rig, the
// card readiness sends to inference: the context length is what fits
// beside the weights in 90% of its 10 GiB.
func TestServeOnRisers(t *testing.T) {
	risers := devices(t, sim.PresetRTX3080Riser)
	need := gpu.MemoryNeed{Params: 7e9, Precision: gpu.PrecisionINT4}
	plan, err := server(training.VLLM, 1, need).Build(risers)
	require.NoError(t, err)
	budget := uint64(float64(risers[0].MemoryBytes) * 0.9)
	want, _ := gpu.MemoryNeed{Params: 7e9, Precision: gpu.PrecisionINT4, Method: gpu.MethodInference, Shards: 1, Batch: 1}.MaxSeqLen(budget)
	assert.Equal(t, want, plan.MaxModelLen)
	assert.Greater(t, plan.MaxModelLen, 4096, "a 4-bit 7B leaves room for a long context on 10 GiB")
	assert.Equal(t, []string{"/models/llama-7b-awq", "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1",
		"--gpu-memory-utilization", "0.9", "--max-model-len", strconv.Itoa(want)}, plan.Spec.Command,
		"on the tenant network it listens where the host reaches it")
	assert.Equal(t, "http://127.0.0.1:8000/health", plan.HealthURL)
	s := plan.Spec
	assert.Equal(t, workload.KindInference, s.Kind)
	assert.Equal(t, isolation.NetworkBridge, s.Network, "the default policy allows it")
	pol := isolation.DefaultTenancy(isolation.DefaultMiningTenant).For("acme")
	require.NoError(t, pol.Check(pol.Apply(isolation.Spec{ID: s.ID, Tenant: "acme", Kind: string(s.Kind), Network: s.Network, Image: s.Image})))
	assert.LessOrEqual(t, s.GPUs.MinMemoryBytes, risers[0].MemoryBytes, "the riser cards qualify")
	assert.Greater(t, s.GPUs.MinMemoryBytes, plan.Memory.PerGPUBytes)
	assert.False(t, s.GPUs.IgnoreReadiness, "readiness admits these cards for inference")
	require.NoError(t, s.Validate())
}

func TestServeCommands(t *testing.T) {
	tests := []struct {
		name    string
		preset  string
		srv     training.Server
		command []string
		p2pOff  bool
		health  string
	}{
		{"vLLM tensor parallel over two RTX 3090s, capped by the model's context", sim.PresetRTX3090,
			func() training.Server {
				s := server(training.VLLM, 2, gpu.MemoryNeed{Params: 13e9, SeqLen: 4096})
				s.Host, s.Port, s.Args = "0.0.0.0", 8081, []string{"--enable-prefix-caching"}
				return s
			}(),
			[]string{"/models/llama-7b-awq", "--host", "0.0.0.0", "--port", "8081", "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.9", "--max-model-len", "4096", "--enable-prefix-caching"},
			true, "http://127.0.0.1:8081/health"},
		{"TGI with the context asked for", sim.PresetA40,
			func() training.Server {
				s := server(training.TGI, 1, gpu.MemoryNeed{Params: 7e9})
				s.MaxModelLen, s.MemoryUtilization = 8192, 0.8
				s.Network = isolation.NetworkHost // on the host's ports: loopback only
				return s
			}(),
			[]string{"--model-id", "/models/llama-7b-awq", "--hostname", "127.0.0.1", "--port", "8000", "--num-shard", "1", "--cuda-memory-fraction", "0.8",
				"--max-total-tokens", "8192", "--max-input-tokens", "6144"},
			false, "http://127.0.0.1:8000/health"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := tt.srv.Build(devices(t, tt.preset))
			require.NoError(t, err)
			assert.Equal(t, tt.command, plan.Spec.Command)
			_, off := env(plan.Spec, "NCCL_P2P_DISABLE")
			assert.Equal(t, tt.p2pOff, off)
			assert.Equal(t, tt.health, plan.HealthURL)
		})
	}
}

func TestServeBadInput(t *testing.T) {
	risers := devices(t, sim.PresetRTX3080Riser)
	tests := []struct {
		name string
		srv  training.Server
		is   error
		want []string
	}{
		{"13B in fp16 on one 10 GiB card", server(training.VLLM, 1, gpu.MemoryNeed{Params: 13e9}), training.ErrUnfit,
			[]string{"13B fp16 over 1 GPUs: the weights take 24.2 GiB per GPU of the 9.0 GiB the server may use of GPU 0 (10.0 GiB, 90%), leaving room for 0 tokens of context, fewer than 256: use more GPUs or a 4-bit model"}},
		{"a context longer than fits", func() training.Server {
			s := server(training.VLLM, 1, gpu.MemoryNeed{Params: 7e9, Precision: gpu.PrecisionINT4})
			s.MaxModelLen = 32768
			return s
		}(), training.ErrUnfit, []string{"MaxModelLen 32768: 7B int4 over 1 GPUs needs", "more than the 9.0 GiB the server may use of GPU 0 (10.0 GiB, 90%); at most 7"}},
		{"more GPUs than the node has for inference", server(training.TGI, 12, gpu.MemoryNeed{Params: 7e9}), training.ErrUnfit,
			[]string{"12 GPUs needed, readiness admits 8 of this node's 8 for inference"}},
		{"everything wrong", training.Server{Kind: "ollama", GPUs: 0, Port: 70000, Host: "localhost", MemoryUtilization: 1.5}, training.ErrInvalid,
			[]string{`Kind "ollama"`, "Model: empty", "GPUs 0: a server needs at least one GPU", "Port 70000", `Host "localhost"`, "MemoryUtilization 1.5", "Need.Params 0", "spec.Tenant is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.srv.Build(risers)
			require.ErrorIs(t, err, tt.is)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}
