package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
)

// bigNode is a 1,024-GPU simulated node: mostly mining, some paid work,
// some idle, with 10,000 specs queued.
func bigNode(tb testing.TB) (*Manager, []*entry) {
	tb.Helper()
	var cards []sim.Card
	for i := 0; i < 1024; i++ {
		var c sim.Card
		switch {
		case i < 512:
			c = sim.RTX3080()
			c.Slot = gpu.Link{Gen: 1, Width: 1}
		case i < 768:
			c = sim.RTX3090()
		case i < 896:
			c = sim.A40()
		default:
			c = sim.CMP170HX()
		}
		c.PCIBusID = fmt.Sprintf("%04x:%02x:00.0", i/256, i%256) // more cards than one PCI domain holds
		cards = append(cards, c)
	}
	rig, err := sim.New(sim.Preset{Name: "bench-1024", Cards: cards})
	require.NoError(tb, err)
	gm, err := gpu.New(context.Background(), rig)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = gm.Close() })
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(tb.TempDir()))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = rt.Close() })
	m, err := New(gm, rt)
	require.NoError(tb, err)

	rnd := rand.New(rand.NewPCG(1, 2))
	now := m.clock.Now()
	for i, sl := range m.slots {
		var e *entry
		switch r := rnd.IntN(100); {
		case r < 70:
			e = newEntry(Workload{Spec: Spec{ID: fmt.Sprintf("mine-%d", i), Kind: KindMining, Preemptible: true}})
		case r < 90:
			e = newEntry(Workload{Spec: Spec{ID: fmt.Sprintf("paid-%d", i), Kind: KindTraining,
				Priority: rnd.IntN(5), Preemptible: rnd.IntN(2) == 0}})
		default:
			continue // idle
		}
		e.w.State = StateRunning
		e.w.StartedAt = now.Add(-time.Hour)
		e.w.GPUs = []string{sl.dev.UUID}
		m.work[e.w.Spec.ID] = e
		m.live[e.w.Spec.ID] = e
		sl.holder = e.w.Spec.ID
	}
	models := [][]string{nil, nil, {"GeForce RTX 3090"}, {"A40", "GeForce RTX 3090"}}
	queue := make([]*entry, 10000)
	for i := range queue {
		s := Spec{ID: fmt.Sprintf("q-%d", i), Kind: KindTraining, Tenant: "t", Image: "x",
			Priority: rnd.IntN(10), Preemptible: true,
			GPUs: GPURequest{Count: []int{1, 1, 2, 4, 8}[rnd.IntN(5)], Models: models[rnd.IntN(len(models))]}}
		if rnd.IntN(3) == 0 {
			s.GPUs.MinMemoryBytes = 16 << 30
		}
		if rnd.IntN(4) == 0 {
			s.GPUs.MinLink = gpu.Link{Gen: 3, Width: 8}
		}
		queue[i] = newEntry(Workload{Spec: s, State: StateQueued, SubmittedAt: now})
		m.work[s.ID] = queue[i]
		m.live[s.ID] = queue[i]
	}
	return m, queue
}

// BenchmarkAllocate measures one allocation decision (which GPUs a queued
// spec would take now: constraints, best fit, preemption rules, policy)
// on 1,024 simulated GPUs with 10,000 specs queued, and reports its p50
// and p99. The goal is a p99 under 1 ms.
func BenchmarkAllocate(b *testing.B) {
	m, queue := bigNode(b)
	healthy := m.openSlots()
	lat := make([]time.Duration, 0, len(queue))
	placed := 0
	b.ResetTimer()
	for b.Loop() {
		lat = lat[:0]
		placed = 0
		m.mu.Lock()
		for _, e := range queue {
			t0 := time.Now()
			if m.decide(e, healthy) != nil {
				placed++
			}
			lat = append(lat, time.Since(t0))
		}
		m.mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds())/1e3, "max-µs")
	b.ReportMetric(float64(placed)/float64(len(queue)), "placeable-fraction")
}

// TestAllocateBigNode checks the decisions the benchmark times are real:
// placeable specs get exactly their count of matching GPUs.
func TestAllocateBigNode(t *testing.T) {
	m, queue := bigNode(t)
	healthy := m.openSlots()
	placed := 0
	for _, e := range queue[:500] {
		chosen := m.decide(e, healthy)
		if chosen == nil {
			continue
		}
		placed++
		require.Len(t, chosen, e.w.Spec.GPUs.count())
		for _, c := range chosen {
			r := e.w.Spec.GPUs
			mf := r.misfit(m.slots[c.slot], normModels(r.Models), e.w.Spec.minUse())
			require.Equal(t, fitsAll, mf, "spec %s got GPU %d: %s", e.w.Spec.ID, c.slot, r.why(mf, m.slots[c.slot]))
		}
	}
	require.Greater(t, placed, 100, "most specs can preempt miners")
}

// BenchmarkSchedulePass measures one pass over the 10,000 queued specs
// under the manager's lock when none can be placed (a standing power cap
// admits nothing), the worst case of every scheduling tick.
func BenchmarkSchedulePass(b *testing.B) {
	m, queue := bigNode(b)
	m.budgetW = 1 // nothing fits: every decision is refused at admission
	healthy := m.openSlots()
	placed := 0
	b.ResetTimer()
	for b.Loop() {
		m.mu.Lock()
		m.placeQueued(queue, healthy, func(*entry, []candidate) { placed++ })
		m.mu.Unlock()
	}
	b.ReportMetric(float64(placed), "placed")
}

// BenchmarkSchedulePassFinished times one whole scheduling pass (rules,
// queue, placement) on the 1,024-GPU node with 10,000 specs queued, on a
// manager that has 100,000 finished records in its store and on one that
// has none, side by side; the goal is a ratio of at most 1.2.
func BenchmarkSchedulePassFinished(b *testing.B) {
	ctx := context.Background()
	empty, _ := bigNode(b)
	full, _ := bigNode(b)
	store := NewMemoryStore()
	ended := full.clock.Now().Add(-time.Hour)
	for i := range 100_000 {
		w := Workload{Spec: Spec{ID: fmt.Sprintf("done-%06d", i), Kind: KindTraining, Tenant: "t", Image: "x", GPUs: GPURequest{Count: 1}},
			State: StateExited, Attempt: 1, EndedAt: ended, GPUs: []string{full.slots[i%len(full.slots)].dev.UUID}}
		require.NoError(b, store.Put(ctx, w))
	}
	full.store = store
	full.mu.Lock()
	err := full.load()
	full.mu.Unlock()
	require.NoError(b, err)
	require.Equal(b, len(empty.work)+100_000, len(full.work), "the finished records are loaded")
	var took [2]time.Duration
	for _, m := range []*Manager{empty, full} {
		m.budgetW = 1 // nothing is admitted: every pass walks the whole queue
		m.life = running
	}
	r := [2]*runner{{m: empty}, {m: full}}
	b.ResetTimer()
	for b.Loop() {
		for k := range r {
			t0 := time.Now()
			r[k].schedule(ctx)
			took[k] += time.Since(t0)
		}
	}
	b.StopTimer()
	for _, x := range r {
		x.wg.Wait()
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(b.N)/1e6, "ms/pass-none")
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(b.N)/1e6, "ms/pass-100k-finished")
	b.ReportMetric(float64(took[1])/float64(took[0]), "ratio")
}
