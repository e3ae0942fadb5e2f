package sim_test

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// newRig builds a preset rig on clk (a fresh driven clock when nil) and
// closes it when the test ends.
func newRig(t testing.TB, preset string, clk *sim.ManualClock) *sim.Rig {
	t.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(t, err)
	if clk == nil {
		clk = sim.NewClock(t0)
	}
	rig, err := sim.New(p, sim.WithClock(clk))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rig.Close() })
	return rig
}

func samplesFor(devs []gpu.Device) []gpu.Sample {
	dst := make([]gpu.Sample, len(devs))
	for i, d := range devs {
		dst[i].Index = d.Index
	}
	return dst
}

// sample reads one device.
func sample(t *testing.T, rig *sim.Rig, index int) gpu.Sample {
	t.Helper()
	dst := []gpu.Sample{{Index: index}}
	require.NoError(t, rig.Sample(context.Background(), dst))
	return dst[0]
}

func card(t *testing.T, preset string, index int) sim.Card {
	t.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(t, err)
	return p.Cards[index]
}

func TestPowerFollowsLoad(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		preset  string
		util    float64
		limitW  float64 // 0: keep the default
		lockMHz int     // 0: no clock lock
		// want is computed from the card's own model data.
		want     func(c sim.Card) float64
		capped   bool
		idle     bool
		smClockF func(c sim.Card) int
	}{
		{name: "idle draws the fixture's idle power", preset: "rtx3090", util: 0,
			want: func(c sim.Card) float64 { return c.IdleW }, idle: true,
			smClockF: func(c sim.Card) int { return c.IdleSMClockMHz }},
		{name: "full load draws the rated power", preset: "a40", util: 1,
			want:     func(c sim.Card) float64 { return c.FullLoadW },
			smClockF: func(c sim.Card) int { return c.BoostSMClockMHz }},
		{name: "half load is half-way", preset: "a100", util: 0.5,
			want:     func(c sim.Card) float64 { return c.IdleW + 0.5*(c.FullLoadW-c.IdleW) },
			smClockF: func(c sim.Card) int { return c.BoostSMClockMHz }},
		{name: "limit clips full load", preset: "rtx3090", util: 1, limitW: 200,
			want: func(sim.Card) float64 { return 200 }, capped: true,
			smClockF: func(c sim.Card) int {
				return int(math.Round(float64(c.BoostSMClockMHz) * math.Sqrt((200-c.IdleW)/(c.FullLoadW-c.IdleW))))
			}},
		{name: "limit above demand does not clip", preset: "rtx3090", util: 0.5, limitW: 200,
			want:     func(c sim.Card) float64 { return c.IdleW + 0.5*(c.FullLoadW-c.IdleW) },
			smClockF: func(c sim.Card) int { return c.BoostSMClockMHz }},
		{name: "clock lock at half boost quarters dynamic power", preset: "a100", util: 1, lockMHz: 705,
			want:     func(c sim.Card) float64 { return c.IdleW + 0.25*(c.FullLoadW-c.IdleW) },
			smClockF: func(c sim.Card) int { return 705 }},
		{name: "raised limit on a riser 3080 stays at rated draw", preset: "rtx3080-riser", util: 1, limitW: 336,
			want:     func(c sim.Card) float64 { return c.FullLoadW },
			smClockF: func(c sim.Card) int { return c.BoostSMClockMHz }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rig := newRig(t, tt.preset, nil)
			c := card(t, tt.preset, 0)
			if tt.limitW > 0 {
				require.NoError(t, rig.SetPowerLimit(ctx, 0, tt.limitW))
			}
			if tt.lockMHz > 0 {
				require.NoError(t, rig.LockClocks(ctx, 0, tt.lockMHz, tt.lockMHz))
			}
			require.NoError(t, rig.SetLoad(0, sim.Load{Util: tt.util}))
			s := sample(t, rig, 0)
			require.True(t, s.PowerW.Valid)
			assert.InDelta(t, tt.want(c), s.PowerW.Value, 0.001)
			require.True(t, s.ClockEvents.Valid)
			assert.Equal(t, tt.capped, s.ClockEvents.Value&gpu.ClockEventSWPowerCap != 0, "SW power cap reason: %v", s.ClockEvents.Value)
			assert.Equal(t, tt.idle, s.ClockEvents.Value&gpu.ClockEventGPUIdle != 0, "idle reason: %v", s.ClockEvents.Value)
			assert.Equal(t, gpu.Some(int(math.Round(tt.util*100))), s.GPUUtilPct)
			assert.Equal(t, gpu.Some(tt.smClockF(c)), s.SMClockMHz)
		})
	}
}

