package training

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// ServerKind names an inference server.
type ServerKind string

const (
	VLLM ServerKind = "vllm" // vLLM's OpenAI-compatible server (vllm serve)
	TGI  ServerKind = "tgi"  // Hugging Face Text Generation Inference (text-generation-launcher)
)

// ServerKinds lists the known servers.
var ServerKinds = []ServerKind{VLLM, TGI}

// Defaults of a Server.
const (
	DefaultServerPort = 8000
	// DefaultMemoryUtilization is the share of each GPU's memory the
	// server may take (vLLM's default --gpu-memory-utilization).
	DefaultMemoryUtilization = 0.9
	// MinContextTokens is the shortest context worth serving.
	MinContextTokens = 256
)

// Server is an inference server on one node's GPUs, split over them by
// tensor parallelism. Readiness sends cards on risers to inference, where
// the host link matters only when the model loads.
type Server struct {
	ID       string
	Tenant   string
	Image    string
	Priority int
	// PricePerGPUHour is what the customer pays per GPU-hour.
	PricePerGPUHour float64

	Kind ServerKind
	// Program is the server's command. Empty by default: the official
	// images' entrypoints are the servers (vllm/vllm-openai runs "vllm
	// serve", text-generation-inference runs text-generation-launcher).
	Program []string
	// Model is what to serve: a path in the container (in a mount) or a
	// hub ID.
	Model string
	// Need describes the model for the memory fit: Params and Precision;
	// SeqLen, when set, is the model's own longest context; Batch (1 by
	// default) is how many sequences of full context must fit at once.
	// Method and Shards are set here.
	Need gpu.MemoryNeed

	GPUs  int
	UUIDs []string
	// Network is where it serves: the tenant network (NetworkBridge) by
	// default, where the host reaches it at the workload's Address and
	// nothing of the host's is exposed; NetworkHost, where the tenant's
	// policy allows it, serves on the host's own ports.
	Network isolation.Network
	// Host and Port are where it listens: 0.0.0.0 on the tenant network,
	// 127.0.0.1 on the host's, and DefaultServerPort by default.
	Host string
	Port int
	// MaxModelLen is the context length; 0 takes the longest whose KV cache
	// fits beside the weights (gpu.MemoryNeed.MaxSeqLen).
	MaxModelLen int
	// MemoryUtilization is the share of GPU memory the server may use;
	// DefaultMemoryUtilization when 0.
	MemoryUtilization float64
	// Args are added after the ones built here.
	Args []string

	Env       []string
	Mounts    []isolation.Mount
	Resources isolation.Limits

	Preemptible bool
	StopSignal  syscall.Signal
	StopGrace   time.Duration
	MinRuntime  time.Duration
	OnGPULoss   workload.GPULoss
	Labels      map[string]string
}

// ServerPlan is what Build makes of a Server.
type ServerPlan struct {
	// Spec is ready for workload.Manager.Submit.
	Spec workload.Spec
	// MaxModelLen is the context length it serves.
	MaxModelLen int
	// Memory is what each GPU needs at that length.
	Memory gpu.MemoryEstimate
	// HealthURL is probed by the Adapter; the workload is ready once it
	// answers 200. On the tenant network the Adapter asks the same port
	// and path at the running workload's Address (a runtime without one,
	// such as the process runtime, serves on the host's loopback).
	HealthURL string
	Notes     []string
}

func (s Server) gpus() int {
	if len(s.UUIDs) > 0 {
		return len(s.UUIDs)
	}
	return max(s.GPUs, 0)
}

