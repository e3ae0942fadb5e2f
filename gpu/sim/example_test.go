package sim_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// A riser rig on a driven clock: list the inventory, put a miner on GPU 0
// and read its power after a minute.
func ExampleNew() {
	ctx := context.Background()
	preset, err := sim.PresetByName(sim.PresetRTX3080Riser)
	if err != nil {
		panic(err)
	}
	clock := sim.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	rig, err := sim.New(preset, sim.WithClock(clock))
	if err != nil {
		panic(err)
	}
	defer rig.Close()

	devs, err := rig.Devices(ctx)
	if err != nil {
		panic(err)
	}
	for _, d := range devs[:2] {
		fmt.Printf("%d %s %s %d MiB link %v (max %v) limit %v W\n",
			d.Index, d.PCIBusID, d.Name, d.MemoryBytes>>20, d.LinkCurrent, d.LinkMax, d.PowerLimit.Value.CurrentW)
	}

	// Mining: full load, power capped at 220 W as miners do.
	if err := rig.SetPowerLimit(ctx, 0, 220); err != nil {
		panic(err)
	}
	if err := rig.SetLoad(0, sim.Load{Util: 1, MemUtil: 0.95, MemoryBytes: 5 << 30}); err != nil {
		panic(err)
	}
	clock.Advance(time.Minute)

	s := []gpu.Sample{{Index: 0}}
	if err := rig.Sample(ctx, s); err != nil {
		panic(err)
	}
	fmt.Printf("gpu 0: %.2f W, %d%% util, %d C, clocks held by %v, energy counter present: %v\n",
		s[0].PowerW.Value, s[0].GPUUtilPct.Value, s[0].TemperatureC.Value, s[0].ClockEvents.Value, s[0].EnergyMJ.Valid)
	// Output:
	// 0 0000:01:00.0 NVIDIA GeForce RTX 3080 10240 MiB link gen1 x1 (max gen1 x1) limit 320 W
	// 1 0000:02:00.0 NVIDIA GeForce RTX 3080 10240 MiB link gen1 x1 (max gen1 x1) limit 320 W
	// gpu 0: 220.00 W, 100% util, 56 C, clocks held by sw-power-cap, energy counter present: false
}

// Energy on a driven clock is exact: an A40 at full load draws its rated
// 300 W, so 10 s are 3,000,000 mJ.
func ExampleRig_SetLoad() {
	ctx := context.Background()
	clock := sim.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	preset, _ := sim.PresetByName(sim.PresetA40)
	rig, _ := sim.New(preset, sim.WithClock(clock))
	defer rig.Close()

	read := func() gpu.Sample {
		s := []gpu.Sample{{Index: 0}}
		if err := rig.Sample(ctx, s); err != nil {
			panic(err)
		}
		return s[0]
	}
	before := read().EnergyMJ.Value
	_ = rig.SetLoad(0, sim.Load{Util: 1})
	clock.Advance(10 * time.Second)
	after := read()
	fmt.Printf("%.0f W, %d mJ\n", after.PowerW.Value, after.EnergyMJ.Value-before)
	// Output: 300 W, 3000000 mJ
}
