package accounting_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// t0 is a Monday, 00:00 UTC.
var t0 = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// timeline is a hand-driven allocation timeline: the tests hand GPUs
// over at the times they choose.
type timeline struct {
	mu    sync.Mutex
	holds map[string][]workload.Allocation
	fail  error
}

func newTimeline() *timeline { return &timeline{holds: map[string][]workload.Allocation{}} }

func (tl *timeline) Allocations(uuid string, from, to time.Time) ([]workload.Allocation, error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.fail != nil {
		return nil, tl.fail
	}
	var out []workload.Allocation
	for _, a := range tl.holds[uuid] {
		if a.From.After(to) || (!a.To.IsZero() && a.To.Before(from)) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// hand gives the GPU to a (a zero Workload leaves it idle) at time at.
func (tl *timeline) hand(uuid string, at time.Time, a workload.Allocation) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	hs := tl.holds[uuid]
	if n := len(hs); n > 0 && hs[n-1].To.IsZero() {
		hs[n-1].To = at
	}
	if a.Workload != "" {
		a.GPU, a.From, a.To = uuid, at, time.Time{}
		hs = append(hs, a)
	}
	tl.holds[uuid] = hs
}

// rig is a simulated node driven by a manual clock.
type rig struct {
	clk  *sim.ManualClock
	sim  *sim.Rig
	gpus *gpu.Manager
	devs []gpu.Device
}

func newRig(t testing.TB, p sim.Preset) *rig {
	t.Helper()
	clk := sim.NewClock(t0)
	r, err := sim.New(p, sim.WithClock(clk))
	require.NoError(t, err)
	g, err := gpu.New(context.Background(), r, gpu.WithClock(clk))
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	return &rig{clk: clk, sim: r, gpus: g, devs: g.Devices()}
}

func preset(t testing.TB, name string) sim.Preset {
	t.Helper()
	p, err := sim.PresetByName(name)
	require.NoError(t, err)
	return p
}

// withCounters is p with an energy counter on every card: the simulator's
// exact ground truth for a preset whose cards have none.
func withCounters(p sim.Preset) sim.Preset {
	p.Cards = append([]sim.Card(nil), p.Cards...)
	for i := range p.Cards {
		p.Cards[i].EnergyCounter = true
	}
	return p
}

// counter reads a GPU's energy counter straight from the simulator.
func counter(t testing.TB, r *sim.Rig, index int) uint64 {
	t.Helper()
	s := []gpu.Sample{{Index: index}}
	require.NoError(t, r.Sample(context.Background(), s))
	require.True(t, s[0].EnergyMJ.Valid)
	return s[0].EnergyMJ.Value
}

func newMeter(t testing.TB, r *rig, tl accounting.Timeline, l accounting.Ledger, opts ...accounting.Option) *accounting.Meter {
	t.Helper()
	m, err := accounting.New(context.Background(), r.gpus, tl, l, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func records(t testing.TB, l accounting.Ledger, q accounting.Query) []accounting.Record {
	t.Helper()
	rs, err := accounting.Collect(l.Query(context.Background(), q))
	require.NoError(t, err)
	return rs
}

// checkStreams asserts what every ledger must show: each GPU's records
// follow on without holes or overlaps, none crosses a record window, and
// they add up to what the meter metered.
func checkStreams(t testing.TB, rs []accounting.Record, m *accounting.Meter, window time.Duration) map[string]int64 {
	t.Helper()
	sum := map[string]int64{}
	end := map[string]time.Time{}
	for _, r := range rs {
		if e, ok := end[r.GPU]; ok {
			require.True(t, r.Start.Equal(e), "GPU %s: record from %s follows one that ended at %s", r.GPU, r.Start, e)
		}
		end[r.GPU] = r.End
		require.True(t, r.End.After(r.Start))
		require.LessOrEqual(t, r.End.Sub(r.Start.Truncate(window)), window, "record %s-%s crosses a window", r.Start, r.End)
		sum[r.GPU] += r.EnergyMJ
	}
	if m != nil {
		for _, g := range m.Stats().GPUs {
			require.Equal(t, g.MeteredMJ, sum[g.UUID], "GPU %s: records add up to the metered energy", g.UUID)
		}
	}
	return sum
}
