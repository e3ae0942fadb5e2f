package gpu_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

var start = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// newRig starts a Manager over a simulated preset under a driven clock.
func newRig(t *testing.T, preset string) (*gpu.Manager, *sim.Rig, *sim.ManualClock) {
	t.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(t, err)
	clk := sim.NewClock(start)
	rig, err := sim.New(p, sim.WithClock(clk))
	require.NoError(t, err)
	m, err := gpu.New(context.Background(), rig, gpu.WithClock(clk))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return m, rig, clk
}

func TestManagerInventory(t *testing.T) {
	m, _, _ := newRig(t, "rtx3080-riser")
	devs := m.Devices()
	require.Len(t, devs, 8)
	d, err := m.Device(devs[3].UUID)
	require.NoError(t, err)
	assert.Equal(t, devs[3], d)
	assert.Equal(t, "/dev/nvidia3", d.DevicePath())
	assert.Empty(t, d.Serial, "GeForce boards have no serial")
	assert.Equal(t, gpu.FeatureUnsupported, d.ECC)

	_, err = m.Device("GPU-00000000-0000-0000-0000-000000000000")
	assert.ErrorIs(t, err, gpu.ErrNotFound)
	_, err = m.Sample(context.Background(), "nope")
	assert.ErrorIs(t, err, gpu.ErrNotFound)
	assert.ErrorIs(t, m.SetPowerLimit(context.Background(), "nope", 200), gpu.ErrNotFound)

	_, err = gpu.New(context.Background(), nil)
	assert.ErrorIs(t, err, gpu.ErrInvalid)
}

func TestManagerSamplesFollowLoad(t *testing.T) {
	m, rig, clk := newRig(t, "a40")
	ctx := context.Background()
	require.NoError(t, rig.SetLoad(0, sim.Load{Util: 1}))
	before, err := m.SampleAll(ctx, nil)
	require.NoError(t, err)
	clk.Advance(10 * time.Second)
	after, err := m.SampleAll(ctx, nil)
	require.NoError(t, err)

	assert.Equal(t, start.Add(10*time.Second), after[0].Time, "samples carry the Manager's clock")
	require.True(t, after[0].PowerW.Valid && after[1].PowerW.Valid)
	assert.Greater(t, after[0].PowerW.Value, 2*after[1].PowerW.Value, "a loaded GPU draws far more than an idle one")
	dE := after[0].EnergyMJ.Value - before[0].EnergyMJ.Value
	assert.InDelta(t, after[0].PowerW.Value*10*1000, float64(dE), 1, "energy over 10 s at constant power")
}

func TestManagerSampleAllocs(t *testing.T) {
	m, _, _ := newRig(t, "rtx3080-riser")
	ctx := context.Background()
	dst, err := m.SampleAll(ctx, nil)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		dst, _ = m.SampleAll(ctx, dst)
	})
	assert.Zero(t, allocs, "sampling a rig must not allocate in steady state")
}

func TestManagerPowerLimit(t *testing.T) {
	m, _, _ := newRig(t, "rtx3080-riser")
	ctx := context.Background()
	d := m.Devices()[0]
	lim := d.PowerLimit.Value
	require.True(t, d.PowerLimit.Valid)

	err := m.SetPowerLimit(ctx, d.UUID, lim.MaxW+100)
	require.ErrorIs(t, err, gpu.ErrInvalid)
	assert.Contains(t, err.Error(), "allowed range")
	assert.Contains(t, err.Error(), "100-336 W", "the error names the range")

	require.NoError(t, m.SetPowerLimit(ctx, d.UUID, 220))
	got, err := m.PowerLimits(ctx, d.UUID)
	require.NoError(t, err)
	assert.Equal(t, 220.0, got.CurrentW)
	d2, _ := m.Device(d.UUID)
	assert.Equal(t, 220.0, d2.PowerLimit.Value.CurrentW, "the inventory follows the limit")

	require.NoError(t, m.LockClocks(ctx, d.UUID, 1200, 1200))
	assert.ErrorIs(t, m.LockClocks(ctx, d.UUID, 1500, 1200), gpu.ErrInvalid)

	require.NoError(t, m.RestoreDefaults(ctx, d.UUID))
	got, err = m.PowerLimits(ctx, d.UUID)
	require.NoError(t, err)
	assert.Equal(t, lim.DefaultW, got.CurrentW, "a miner's tuning must not survive a handover")
}

