package gpu_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// A Manager over a simulated rig of ex-mining RTX 3080s on x1 risers: what
// they are, what they are good for, and what one draws under a miner.
func ExampleManager() {
	ctx := context.Background()
	p, _ := sim.PresetByName("rtx3080-riser")
	clk := sim.NewClock(time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC))
	rig, _ := sim.New(p, sim.WithClock(clk))
	m, err := gpu.New(ctx, rig, gpu.WithClock(clk))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	d := m.Devices()[0]
	r, _ := m.Readiness(d.UUID)
	fmt.Printf("%s, %.0f GiB, link %s: %.2f GB/s -> %s\n", d.Name, float64(d.MemoryBytes)/(1<<30), r.Link, r.HostLinkGBps, r.Use)
	fmt.Println("flags:", r.Flags)

	_ = m.SetPowerLimit(ctx, d.UUID, 220) // a miner's efficiency tuning
	_ = rig.SetLoad(0, sim.Load{Util: 1})
	clk.Advance(time.Minute)
	s, _ := m.Sample(ctx, d.UUID)
	fmt.Printf("mining at the 220 W cap: %.0f W, clocks held by %s\n", s.PowerW.Value, s.ClockEvents.Value)
	// Output:
	// NVIDIA GeForce RTX 3080, 10 GiB, link gen1 x1: 0.25 GB/s -> inference
	// flags: [x1-riser gen1-link slot-limited bus-limited no-ecc persistence-off]
	// mining at the 220 W cap: 220 W, clocks held by sw-power-cap
}
