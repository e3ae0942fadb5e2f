package workload

import (
	"slices"
	"time"
)

// Allocation is one workload's hold of one GPU: from when it took the GPU
// (the earlier holder's end confirmed) to when its own end was confirmed,
// on the manager's clock. Whole GPUs are exclusive, so what the GPU does
// in that span (its energy, its time) is the workload's; between holds it
// is idle. The accounting reads them.
type Allocation struct {
	GPU             string
	Workload        string
	Attempt         int
	Tenant          string
	Kind            Kind
	PricePerGPUHour float64
	From            time.Time
	To              time.Time // zero while it holds the GPU
}

// keptHolds is how many holds of each GPU the manager remembers.
const keptHolds = 256

// take makes e the holder of sl and opens its hold. The caller holds m.mu.
func (m *Manager) take(sl *slot, e *entry) {
	if sl.holder == e.id {
		return
	}
	if sl.holder != "" {
		m.release(sl) // never two holds open at once
	}
	sl.holder = e.id
	if len(sl.holds) >= keptHolds {
		sl.holds = slices.Delete(sl.holds, 0, len(sl.holds)-keptHolds+1)
	}
	sl.holds = append(sl.holds, Allocation{GPU: sl.dev.UUID, Workload: e.id, Attempt: e.w.Attempt, Tenant: e.w.Spec.Tenant,
		Kind: e.w.Spec.Kind, PricePerGPUHour: e.w.Spec.PricePerGPUHour, From: m.clock.Now()})
}

// release frees sl and closes its open hold. The caller holds m.mu.
func (m *Manager) release(sl *slot) {
	sl.holder = ""
	if n := len(sl.holds); n > 0 && sl.holds[n-1].To.IsZero() {
		sl.holds[n-1].To = m.clock.Now()
	}
}

// Allocations returns the holds of a GPU that overlap [from, to], oldest
// first: the last 256 of each GPU since the Manager was made; a hold
// re-adopted after a restart begins at the restart.
func (m *Manager) Allocations(uuid string, from, to time.Time) ([]Allocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, err := m.slotOf(uuid)
	if err != nil {
		return nil, err
	}
	var out []Allocation
	for _, a := range m.slots[i].holds {
		if a.From.After(to) || (!a.To.IsZero() && a.To.Before(from)) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}