func TestManagerHealth(t *testing.T) {
	m, rig, _ := newRig(t, "a40")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := m.Watch(ctx)
	devs := m.Devices()

	rig.InjectXID(2, 13)
	e := next(t, events)
	assert.Equal(t, gpu.EventXID, e.Kind)
	assert.Equal(t, 13, e.XID)
	assert.Equal(t, devs[2].UUID, e.UUID)
	assert.False(t, e.Fatal, "xid 13 is the application's fault")
	h, err := m.Health(devs[2].UUID)
	require.NoError(t, err)
	assert.True(t, h.Healthy)

	for _, xid := range []int{61, 63, 92, 94} {
		rig.InjectXID(1, xid)
		e = next(t, events)
		assert.False(t, e.Fatal, "xid %d is informational: the device goes on", xid)
	}
	h, _ = m.Health(devs[1].UUID)
	assert.True(t, h.Healthy)

	rig.InjectXID(3, 48)
	e = next(t, events)
	assert.True(t, e.Fatal, "xid 48 is a double-bit ECC error")
	h, _ = m.Health(devs[3].UUID)
	assert.False(t, h.Healthy)
	assert.Equal(t, 48, h.XID)
	assert.Contains(t, h.Reason, "double bit ECC")

	rig.InjectXID(5, 79)
	e = next(t, events)
	assert.Equal(t, gpu.EventDeviceLost, e.Kind)
	assert.True(t, e.Fatal)
	r, err := m.Readiness(devs[5].UUID)
	require.NoError(t, err)
	assert.Equal(t, gpu.UseNone, r.Use)

	// The lost GPU fails alone; the others still sample.
	samples, err := m.SampleAll(context.Background(), nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, gpu.ErrDeviceLost)
	var de *gpu.DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 5, de.Index)
	assert.False(t, samples[5].PowerW.Valid)
	assert.True(t, samples[4].PowerW.Valid)

	require.NoError(t, m.ResetHealth(devs[3].UUID))
	h, _ = m.Health(devs[3].UUID)
	assert.True(t, h.Healthy)
}

func TestManagerHungBackend(t *testing.T) {
	m, rig, _ := newRig(t, "rtx3090")
	rig.Hang(1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := m.SampleAll(ctx, nil)
		done <- err
	}()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("a hung device call did not return when its context ended")
	}
}

func TestManagerCloseEndsWatchers(t *testing.T) {
	m, _, _ := newRig(t, "a100")
	events := m.Watch(context.Background())
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close is idempotent")
	_, open := <-events
	assert.False(t, open, "Close ends every Watch channel")
	_, open = <-m.Watch(context.Background())
	assert.False(t, open, "Watch after Close returns a closed channel")
}

func TestManagerWatchEndsWithContext(t *testing.T) {
	m, _, _ := newRig(t, "a100")
	ctx, cancel := context.WithCancel(context.Background())
	events := m.Watch(ctx)
	cancel()
	select {
	case _, open := <-events:
		assert.False(t, open)
	case <-time.After(5 * time.Second):
		t.Fatal("Watch channel not closed after its context ended")
	}
}

// brokenEvents is a rig whose event stream fails.
type brokenEvents struct{ *sim.Rig }

func (brokenEvents) WatchEvents(ctx context.Context, ch chan<- gpu.Event) error {
	return errors.New("event set wait: unknown error")
}

