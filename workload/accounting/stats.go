package accounting

import (
	"sort"

	"github.com/gpufarm/gpufarm/gpu"
)

// Devices returns the GPUs the meter books, in index order.
func (m *Meter) Devices() []gpu.Device { return append([]gpu.Device(nil), m.devs...) }

// Latest copies the newest sample of each GPU into dst (reusing its
// storage) in index order: the very samples the meter booked, for a
// metrics collector. A GPU not yet sampled has a zero Time.
func (m *Meter) Latest(dst []gpu.Sample) []gpu.Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	dst = dst[:0]
	for _, st := range m.st {
		dst = append(dst, st.latest)
	}
	return dst
}

// GPUStats is what the meter has measured of one GPU since it started.
type GPUStats struct {
	UUID  string
	Index int
	// MeteredMJ is the energy booked, idle and gaps included; the
	// records of the GPU add up to it once flushed.
	MeteredMJ int64
	// CounterResets counts energy counters that went backwards; Gaps
	// counts intervals longer than the maximum sample gap.
	CounterResets, Gaps int
}

// Stats is the meter's own account since it started.
type Stats struct {
	GPUs []GPUStats
	// Workloads are totals per workload (at most WithMaxWorkloads, the
	// most recently booked); TenantKinds per tenant and kind, idle and
	// gaps included. Both sorted.
	Workloads, TenantKinds []Total
	// Unsent counts records the ledger has not yet accepted; LedgerErr is
	// its last error, nil when the last append worked.
	Unsent    int
	LedgerErr error
}

// Stats reports the meter's totals.
func (m *Meter) Stats() Stats {
	m.settleMu.Lock()
	unsent := len(m.unsent)
	m.settleMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{Unsent: unsent, LedgerErr: m.ledgerEr}
	for _, st := range m.st {
		s.GPUs = append(s.GPUs, GPUStats{UUID: st.uuid, Index: st.index, MeteredMJ: st.meteredMJ, CounterResets: st.resets, Gaps: st.gaps})
	}
	for _, t := range m.totalsWL {
		s.Workloads = append(s.Workloads, *t)
	}
	for _, t := range m.totalsTK {
		s.TenantKinds = append(s.TenantKinds, *t)
	}
	less := func(ts []Total) func(i, j int) bool {
		return func(i, j int) bool {
			a, b := ts[i], ts[j]
			if a.Tenant != b.Tenant {
				return a.Tenant < b.Tenant
			}
			if a.Kind != b.Kind {
				return a.Kind < b.Kind
			}
			return a.Workload < b.Workload
		}
	}
	sort.Slice(s.Workloads, less(s.Workloads))
	sort.Slice(s.TenantKinds, less(s.TenantKinds))
	return s
}
