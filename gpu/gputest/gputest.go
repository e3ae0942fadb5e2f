package gputest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// Harness describes the backend under test.
type Harness struct {
	// New returns a fresh backend with at least one device. The suite
	// closes it.
	New func(t *testing.T) gpu.Backend
	// Advance, when set, lets time pass for the backend (a simulator's
	// driven clock) so that counters can move between two samples.
	Advance func(t *testing.T, b gpu.Backend, d time.Duration)
}

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, h Harness) {
	require.NotNil(t, h.New, "gputest: Harness.New is required")
	open := func(t *testing.T) (gpu.Backend, []gpu.Device) {
		t.Helper()
		b := h.New(t)
		t.Cleanup(func() { _ = b.Close() })
		devs, err := b.Devices(context.Background())
		require.NoError(t, err)
		require.NotEmpty(t, devs, "a backend under test must have devices")
		return b, devs
	}

	t.Run("Inventory", func(t *testing.T) {
		_, devs := open(t)
		uuids := map[string]bool{}
		minors := map[int]bool{}
		buses := map[string]bool{}
		for i, d := range devs {
			assert.Equal(t, i, d.Index, "device %d: Index must equal its position", i)
			assert.NotEmpty(t, d.UUID, "device %d: UUID", i)
			assert.False(t, uuids[d.UUID], "device %d: duplicate UUID %s", i, d.UUID)
			uuids[d.UUID] = true
			assert.NotEmpty(t, d.Name, "device %d: Name", i)
			assert.NotZero(t, d.MemoryBytes, "device %d: MemoryBytes", i)
			assert.False(t, minors[d.Minor], "device %d: duplicate minor %d", i, d.Minor)
			minors[d.Minor] = true
			norm, err := gpu.NormalizePCIBusID(d.PCIBusID)
			if assert.NoError(t, err, "device %d: PCIBusID", i) {
				assert.Equal(t, norm, d.PCIBusID, "device %d: PCIBusID must be normalised", i)
			}
			assert.False(t, buses[d.PCIBusID], "device %d: duplicate PCI bus id %s", i, d.PCIBusID)
			buses[d.PCIBusID] = true
			if d.LinkMax.Width != 0 && d.LinkCurrent.Width != 0 {
				assert.LessOrEqual(t, d.LinkCurrent.Width, d.LinkMax.Width, "device %d: current link wider than max", i)
			}
			if p, ok := d.PowerLimit.Value, d.PowerLimit.Valid; ok {
				assert.Greater(t, p.MaxW, 0.0, "device %d: MaxW", i)
				assert.LessOrEqual(t, p.MinW, p.MaxW, "device %d: MinW <= MaxW", i)
				assert.True(t, p.Contains(p.CurrentW), "device %d: current limit %v outside %v-%v", i, p.CurrentW, p.MinW, p.MaxW)
				assert.True(t, p.Contains(p.DefaultW), "device %d: default limit %v outside %v-%v", i, p.DefaultW, p.MinW, p.MaxW)
			}
		}
	})

	t.Run("Sample", func(t *testing.T) {
		b, devs := open(t)
		dst := samples(devs)
		require.NoError(t, b.Sample(context.Background(), dst))
		for i, s := range dst {
			d := devs[i]
			assert.Equal(t, d.Index, s.Index)
			assert.Equal(t, d.UUID, s.UUID, "device %d: Sample.UUID", i)
			if s.PowerW.Valid {
				assert.GreaterOrEqual(t, s.PowerW.Value, 0.0, "device %d: PowerW", i)
				if d.PowerLimit.Valid {
					// Power readings are averages and may overshoot the
					// limit briefly, never by half.
					assert.LessOrEqual(t, s.PowerW.Value, d.PowerLimit.Value.MaxW*1.5, "device %d: PowerW", i)
				}
			}
			if s.GPUUtilPct.Valid {
				assert.True(t, s.GPUUtilPct.Value >= 0 && s.GPUUtilPct.Value <= 100, "device %d: GPUUtilPct %d", i, s.GPUUtilPct.Value)
			}
			if s.MemUtilPct.Valid {
				assert.True(t, s.MemUtilPct.Value >= 0 && s.MemUtilPct.Value <= 100, "device %d: MemUtilPct %d", i, s.MemUtilPct.Value)
			}
			if s.MemoryUsedBytes.Valid {
				assert.LessOrEqual(t, s.MemoryUsedBytes.Value, d.MemoryBytes, "device %d: memory used beyond total", i)
			}
			if s.TemperatureC.Valid {
				assert.True(t, s.TemperatureC.Value > -40 && s.TemperatureC.Value < 150, "device %d: TemperatureC %d", i, s.TemperatureC.Value)
			}
		}
	})

	t.Run("EnergyCounterMonotonic", func(t *testing.T) {
		b, devs := open(t)
		first := samples(devs)
		require.NoError(t, b.Sample(context.Background(), first))
		if h.Advance != nil {
			h.Advance(t, b, 10*time.Second)
		}
		second := samples(devs)
		require.NoError(t, b.Sample(context.Background(), second))
		for i := range devs {
			assert.Equal(t, first[i].EnergyMJ.Valid, second[i].EnergyMJ.Valid, "device %d: energy counter support changed between samples", i)
			if first[i].EnergyMJ.Valid && second[i].EnergyMJ.Valid {
				assert.GreaterOrEqual(t, second[i].EnergyMJ.Value, first[i].EnergyMJ.Value, "device %d: energy counter went backwards", i)
			}
		}
	})

	t.Run("UnknownIndex", func(t *testing.T) {
		b, devs := open(t)
		dst := []gpu.Sample{{Index: len(devs) + 7}}
		err := b.Sample(context.Background(), dst)
		require.Error(t, err)
		assert.ErrorIs(t, err, gpu.ErrNotFound)
		var de *gpu.DeviceError
		if assert.ErrorAs(t, err, &de) {
			assert.Equal(t, len(devs)+7, de.Index)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		b, devs := open(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := b.Sample(ctx, samples(devs))
		require.Error(t, err, "Sample on a cancelled context must fail")
		assert.ErrorIs(t, err, context.Canceled)
	})

	t.Run("PowerLimits", func(t *testing.T) {
		b, devs := open(t)
		pl, ok := b.(gpu.PowerLimiter)
		if !ok {
			t.Logf("backend has no PowerLimiter")
			return
		}
		ctx := context.Background()
		for _, d := range devs {
			lim, err := pl.PowerLimits(ctx, d.Index)
			if errors.Is(err, gpu.ErrUnsupported) {
				assert.False(t, d.PowerLimit.Valid, "device %d: inventory has limits the backend cannot read", d.Index)
				continue
			}
			require.NoError(t, err, "device %d", d.Index)
			require.NoError(t, pl.SetPowerLimit(ctx, d.Index, lim.MinW), "device %d: set to its minimum", d.Index)
			got, err := pl.PowerLimits(ctx, d.Index)
			require.NoError(t, err)
			assert.InDelta(t, lim.MinW, got.CurrentW, 0.001, "device %d: limit not applied", d.Index)

			err = pl.SetPowerLimit(ctx, d.Index, lim.MaxW+1)
			assert.ErrorIs(t, err, gpu.ErrInvalid, "device %d: above the maximum", d.Index)
			err = pl.SetPowerLimit(ctx, d.Index, lim.MinW-1)
			assert.ErrorIs(t, err, gpu.ErrInvalid, "device %d: below the minimum", d.Index)

			require.NoError(t, pl.SetPowerLimit(ctx, d.Index, lim.DefaultW))
			got, err = pl.PowerLimits(ctx, d.Index)
			require.NoError(t, err)
			assert.InDelta(t, lim.DefaultW, got.CurrentW, 0.001, "device %d: default not restored", d.Index)
		}
		_, err := pl.PowerLimits(ctx, len(devs)+3)
		assert.ErrorIs(t, err, gpu.ErrNotFound)
	})

	t.Run("Clocks", func(t *testing.T) {
		b, devs := open(t)
		cl, ok := b.(gpu.ClockLocker)
		if !ok {
			t.Logf("backend has no ClockLocker")
			return
		}
		ctx := context.Background()
		for _, d := range devs {
			err := cl.LockClocks(ctx, d.Index, 210, 1200)
			if errors.Is(err, gpu.ErrUnsupported) {
				continue
			}
			require.NoError(t, err, "device %d", d.Index)
			require.NoError(t, cl.ResetClocks(ctx, d.Index), "device %d", d.Index)
		}
		assert.ErrorIs(t, cl.ResetClocks(ctx, len(devs)+3), gpu.ErrNotFound)
	})

	t.Run("Processes", func(t *testing.T) {
		b, devs := open(t)
		pl, ok := b.(gpu.ProcessLister)
		if !ok {
			t.Logf("backend has no ProcessLister")
			return
		}
		for _, d := range devs {
			procs, err := pl.Processes(context.Background(), d.Index)
			require.NoError(t, err, "device %d", d.Index)
			for _, p := range procs {
				assert.Greater(t, p.PID, 0, "device %d: PID", d.Index)
			}
		}
		_, err := pl.Processes(context.Background(), len(devs)+3)
		assert.ErrorIs(t, err, gpu.ErrNotFound)
	})

	t.Run("EventsStopWithContext", func(t *testing.T) {
		b, _ := open(t)
		es, ok := b.(gpu.EventSource)
		if !ok {
			t.Logf("backend has no EventSource")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- es.WatchEvents(ctx, make(chan gpu.Event)) }()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		case <-time.After(10 * time.Second):
			t.Fatal("WatchEvents did not return after its context ended")
		}
	})

	t.Run("CloseIdempotent", func(t *testing.T) {
		b, devs := open(t)
		require.NoError(t, b.Close())
		require.NoError(t, b.Close(), "a second Close must succeed")
		err := b.Sample(context.Background(), samples(devs))
		assert.ErrorIs(t, err, gpu.ErrUnavailable, "Sample after Close")
	})
}

func samples(devs []gpu.Device) []gpu.Sample {
	dst := make([]gpu.Sample, len(devs))
	for i, d := range devs {
		dst[i].Index = d.Index
	}
	return dst
}
