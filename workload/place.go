package workload

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// misfit names the first constraint a GPU fails; fitsAll means none.
type misfit int

const (
	fitsAll misfit = iota
	misfitMemory
	misfitCC
	misfitGen
	misfitWidth
	misfitModel
	misfitUse
)

// misfit tests the request against the GPU of sl; models are the request's
// normalised model names, use the least readiness verdict the work needs.
// It builds no text: the scheduler calls it for every GPU of every
// decision.
func (r GPURequest) misfit(sl *slot, models []string, use gpu.Use) misfit {
	d := &sl.dev
	switch cc := r.MinComputeCapability; {
	case d.MemoryBytes < r.MinMemoryBytes:
		return misfitMemory
	case (cc.Major != 0 || cc.Minor != 0) && !d.ComputeCapability.AtLeast(cc.Major, cc.Minor):
		return misfitCC
	case r.MinLink.Gen > 0 && sl.link.Gen < r.MinLink.Gen:
		return misfitGen
	case r.MinLink.Width > 0 && sl.link.Width < r.MinLink.Width:
		return misfitWidth
	case len(models) > 0 && !slices.Contains(models, sl.model):
		return misfitModel
	case sl.use < use:
		return misfitUse
	}
	return fitsAll
}

// minUse is the least readiness verdict a GPU needs for the spec's work:
// training and inference go only where gpu.Assess admits them, unless the
// request ignores readiness; mining and batch go anywhere.
func (s Spec) minUse() gpu.Use {
	if s.GPUs.IgnoreReadiness {
		return gpu.UseNone
	}
	switch s.Kind {
	case KindTraining:
		return gpu.UseTraining
	case KindInference:
		return gpu.UseInference
	}
	return gpu.UseNone
}

// why says in words why the GPU of sl fails the request.
func (r GPURequest) why(m misfit, sl *slot) string {
	d := &sl.dev
	switch m {
	case misfitMemory:
		return fmt.Sprintf("%.0f GiB < %.0f GiB", gib(d.MemoryBytes), gib(r.MinMemoryBytes))
	case misfitCC:
		return fmt.Sprintf("compute capability %s < %s", d.ComputeCapability, r.MinComputeCapability)
	case misfitGen:
		return fmt.Sprintf("PCIe gen%d < gen%d", sl.link.Gen, r.MinLink.Gen)
	case misfitWidth:
		return fmt.Sprintf("PCIe x%d < x%d", sl.link.Width, r.MinLink.Width)
	case misfitModel:
		return fmt.Sprintf("model %q not in %v", d.Name, r.Models)
	case misfitUse:
		return fmt.Sprintf("readiness rates it for %s (%s); set GPUs.IgnoreReadiness to place it anyway", sl.use, sl.useWhy)
	}
	return ""
}

// normModel makes model names comparable: case and the "NVIDIA " prefix do
// not matter.
func normModel(s string) string {
	return strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "nvidia ")
}

func normModels(ms []string) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = normModel(m)
	}
	return out
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// placeable fails a request that no GPU of the node could ever meet, with
// the reason, so it does not queue forever.
func (m *Manager) placeable(s Spec) error {
	r := s.GPUs
	models := normModels(r.Models)
	use := s.minUse()
	if len(r.UUIDs) > 0 {
		var probs []string
		for _, u := range r.UUIDs {
			i, ok := m.byUUID[u]
			if !ok {
				probs = append(probs, fmt.Sprintf("GPU %s is not on this node", u))
				continue
			}
			if mf := r.misfit(m.slots[i], models, use); mf != fitsAll {
				probs = append(probs, fmt.Sprintf("GPU %d (%s): %s", i, u, r.why(mf, m.slots[i])))
			} else if bad, h := m.faulted(i); bad {
				probs = append(probs, gpuFault(m.slots[i], i, h)+": reset it (gpu.Manager.ResetHealth) or pin other GPUs")
			}
		}
		if len(probs) > 0 {
			return errorf(ErrUnplaceable, "workload %q cannot run on the GPUs it is pinned to: %s", s.ID, strings.Join(probs, "; "))
		}
		return nil
	}
	n := 0
	why := map[string]int{}
	for _, sl := range m.slots {
		if mf := r.misfit(sl, models, use); mf == fitsAll {
			n++
		} else {
			why[r.why(mf, sl)]++
		}
	}
	if n >= r.Count {
		return nil
	}
	var reasons []string
	for reason, k := range why {
		reasons = append(reasons, fmt.Sprintf("%d with %s", k, reason))
	}
	sort.Strings(reasons)
	return errorf(ErrUnplaceable, "workload %q needs %d GPUs, this node has %d GPUs and %d meet the request (%s)",
		s.ID, r.Count, len(m.slots), n, strings.Join(reasons, "; "))
}

