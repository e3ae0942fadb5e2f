package sim_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/gputest"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// TestConformance runs the backend conformance suite on every preset, with
// a driven clock so the energy counters move between samples, and with the
// rig's own faults for the hung-device and Xid checks.
func TestConformance(t *testing.T) {
	for _, p := range sim.Presets() {
		t.Run(p.Name, func(t *testing.T) {
			var mu sync.Mutex
			clocks := map[gpu.Backend]*sim.ManualClock{}
			gputest.Run(t, gputest.Harness{
				New: func(t *testing.T) gpu.Backend {
					clk := sim.NewClock(t0)
					rig, err := sim.New(p, sim.WithClock(clk))
					require.NoError(t, err)
					// Load every device so the counters have something to count.
					for i := range p.Cards {
						require.NoError(t, rig.SetLoad(i, sim.Load{Util: 0.5}))
					}
					mu.Lock()
					clocks[rig] = clk
					mu.Unlock()
					return rig
				},
				Advance: func(t *testing.T, b gpu.Backend, d time.Duration) {
					mu.Lock()
					clk := clocks[b]
					mu.Unlock()
					require.NotNil(t, clk, "backend not built by this harness")
					clk.Advance(d)
				},
				// Close releases hung calls, so the hang needs no cleanup.
				Hang: func(t *testing.T, b gpu.Backend, index int) {
					require.NoError(t, rigOf(t, b).Hang(index))
				},
				InjectXID: func(t *testing.T, b gpu.Backend, index, xid int) {
					require.NoError(t, rigOf(t, b).InjectXID(index, xid))
				},
			})
		})
	}
}

func rigOf(t *testing.T, b gpu.Backend) *sim.Rig {
	t.Helper()
	r, ok := b.(*sim.Rig)
	require.True(t, ok, "backend %T not built by this harness", b)
	return r
}