func TestManagerEventPathBroken(t *testing.T) {
	p, err := sim.PresetByName("a40")
	require.NoError(t, err)
	rig, err := sim.New(p)
	require.NoError(t, err)
	m, err := gpu.New(context.Background(), brokenEvents{rig})
	require.NoError(t, err)
	defer m.Close()
	require.Eventually(t, func() bool {
		for _, d := range m.Devices() {
			if h, _ := m.Health(d.UUID); h.Healthy {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond, "without health events no GPU can be called healthy")
	for _, d := range m.Devices() {
		h, _ := m.Health(d.UUID)
		assert.True(t, h.Unknown, "but none is known to have failed: %+v", h)
		assert.Zero(t, h.XID)
	}
}

func next(t *testing.T, ch <-chan gpu.Event) gpu.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		require.True(t, ok, "event channel closed")
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return gpu.Event{}
	}
}

// BenchmarkSample samples every field of an 8-GPU simulated rig through the
// Manager. The goal is 0 allocs/op in steady state.
func BenchmarkSample(b *testing.B) {
	p, err := sim.PresetByName("rtx3080-riser")
	require.NoError(b, err)
	rig, err := sim.New(p)
	require.NoError(b, err)
	m, err := gpu.New(context.Background(), rig)
	require.NoError(b, err)
	defer m.Close()
	ctx := context.Background()
	dst, err := m.SampleAll(ctx, nil)
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		dst, _ = m.SampleAll(ctx, dst)
	}
	b.ReportMetric(float64(len(dst)), "gpus/op")
}

// TestManagerEventPathRecovers: a broken event stream makes every GPU
// untrusted; once the stream is back and holds, they are healthy again,
// but a GPU with a real fault stays unhealthy.
func TestManagerEventPathRecovers(t *testing.T) {
	p, err := sim.PresetByName("a40")
	require.NoError(t, err)
	rig, err := sim.New(p)
	require.NoError(t, err)
	m, err := gpu.New(context.Background(), rig, gpu.WithEventRetry(50*time.Millisecond))
	require.NoError(t, err)
	defer m.Close()
	devs := m.Devices()
	events := m.Watch(context.Background())
	require.NoError(t, rig.InjectXID(2, 48))
	require.Equal(t, 48, next(t, events).XID)

	rig.BreakEvents(errors.New("event set wait: unknown error"))
	var broken gpu.Event
	require.Eventually(t, func() bool {
		select {
		case e := <-events:
			if e.Kind == gpu.EventEventPathBroken && e.Index == 0 {
				broken = e
			}
		default:
		}
		h, _ := m.Health(devs[0].UUID)
		return !h.Healthy && h.Unknown && broken.Kind != 0
	}, 5*time.Second, time.Millisecond)
	assert.False(t, broken.Fatal, "a broken stream is no fault of the device: work on it goes on")
	rig.RepairEvents()
	require.Eventually(t, func() bool {
		h, _ := m.Health(devs[0].UUID)
		return h.Healthy
	}, 5*time.Second, 5*time.Millisecond, "the stream is back")
	h, _ := m.Health(devs[2].UUID)
	assert.False(t, h.Healthy, "a real fault is not cleared by the stream coming back")
	assert.Equal(t, 48, h.XID)
}

// noDefault is a backend whose devices do not tell their default limit.
type noDefault struct{ *sim.Rig }

func (b noDefault) PowerLimits(ctx context.Context, i int) (gpu.PowerLimits, error) {
	lim, err := b.Rig.PowerLimits(ctx, i)
	lim.DefaultW = 0
	return lim, err
}

// TestResetPowerLimitWithoutDefault: a device that does not tell its
// default limit gets back the limit it had when the Manager started, not
// a guess and not a silent no-op.
func TestResetPowerLimitWithoutDefault(t *testing.T) {
	p, err := sim.PresetByName("a40")
	require.NoError(t, err)
	rig, err := sim.New(p)
	require.NoError(t, err)
	ctx := context.Background()
	start, err := rig.PowerLimits(ctx, 0)
	require.NoError(t, err)
	m, err := gpu.New(ctx, noDefault{rig})
	require.NoError(t, err)
	defer m.Close()
	uuid := m.Devices()[0].UUID
	require.NoError(t, m.SetPowerLimit(ctx, uuid, start.MinW))
	require.NoError(t, m.ResetPowerLimit(ctx, uuid))
	lim, err := m.PowerLimits(ctx, uuid)
	require.NoError(t, err)
	assert.Equal(t, start.CurrentW, lim.CurrentW, "the limit at start is back")
	d, _ := m.Device(uuid)
	assert.Equal(t, start.CurrentW, d.PowerLimit.Value.CurrentW, "the inventory says what is in force")
}