func (s Server) validate(p *problems) {
	if !slices.Contains(ServerKinds, s.Kind) {
		p.bad("Kind %q: want one of %v", s.Kind, ServerKinds)
	}
	if s.Model == "" {
		p.bad("Model: empty: give a path in the container or a hub ID")
	}
	p.gpus(s.GPUs, s.UUIDs, "a server")
	if s.Port < 0 || s.Port > 65535 {
		p.bad("Port %d: want 1 to 65535, or 0 for %d", s.Port, DefaultServerPort)
	}
	if s.Host != "" && net.ParseIP(s.Host) == nil {
		p.bad("Host %q: want an IP address to listen on", s.Host)
	}
	if u := s.MemoryUtilization; u < 0 || u > 1 || math.IsNaN(u) {
		p.bad("MemoryUtilization %v: want a share, 0 < u <= 1, or 0 for %v", u, DefaultMemoryUtilization)
	}
	if s.MaxModelLen < 0 {
		p.bad("MaxModelLen %d: want 0 (from the memory fit) or more", s.MaxModelLen)
	}
	if s.Need.Params <= 0 && s.MaxModelLen == 0 {
		p.bad("Need.Params %v: give the model's parameter count for the memory fit, or MaxModelLen", s.Need.Params)
	}
}

// need is the memory need of the server at a context length.
func (s Server) need(seqLen int) gpu.MemoryNeed {
	n := s.Need
	n.Method, n.Shards, n.SeqLen, n.Batch = gpu.MethodInference, s.gpus(), seqLen, max(n.Batch, 1)
	return n
}

// Build checks the server against the node's GPUs and makes its spec: the
// server's arguments (model, tensor parallel size from the GPU count,
// port, the context length the memory fit allows), and a GPU request for
// GPUs readiness admits for inference with the memory it needs. Every
// problem is reported at once: ErrInvalid for a malformed server, ErrUnfit
// when the model does not fit, with the numbers.
func (s Server) Build(devs []gpu.Device) (ServerPlan, error) {
	var p problems
	s.validate(&p)
	if len(devs) == 0 {
		p.bad("no GPUs in the inventory: pass the gpu.Manager.Devices() of the node it runs on")
	}
	g := s.gpus()
	util := cmp.Or(s.MemoryUtilization, DefaultMemoryUtilization)
	var plan ServerPlan
	var chosen []gpu.Device
	if len(s.UUIDs) > 0 {
		chosen = Job{UUIDs: s.UUIDs}.pinned(devs, &p)
	} else {
		for _, d := range devs {
			if gpu.Assess(d, gpu.Health{Healthy: true}).Use >= gpu.UseInference {
				chosen = append(chosen, d)
			}
		}
		slices.SortStableFunc(chosen, func(a, b gpu.Device) int { return cmp.Compare(b.MemoryBytes, a.MemoryBytes) })
		if len(devs) > 0 && len(chosen) < g {
			p.unfit("%d GPUs needed, readiness admits %d of this node's %d for inference", g, len(chosen), len(devs))
		}
		chosen = chosen[:min(g, len(chosen))]
	}
	req := workload.GPURequest{Count: g, UUIDs: slices.Clone(s.UUIDs)}
	if len(chosen) > 0 && (s.Need.Params > 0) && len(p.invalid) == 0 {
		plan.MaxModelLen, plan.Memory = s.fit(chosen, util, &p)
		// The memory a GPU needs so the server gets its share of it.
		req.MinMemoryBytes = uint64(math.Ceil(float64(plan.Memory.PerGPUBytes) / util))
	} else {
		plan.MaxModelLen = s.MaxModelLen
	}
	network := cmp.Or(s.Network, isolation.NetworkBridge)
	host := cmp.Or(s.Host, "127.0.0.1")
	if network == isolation.NetworkBridge && s.Host == "" {
		host = "0.0.0.0" // reachable from the host through the bridge
	}
	port := cmp.Or(s.Port, DefaultServerPort)
	probeHost := host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		probeHost = "127.0.0.1"
	}
	plan.HealthURL = "http://" + net.JoinHostPort(probeHost, strconv.Itoa(port)) + "/health"
	nccl, notes := ncclDefaults(g > 1, FabricOf(chosen), chosen)
	plan.Notes = notes
	cfg := config{Role: roleServing, Server: s.Kind, Health: plan.HealthURL}
	plan.Spec = workload.Spec{
		ID: s.ID, Kind: workload.KindInference, Tenant: s.Tenant, Priority: s.Priority, GPUs: req, Image: s.Image,
		Command: append(s.command(host, port, plan.MaxModelLen, util), s.Args...), Env: mergeEnv(nccl, s.Env),
		Mounts: s.Mounts, Resources: s.Resources, Network: network,
		Preemptible: s.Preemptible, StopSignal: s.StopSignal, StopGrace: s.StopGrace, MinRuntime: s.MinRuntime,
		OnGPULoss: s.OnGPULoss, PricePerGPUHour: s.PricePerGPUHour, Labels: cfg.label(s.Labels),
	}
	if err := plan.Spec.Validate(); err != nil {
		p.wrapped = append(p.wrapped, err)
	}
	if err := p.err(fmt.Sprintf("inference server %q", s.ID)); err != nil {
		return ServerPlan{}, err
	}
	return plan, nil
}