// TestPCIeCapMatchesReadiness: a busy device carries at most what
// gpu.LinkGBps says its link does, the same figure readiness judges the
// card by, from a gen1 x1 riser to a gen6 x16 slot.
func TestPCIeCapMatchesReadiness(t *testing.T) {
	tests := []struct {
		name string
		link gpu.Link // device link; no slot limit
	}{
		{"gen1 x1", gpu.Link{Gen: 1, Width: 1}},
		{"gen1 x4 (CMP)", gpu.Link{Gen: 1, Width: 4}},
		{"gen3 x16", gpu.Link{Gen: 3, Width: 16}},
		{"gen4 x16", gpu.Link{Gen: 4, Width: 16}},
		{"gen5 x16", gpu.Link{Gen: 5, Width: 16}},
		{"gen6 x16", gpu.Link{Gen: 6, Width: 16}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sim.A40()
			c.DeviceLink = tt.link
			rig, err := sim.New(sim.Preset{Name: "pcie", Cards: []sim.Card{c}}, sim.WithClock(sim.NewClock(t0)))
			require.NoError(t, err)
			defer rig.Close()
			require.NoError(t, rig.SetLoad(0, sim.Load{Util: 1, PCIeRxBytesPerS: math.MaxUint64, PCIeTxBytesPerS: 1e6}))

			s := sample(t, rig, 0)
			assert.Equal(t, tt.link, s.Link, "a busy link trains to its best")
			want := uint64(math.Round(gpu.LinkGBps(s.Link) * 1e9))
			require.NotZero(t, want)
			assert.Equal(t, gpu.Some(want), s.PCIeRxBytesPerS, "capped at gpu.LinkGBps")
			assert.Equal(t, gpu.Some[uint64](1e6), s.PCIeTxBytesPerS, "below the cap, what the load asks")
		})
	}
}

func TestLoadDrivesReadings(t *testing.T) {
	rig := newRig(t, sim.PresetRTX3080Riser, nil)
	c := card(t, sim.PresetRTX3080Riser, 0)
	procs := []gpu.Process{{PID: 4242, UsedMemoryBytes: gpu.Some[uint64](6 << 30), Name: "miner"}}
	require.NoError(t, rig.SetLoad(0, sim.Load{
		Util: 1, MemUtil: 0.9, MemoryBytes: 6 << 30,
		PCIeRxBytesPerS: 4e9, PCIeTxBytesPerS: 1e6, Processes: procs,
	}))
	procs[0].PID = 1 // SetLoad keeps its own copy

	s := sample(t, rig, 0)
	assert.Equal(t, gpu.Some(90), s.MemUtilPct)
	assert.Equal(t, gpu.Some[uint64](6<<30), s.MemoryUsedBytes)
	assert.Equal(t, gpu.Link{Gen: 1, Width: 1}, s.Link, "a riser trains at gen1 x1 under load")
	assert.Equal(t, gpu.Some[uint64](250_000_000), s.PCIeRxBytesPerS, "a gen1 x1 riser carries 250 MB/s, whatever the job wants")
	assert.Equal(t, gpu.Some[uint64](1e6), s.PCIeTxBytesPerS)
	assert.Equal(t, gpu.Some(c.MaxMemClockMHz), s.MemClockMHz)
	assert.False(t, s.EnergyMJ.Valid, "the riser rig has no energy counter")
	assert.True(t, s.FanPct.Valid)

	got, err := rig.Processes(context.Background(), 0)
	require.NoError(t, err)
	assert.Equal(t, []gpu.Process{{PID: 4242, UsedMemoryBytes: gpu.Some[uint64](6 << 30), Name: "miner"}}, got)

	// A 3090 in a gen3 x16 slot trains to gen3 x16 under load and drops to
	// gen1 at idle.
	r2 := newRig(t, sim.PresetRTX3090, nil)
	require.NoError(t, r2.SetLoad(1, sim.Load{Util: 0.2}))
	assert.Equal(t, gpu.Link{Gen: 3, Width: 16}, sample(t, r2, 1).Link)
	assert.Equal(t, gpu.Link{Gen: 1, Width: 16}, sample(t, r2, 0).Link)
}

