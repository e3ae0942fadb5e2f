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
// a driven clock so the energy counters move between samples.
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
			})
		})
	}
}