// fit works out the context length the smallest of the GPUs allows, or
// checks the one asked for.
func (s Server) fit(devs []gpu.Device, util float64, p *problems) (int, gpu.MemoryEstimate) {
	small := slices.MinFunc(devs, func(a, b gpu.Device) int { return cmp.Compare(a.MemoryBytes, b.MemoryBytes) })
	budget := uint64(float64(small.MemoryBytes) * util)
	longest, _ := s.need(0).MaxSeqLen(budget)
	if s.Need.SeqLen > 0 {
		longest = min(longest, s.Need.SeqLen)
	}
	n := cmp.Or(s.MaxModelLen, longest)
	e, _ := s.need(max(n, 1)).Estimate()
	what := fmt.Sprintf("%s %s over %d GPUs", paramsText(s.Need.Params), s.Need.Precision, s.gpus())
	switch {
	case s.MaxModelLen > 0 && e.PerGPUBytes > budget:
		p.unfit("MaxModelLen %d: %s needs %s per GPU (%s weights, %s KV cache and activations), more than the %s the server may use of GPU %d (%s, %.0f%%); at most %d tokens fit",
			s.MaxModelLen, what, gib(e.PerGPUBytes), gib(e.StateBytes), gib(e.ActivationBytes), gib(budget), small.Index, gib(small.MemoryBytes), util*100, longest)
	case s.MaxModelLen == 0 && longest < MinContextTokens:
		p.unfit("%s: the weights take %s per GPU of the %s the server may use of GPU %d (%s, %.0f%%), leaving room for %d tokens of context, fewer than %d: use more GPUs or a 4-bit model",
			what, gib(e.StateBytes), gib(budget), small.Index, gib(small.MemoryBytes), util*100, max(longest, 0), MinContextTokens)
	}
	return n, e
}

// command is the server's arguments.
func (s Server) command(host string, port, maxLen int, util float64) []string {
	cmd := slices.Clone(s.Program)
	g, utilText := strconv.Itoa(s.gpus()), strconv.FormatFloat(util, 'f', -1, 64)
	switch s.Kind {
	case VLLM:
		cmd = append(cmd, s.Model, "--host", host, "--port", strconv.Itoa(port), "--tensor-parallel-size", g,
			"--gpu-memory-utilization", utilText)
		if maxLen > 0 {
			cmd = append(cmd, "--max-model-len", strconv.Itoa(maxLen))
		}
	case TGI:
		cmd = append(cmd, "--model-id", s.Model, "--hostname", host, "--port", strconv.Itoa(port), "--num-shard", g,
			"--cuda-memory-fraction", utilText)
		if maxLen > 1 {
			// A quarter of the context is left for the answer.
			cmd = append(cmd, "--max-total-tokens", strconv.Itoa(maxLen), "--max-input-tokens", strconv.Itoa(max(maxLen*3/4, 1)))
		}
	}
	return cmd
}
