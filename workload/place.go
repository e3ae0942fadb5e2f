package workload

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gpufarm/gpufarm/gpu"
)

// matches reports whether a GPU meets a request's constraints, and if not,
// why.
func (r GPURequest) matches(d gpu.Device) (bool, string) {
	if d.MemoryBytes < r.MinMemoryBytes {
		return false, fmt.Sprintf("%.0f GiB < %.0f GiB", gib(d.MemoryBytes), gib(r.MinMemoryBytes))
	}
	if cc := r.MinComputeCapability; (cc.Major != 0 || cc.Minor != 0) && !d.ComputeCapability.AtLeast(cc.Major, cc.Minor) {
		return false, fmt.Sprintf("compute capability %s < %s", d.ComputeCapability, cc)
	}
	link := usableLink(d)
	if r.MinLink.Gen > 0 && link.Gen < r.MinLink.Gen {
		return false, fmt.Sprintf("PCIe gen%d < gen%d", link.Gen, r.MinLink.Gen)
	}
	if r.MinLink.Width > 0 && link.Width < r.MinLink.Width {
		return false, fmt.Sprintf("PCIe x%d < x%d", link.Width, r.MinLink.Width)
	}
	if len(r.Models) > 0 {
		ok := false
		for _, m := range r.Models {
			if modelIs(d.Name, m) {
				ok = true
				break
			}
		}
		if !ok {
			return false, fmt.Sprintf("model %q not in %v", d.Name, r.Models)
		}
	}
	return true, ""
}

// usableLink is the link readiness judges by: max generation, trained width.
func usableLink(d gpu.Device) gpu.Link {
	l := gpu.Link{Gen: d.LinkMax.Gen, Width: d.LinkCurrent.Width}
	if l.Width == 0 {
		l.Width = d.LinkMax.Width
	}
	return l
}

func modelIs(name, want string) bool {
	norm := func(s string) string {
		return strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "nvidia ")
	}
	return norm(name) == norm(want)
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// placeable fails a request that no GPU of the node could ever meet, with
// the reason, so it does not queue forever.
func (m *Manager) placeable(s Spec) error {
	r := s.GPUs
	if len(r.UUIDs) > 0 {
		var probs []string
		for _, u := range r.UUIDs {
			i, ok := m.byUUID[u]
			if !ok {
				probs = append(probs, fmt.Sprintf("GPU %s is not on this node", u))
				continue
			}
			if ok, why := r.matches(m.slots[i].dev); !ok {
				probs = append(probs, fmt.Sprintf("GPU %d (%s): %s", i, u, why))
			}
		}
		if len(probs) > 0 {
			return fmt.Errorf("%w: workload %q: %s", ErrUnplaceable, s.ID, strings.Join(probs, "; "))
		}
		return nil
	}
	n := 0
	why := map[string]int{}
	for _, sl := range m.slots {
		if ok, reason := r.matches(sl.dev); ok {
			n++
		} else {
			why[reason]++
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
	return fmt.Errorf("%w: workload %q needs %d GPUs, this node has %d GPUs and %d meet the request (%s)",
		ErrUnplaceable, s.ID, r.Count, len(m.slots), n, strings.Join(reasons, "; "))
}

// Candidate classes, cheapest first: what taking a GPU costs.
const (
	classFree   = iota // idle
	classMining        // a miner yields at once
	classPaid          // lower-priority paid work yields after its grace
)

// candidate is a GPU a workload could take now.
type candidate struct {
	slot   int
	class  int
	holder *entry // nil when free
}

// candidates lists the GPUs e could take now, with their cost. The caller
// holds m.mu.
func (m *Manager) candidates(e *entry, healthy func(int) bool) []candidate {
	r := e.w.Spec.GPUs
	var out []candidate
	consider := func(i int) {
		sl := m.slots[i]
		if sl.next != "" || sl.quarantine != "" || !healthy(i) {
			return
		}
		if ok, _ := r.matches(sl.dev); !ok {
			return
		}
		if sl.holder == "" {
			out = append(out, candidate{slot: i, class: classFree})
			return
		}
		h := m.work[sl.holder]
		if h == nil || h.w.State != StateRunning || h.stopping {
			return
		}
		if h.w.Spec.Kind == KindMining {
			if e.w.Spec.Kind.Paid() {
				out = append(out, candidate{slot: i, class: classMining, holder: h})
			}
			return
		}
		if m.preemptible(h, e) {
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
func (m *Manager) preemptible(h, e *entry) bool {
	if !e.w.Spec.Kind.Paid() || !h.w.Spec.Preemptible || e.w.Spec.Priority <= h.w.Spec.Priority {
		return false
	}
	return m.clock.Now().Sub(h.w.StartedAt) >= h.w.Spec.MinRuntime
}

// choose picks n GPUs among cands, best fit first: the cheapest class, then
// the smallest card that meets the request (big cards stay free for big
// work), then the same model together, then by index. A paid holder counts
// whole: taking one of its GPUs stops all of them, so its other GPUs come
// along at no further cost. It returns nil when n cannot be met.
func (m *Manager) choose(cands []candidate, n int) []candidate {
	if len(cands) < n {
		return nil
	}
	sort.Slice(cands, func(a, b int) bool {
		ca, cb := cands[a], cands[b]
		if ca.class != cb.class {
			return ca.class < cb.class
		}
		if ca.class == classPaid && ca.holder != cb.holder {
			// Least important victim first; among equals, the one that
			// started last has the least unsaved work.
			if pa, pb := ca.holder.w.Spec.Priority, cb.holder.w.Spec.Priority; pa != pb {
				return pa < pb
			}
			return ca.holder.w.StartedAt.After(cb.holder.w.StartedAt)
		}
		da, db := m.slots[ca.slot].dev, m.slots[cb.slot].dev
		if da.MemoryBytes != db.MemoryBytes {
			return da.MemoryBytes < db.MemoryBytes
		}
		if da.Name != db.Name {
			return da.Name < db.Name
		}
		return ca.slot < cb.slot
	})
	return cands[:n]
}
