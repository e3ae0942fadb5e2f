package training

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

// request is the job's GPU request and the GPUs it would run on (the
// pinned ones, or those of the node that qualify); what keeps GPUs from
// qualifying is added to p, with the numbers.
func (j Job) request(devs, pinned []gpu.Device, est *gpu.MemoryEstimate, p *problems) (workload.GPURequest, []gpu.Device) {
	g := j.gpus()
	req := workload.GPURequest{Count: g, UUIDs: slices.Clone(j.UUIDs)}
	if est != nil {
		req.MinMemoryBytes = est.PerGPUBytes
	}
	dp := j.dataParallel()
	if dp && !j.ForceDataParallel {
		req.MinLink = gpu.Link{Gen: 3, Width: 8} // TrainingMinLinkGBps
	}
	// Readiness admits single-GPU QLoRA on GPUs it rates for inference.
	qlora := g == 1 && j.nodes() == 1 && j.Model != nil && j.Model.Method == gpu.MethodQLoRA
	if j.ForceDataParallel || qlora {
		req.IgnoreReadiness = true
		req.MinComputeCapability = gpu.ComputeCapability{Major: 7} // tensor cores
	}
	check := func(d gpu.Device) string {
		r := gpu.Assess(d, gpu.Health{Healthy: true})
		switch {
		case est != nil && d.MemoryBytes < est.PerGPUBytes:
			return fmt.Sprintf("%s of memory; %s%s", gib(d.MemoryBytes), j.needText(*est), j.alternatives(d.MemoryBytes))
		case req.IgnoreReadiness && !d.ComputeCapability.AtLeast(7, 0):
			return fmt.Sprintf("compute capability %s: no tensor cores", d.ComputeCapability)
		case dp && !j.ForceDataParallel && r.HostLinkGBps > 0 && r.HostLinkGBps < gpu.TrainingMinLinkGBps:
			return fmt.Sprintf("host link %s, %.2f GB/s, below the %.1f GB/s data-parallel training needs: %s; set ForceDataParallel to run anyway",
				r.Link, r.HostLinkGBps, gpu.TrainingMinLinkGBps, allReduceNote([]gpu.Device{d}, j.world(), j.gradientBytes()))
		case !req.IgnoreReadiness && r.Use < gpu.UseTraining:
			return fmt.Sprintf("readiness rates it for %s (%s)", r.Use, strings.Join(r.Notes, "; "))
		}
		return ""
	}
	if len(j.UUIDs) > 0 {
		for _, d := range pinned {
			if why := check(d); why != "" {
				p.unfit("GPU %d %s (%s): %s", d.Index, d.UUID, d.Name, why)
			}
		}
		return req, pinned
	}
	var ok []gpu.Device
	var reasons []string
	byReason := map[string][]int{}
	for _, d := range devs {
		why := check(d)
		if why == "" {
			ok = append(ok, d)
			continue
		}
		key := d.Name + "\x00" + why
		if _, seen := byReason[key]; !seen {
			reasons = append(reasons, key)
		}
		byReason[key] = append(byReason[key], d.Index)
	}
	if g > 0 && len(devs) > 0 && len(ok) < g {
		var why []string
		for _, key := range reasons {
			name, reason, _ := strings.Cut(key, "\x00")
			why = append(why, fmt.Sprintf("%s (%s): %s", indexList(byReason[key]), name, reason))
		}
		p.unfit("the job needs %d GPUs, %d of this node's %d can run it: %s", g, len(ok), len(devs), strings.Join(why, "; "))
	}
	return req, ok[:min(g, len(ok))]
}

// needText says what each GPU needs, by part.
func (j Job) needText(e gpu.MemoryEstimate) string {
	m := j.Model
	shape := ""
	if m.SeqLen > 0 && m.Batch > 0 {
		shape = fmt.Sprintf(" at %d tokens x %d sequences", m.SeqLen, m.Batch)
	}
	if m.Shards > 1 {
		shape += fmt.Sprintf(", sharded over %d GPUs", m.Shards)
	}
	return fmt.Sprintf("a %s %s %s%s needs %s per GPU (%s context, %s model state, %s activations)",
		paramsText(m.Params), m.Precision, m.Method, shape, gib(e.PerGPUBytes), gib(e.ReserveBytes), gib(e.StateBytes), gib(e.ActivationBytes))
}

// alternatives says which lighter methods would fit memoryBytes.
func (j Job) alternatives(memoryBytes uint64) string {
	var alts []gpu.Method
	switch j.Model.Method {
	case gpu.MethodFullFineTune:
		alts = []gpu.Method{gpu.MethodLoRA, gpu.MethodQLoRA}
	case gpu.MethodLoRA:
		alts = []gpu.Method{gpu.MethodQLoRA}
	}
	var out []string
	for _, m := range alts {
		n := *j.Model
		n.Method = m
		if m == gpu.MethodQLoRA {
			n.Precision = gpu.PrecisionINT4
		}
		if e, err := n.Estimate(); err == nil {
			fits := "does not fit either"
			if e.PerGPUBytes <= memoryBytes {
				fits = "fits"
			}
			out = append(out, fmt.Sprintf("%s would need %s (%s)", m, gib(e.PerGPUBytes), fits))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, ", ")
}

// allReduceNote says what a ring all-reduce of the gradients costs on the
// slowest host link of devs, through host memory (no NVLink or P2P).
func allReduceNote(devs []gpu.Device, n int, bytes float64) string {
	slowest := 0.0
	for _, d := range devs {
		if gbps := gpu.Assess(d, gpu.Health{Healthy: true}).HostLinkGBps; gbps > 0 && (slowest == 0 || gbps < slowest) {
			slowest = gbps
		}
	}
	if slowest == 0 || n < 2 {
		return ""
	}
	secs := 2 * float64(n-1) / float64(n) * bytes / (slowest * 1e9)
	return fmt.Sprintf("a ring all-reduce of %.1f GB of fp16 gradients across %d GPUs at %.2f GB/s takes %.1f s a step", bytes/1e9, n, slowest, secs)
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

// paramsText prints a parameter count as model cards do: 7B, 350M.
func paramsText(p float64) string {
	switch {
	case p >= 1e9:
		return strconv.FormatFloat(p/1e9, 'f', -1, 64) + "B"
	case p >= 1e6:
		return strconv.FormatFloat(p/1e6, 'f', 0, 64) + "M"
	}
	return strconv.FormatFloat(p, 'f', 0, 64)
}

// indexList prints GPU indices: "GPU 3", "GPUs 0, 1, 2".
func indexList(idx []int) string {
	s := make([]string, len(idx))
	for i, n := range idx {
		s[i] = strconv.Itoa(n)
	}
	if len(s) == 1 {
		return "GPU " + s[0]
	}
	return "GPUs " + strings.Join(s, ", ")
}