// Candidate classes, cheapest first: what taking a GPU costs.
const (
	classFree   = iota // idle
	classMining        // a miner yields at once
	classPaid          // lower-priority paid work yields after its grace
)

// candidate is a GPU a workload could take now, with its sort keys.
type candidate struct {
	slot   int
	class  int
	holder *entry // nil when free
}

// candidates lists the GPUs e could take now, with their cost, into buf.
// open says by slot whether new work may go there. The caller holds m.mu.
func (m *Manager) candidates(e *entry, open []bool, buf []candidate) []candidate {
	r := e.w.Spec.GPUs
	if e.models == nil && len(r.Models) > 0 {
		e.models = normModels(r.Models)
	}
	use := e.w.Spec.minUse()
	now := m.clock.Now()
	out := buf[:0]
	consider := func(i int) {
		sl := m.slots[i]
		if sl.next != "" || !open[i] {
			return
		}
		if r.misfit(sl, e.models, use) != fitsAll {
			return
		}
		if sl.holder == "" {
			out = append(out, candidate{slot: i, class: classFree})
			return
		}
		h := m.live[sl.holder]
		if h == nil || h.w.State != StateRunning || h.stopping {
			return
		}
		if h.w.Spec.Kind == KindMining {
			if e.w.Spec.Kind.Paid() {
				out = append(out, candidate{slot: i, class: classMining, holder: h})
			}
			return
		}
		if m.preemptible(h, e, now) {
			out = append(out, candidate{slot: i, class: classPaid, holder: h})
		}
	}
	if len(r.UUIDs) > 0 {
		for _, u := range r.UUIDs {
			if i, ok := m.byUUID[u]; ok {
				consider(i)
			}
		}
		return out
	}
	for i := range m.slots {
		consider(i)
	}
	return out
}

// preemptible reports whether paid workload h may yield its GPUs to e:
// only to higher priority, only if it allows preemption, and only after
// its minimum runtime.
func (m *Manager) preemptible(h, e *entry, now time.Time) bool {
	if !e.w.Spec.Kind.Paid() || !h.w.Spec.Preemptible || e.w.Spec.Priority <= h.w.Spec.Priority {
		return false
	}
	return now.Sub(h.w.StartedAt) >= h.w.Spec.MinRuntime
}

// better orders candidates, best fit first: the cheapest class; among paid
// victims the least important, then the one that started last (it has the
// least unsaved work); then the smallest card that meets the request (big
// cards stay free for big work), the same model together, and the index.
func (m *Manager) better(a, b candidate) bool {
	if a.class != b.class {
		return a.class < b.class
	}
	if a.class == classPaid && a.holder != b.holder {
		if pa, pb := a.holder.w.Spec.Priority, b.holder.w.Spec.Priority; pa != pb {
			return pa < pb
		}
		return a.holder.w.StartedAt.After(b.holder.w.StartedAt)
	}
	sa, sb := m.slots[a.slot], m.slots[b.slot]
	if sa.dev.MemoryBytes != sb.dev.MemoryBytes {
		return sa.dev.MemoryBytes < sb.dev.MemoryBytes
	}
	if sa.model != sb.model {
		return sa.model < sb.model
	}
	return a.slot < b.slot
}

// choose picks the n best candidates, or nil when there are fewer. A
// request wants a few GPUs out of many candidates, so it keeps the n best
// in one pass instead of sorting them all.
func (m *Manager) choose(cands []candidate, n int) []candidate {
	if n <= 0 || len(cands) < n {
		return nil
	}
	best := make([]candidate, 0, n)
	for _, c := range cands {
		if len(best) == n && !m.better(c, best[n-1]) {
			continue
		}
		if len(best) < n {
			best = append(best, c)
		} else {
			best[n-1] = c
		}
		for i := len(best) - 1; i > 0 && m.better(best[i], best[i-1]); i-- {
			best[i], best[i-1] = best[i-1], best[i]
		}
	}
	return best
}