func TestSetLoadRejectsBadLoad(t *testing.T) {
	rig := newRig(t, sim.PresetRTX3080Riser, nil)
	err := rig.SetLoad(0, sim.Load{
		Util: 1.5, MemUtil: math.NaN(), MemoryBytes: 11 << 30,
		Processes: []gpu.Process{{PID: 0}, {PID: 7}, {PID: 7}},
	})
	require.ErrorIs(t, err, gpu.ErrInvalid)
	for _, want := range []string{"util 1.5", "memory util NaN", "exceeds", "pid 0", "pid 7 listed twice"} {
		assert.Contains(t, err.Error(), want)
	}
	l, err := rig.Load(0)
	require.NoError(t, err)
	assert.Equal(t, sim.Load{}, l, "a rejected load changes nothing")

	assert.ErrorIs(t, rig.SetLoad(8, sim.Load{}), gpu.ErrNotFound)
}

func TestEnergyIntegratesExactly(t *testing.T) {
	c := card(t, sim.PresetA40, 0)
	idleMW := int64(math.Round(c.IdleW * 1000))
	tests := []struct {
		name string
		// steps run in order: a load (nil keeps it) then a clock advance.
		steps []step
		want  uint64
	}{
		{"300 W for 10 s", []step{{load: &sim.Load{Util: 1}, d: 10 * time.Second}}, 3_000_000},
		{"idle 1.5 s", []step{{d: 1500 * time.Millisecond}}, uint64(idleMW) * 3 / 2},
		{"idle 5 s then full 5 s", []step{{d: 5 * time.Second}, {load: &sim.Load{Util: 1}, d: 5 * time.Second}},
			uint64(idleMW)*5 + 1_500_000},
		{"sub-millijoule remainders carry across segments", []step{
			{load: &sim.Load{Util: 1}, d: 1}, {load: &sim.Load{Util: 1}, d: 1}, {load: &sim.Load{Util: 1}, d: time.Second - 2},
		}, 300_000},
		{"30 days at 300 W", []step{{load: &sim.Load{Util: 1}, d: 30 * 24 * time.Hour}}, 300_000 * 30 * 24 * 3600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := sim.NewClock(t0)
			rig := newRig(t, sim.PresetA40, clk)
			start := sample(t, rig, 0).EnergyMJ
			require.True(t, start.Valid)
			for _, s := range tt.steps {
				if s.load != nil {
					require.NoError(t, rig.SetLoad(0, *s.load))
				}
				clk.Advance(s.d)
			}
			end := sample(t, rig, 0).EnergyMJ
			assert.Equal(t, tt.want, end.Value-start.Value)
		})
	}
}

type step struct {
	load *sim.Load
	d    time.Duration
}

func TestEnergyDoesNotDependOnSampling(t *testing.T) {
	run := func(every time.Duration) uint64 {
		clk := sim.NewClock(t0)
		rig := newRig(t, sim.PresetA100, clk)
		require.NoError(t, rig.SetLoad(0, sim.Load{Util: 0.37}))
		for left := 10 * time.Second; left > 0; left -= every {
			clk.Advance(min(every, left))
			sample(t, rig, 0)
		}
		return sample(t, rig, 0).EnergyMJ.Value
	}
	once := run(10 * time.Second)
	assert.Equal(t, once, run(333*time.Millisecond+7))
	assert.Equal(t, once, run(time.Second))
	c := card(t, sim.PresetA100, 0)
	wantMW := math.Round((c.IdleW + 0.37*(c.FullLoadW-c.IdleW)) * 1000)
	assert.Equal(t, uint64(wantMW)*10, once, "10 s at the model's power")
}

func TestClockGoingBackwardsNeverUncounts(t *testing.T) {
	clk := sim.NewClock(t0)
	rig := newRig(t, sim.PresetA40, clk)
	clk.Advance(10 * time.Second)
	e1 := sample(t, rig, 0).EnergyMJ.Value
	clk.Set(t0)
	assert.Equal(t, e1, sample(t, rig, 0).EnergyMJ.Value, "reading before the last observation holds")
	require.NoError(t, rig.SetLoad(0, sim.Load{Util: 1}))
	clk.Set(t0.Add(11 * time.Second))
	assert.GreaterOrEqual(t, sample(t, rig, 0).EnergyMJ.Value, e1)
}

func TestTemperatureFollowsPower(t *testing.T) {
	clk := sim.NewClock(t0)
	rig := newRig(t, sim.PresetRTX3090, clk)
	c := card(t, sim.PresetRTX3090, 0)
	temp := func() int { return sample(t, rig, 0).TemperatureC.Value }
	fan := func() int { return sample(t, rig, 0).FanPct.Value }

	assert.Equal(t, int(c.IdleC), temp(), "boots at its idle temperature")
	assert.Equal(t, c.FanIdlePct, fan())
	require.NoError(t, rig.SetLoad(0, sim.Load{Util: 1}))
	prev := temp()
	for range 10 {
		clk.Advance(c.ThermalLag / 2)
		now := temp()
		assert.GreaterOrEqual(t, now, prev, "heats up under load")
		prev = now
	}
	assert.InDelta(t, c.LoadC, float64(prev), 1, "settles at its load temperature")
	assert.InDelta(t, c.FanLoadPct, fan(), 1, "fan follows")

	// One lag after the load stops, 1/e of the way is left to go.
	require.NoError(t, rig.SetLoad(0, sim.Load{}))
	from := float64(prev)
	clk.Advance(c.ThermalLag)
	want := c.IdleC + (from-c.IdleC)*math.Exp(-1)
	assert.InDelta(t, want, float64(temp()), 1)

	// Capping power cools the card too.
	hotClk, cappedClk := sim.NewClock(t0), sim.NewClock(t0)
	hot := newRig(t, sim.PresetRTX3090, hotClk)
	capped := newRig(t, sim.PresetRTX3090, cappedClk)
	require.NoError(t, capped.SetPowerLimit(context.Background(), 0, 150))
	for _, r := range []*sim.Rig{hot, capped} {
		require.NoError(t, r.SetLoad(0, sim.Load{Util: 1}))
	}
	hotClk.Advance(5 * c.ThermalLag)
	cappedClk.Advance(5 * c.ThermalLag)
	assert.Less(t, sample(t, capped, 0).TemperatureC.Value, sample(t, hot, 0).TemperatureC.Value)
}

func TestControlErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		preset  string
		index   int
		call    func(r *sim.Rig) error
		is      error
		message string
	}{
		{"power limit above max", "rtx3080-riser", 3, func(r *sim.Rig) error { return r.SetPowerLimit(ctx, 3, 500) },
			gpu.ErrInvalid, "power limit 500 W outside 100-336 W for GPU 3 (NVIDIA GeForce RTX 3080)"},
		{"power limit below min", "a40", 0, func(r *sim.Rig) error { return r.SetPowerLimit(ctx, 0, 99.5) },
			gpu.ErrInvalid, "power limit 99.5 W outside 100-300 W for GPU 0 (NVIDIA A40)"},
		{"power limit NaN", "a40", 0, func(r *sim.Rig) error { return r.SetPowerLimit(ctx, 0, math.NaN()) },
			gpu.ErrInvalid, "power limit NaN W"},
		{"locked power limit", "cmp170hx", 2, func(r *sim.Rig) error { return r.SetPowerLimit(ctx, 2, 200) },
			gpu.ErrInvalid, "outside 250-250 W for GPU 2 (NVIDIA CMP 170HX): the limit is locked"},
		{"power limit unknown GPU", "a40", 0, func(r *sim.Rig) error { return r.SetPowerLimit(ctx, 8, 200) },
			gpu.ErrNotFound, "no GPU 8"},
		{"clock lock above max", "rtx3090", 0, func(r *sim.Rig) error { return r.LockClocks(ctx, 0, 210, 3000) },
			gpu.ErrInvalid, "clock lock 210-3000 MHz"},
		{"clock lock inverted", "rtx3090", 0, func(r *sim.Rig) error { return r.LockClocks(ctx, 0, 1500, 1200) },
			gpu.ErrInvalid, "want 0 < min <= max"},
		{"MIG on a GeForce", "rtx3090", 1, func(r *sim.Rig) error { return r.SetMIG(ctx, 1, true) },
			gpu.ErrUnsupported, "GPU 1 (NVIDIA GeForce RTX 3090) has no MIG"},
		{"MIG on an A40", "a40", 1, func(r *sim.Rig) error { return r.SetMIG(ctx, 1, true) },
			gpu.ErrUnsupported, "has no MIG"},
		{"MIG while processes run", "a100", 0, func(r *sim.Rig) error {
			require.NoError(t, r.SetLoad(0, sim.Load{Util: 1, Processes: []gpu.Process{{PID: 10}}}))
			return r.SetMIG(ctx, 0, true)
		}, gpu.ErrBusy, "stop them before switching MIG mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rig := newRig(t, tt.preset, nil)
			before, err := rig.PowerLimits(ctx, tt.index)
			require.NoError(t, err)
			err = tt.call(rig)
			require.ErrorIs(t, err, tt.is)
			assert.Contains(t, err.Error(), tt.message)
			after, err := rig.PowerLimits(ctx, tt.index)
			require.NoError(t, err)
			assert.Equal(t, before, after, "a refused call changes nothing")
		})
	}
}

func TestMIG(t *testing.T) {
	ctx := context.Background()
	rig := newRig(t, sim.PresetA100, nil)
	require.NoError(t, rig.SetMIG(ctx, 2, true))
	devs, err := rig.Devices(ctx)
	require.NoError(t, err)
	assert.Equal(t, gpu.FeatureEnabled, devs[2].MIG)
	assert.Equal(t, gpu.FeatureDisabled, devs[1].MIG)
	s := sample(t, rig, 2)
	assert.False(t, s.GPUUtilPct.Valid, "NVML has no utilization on MIG-enabled GPUs")
	assert.True(t, s.PowerW.Valid)
	require.NoError(t, rig.SetMIG(ctx, 2, false))
	assert.True(t, sample(t, rig, 2).GPUUtilPct.Valid)
}

func TestPowerLimitAndClockRoundTrip(t *testing.T) {
	ctx := context.Background()
	rig := newRig(t, sim.PresetRTX3080Riser, nil)
	require.NoError(t, rig.SetPowerLimit(ctx, 1, 252.5))
	lim, err := rig.PowerLimits(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, gpu.PowerLimits{CurrentW: 252.5, DefaultW: 320, MinW: 100, MaxW: 336}, lim)
	devs, err := rig.Devices(ctx)
	require.NoError(t, err)
	assert.Equal(t, 252.5, devs[1].PowerLimit.Value.CurrentW, "the inventory shows the current limit")

	require.NoError(t, rig.SetLoad(1, sim.Load{Util: 1}))
	require.NoError(t, rig.LockClocks(ctx, 1, 1200, 1200))
	locked := sample(t, rig, 1)
	require.NoError(t, rig.ResetClocks(ctx, 1))
	free := sample(t, rig, 1)
	assert.Less(t, locked.PowerW.Value, free.PowerW.Value, "locking below boost saves power")
	assert.Equal(t, gpu.Some(1200), locked.SMClockMHz)
}

func TestDeterminism(t *testing.T) {
	run := func() [][]gpu.Sample {
		clk := sim.NewClock(t0)
		rig := newRig(t, sim.PresetMixed, clk)
		devs, err := rig.Devices(context.Background())
		require.NoError(t, err)
		var out [][]gpu.Sample
		for i := range 20 {
			require.NoError(t, rig.SetLoad(i%8, sim.Load{Util: float64(i%5) / 4, MemoryBytes: uint64(i) << 20, PCIeRxBytesPerS: uint64(i) * 1e7}))
			if i == 7 {
				require.NoError(t, rig.SetPowerLimit(context.Background(), 3, 180))
			}
			clk.Advance(time.Duration(i+1) * 1234567 * time.Microsecond)
			dst := samplesFor(devs)
			require.NoError(t, rig.Sample(context.Background(), dst))
			out = append(out, dst)
		}
		return out
	}
	assert.Equal(t, run(), run())
}

func TestSampleDoesNotAllocate(t *testing.T) {
	clk := sim.NewClock(t0)
	rig := newRig(t, sim.PresetMixed, clk)
	devs, err := rig.Devices(context.Background())
	require.NoError(t, err)
	for i := range devs {
		require.NoError(t, rig.SetLoad(i, sim.Load{Util: 0.5, MemoryBytes: 1 << 30}))
	}
	dst := samplesFor(devs)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(200, func() {
		clk.Advance(time.Second)
		if err := rig.Sample(ctx, dst); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "Sample of a healthy rig allocates")
}

func BenchmarkSample(b *testing.B) {
	for _, preset := range []string{sim.PresetA100, sim.PresetMixed} {
		b.Run(preset, func(b *testing.B) {
			clk := sim.NewClock(t0)
			rig := newRig(b, preset, clk)
			devs, err := rig.Devices(context.Background())
			require.NoError(b, err)
			for i := range devs {
				require.NoError(b, rig.SetLoad(i, sim.Load{Util: 0.7}))
			}
			dst := samplesFor(devs)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				clk.Advance(time.Millisecond)
				if err := rig.Sample(ctx, dst); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(devs)), "ns/device")
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	clk := sim.NewClock(t0)
	rig := newRig(t, sim.PresetA40, clk)
	devs, err := rig.Devices(context.Background())
	require.NoError(t, err)

	watchCtx, stopWatching := context.WithCancel(context.Background())
	events := make(chan gpu.Event)
	var watchers sync.WaitGroup
	watchers.Go(func() { _ = rig.WatchEvents(watchCtx, events) })
	var got atomic.Int32
	watchers.Go(func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-events:
				got.Add(1)
			}
		}
	})

	ctx := context.Background()
	var workers sync.WaitGroup
	for g := range 4 {
		workers.Go(func() {
			dst := samplesFor(devs)
			for i := range 200 {
				clk.Advance(time.Millisecond)
				assert.NoError(t, rig.SetLoad((g+i)%8, sim.Load{Util: float64(i%10) / 10}))
				assert.NoError(t, rig.Sample(ctx, dst))
				assert.NoError(t, rig.SetPowerLimit(ctx, g, float64(150+i%100)))
				if i%50 == 0 {
					assert.NoError(t, rig.InjectXID(g, 13))
				}
			}
		})
	}
	workers.Wait()
	assert.Eventually(t, func() bool { return got.Load() == 16 }, 5*time.Second, time.Millisecond,
		"the watcher gets every injected event exactly once")
	stopWatching()
	watchers.Wait()
	assert.Equal(t, int32(16), got.Load())
}
