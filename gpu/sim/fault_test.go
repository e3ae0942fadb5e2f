package sim_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// watch starts WatchEvents in a goroutine owned by the test and returns the
// channel it delivers to and a function that stops it and returns its error.
func watch(t *testing.T, rig *sim.Rig) (<-chan gpu.Event, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan gpu.Event)
	done := make(chan error, 1)
	go func() { done <- rig.WatchEvents(ctx, ch) }()
	stop := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

func next(t *testing.T, ch <-chan gpu.Event) gpu.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event delivered")
		return gpu.Event{}
	}
}

func TestXID79LosesTheDevice(t *testing.T) {
	ctx := context.Background()
	clk := sim.NewClock(t0)
	rig := newRig(t, sim.PresetA40, clk)
	devs, err := rig.Devices(ctx)
	require.NoError(t, err)
	events, _ := watch(t, rig)

	clk.Advance(time.Minute)
	require.NoError(t, rig.InjectXID(3, 79))
	e := next(t, events)
	assert.Equal(t, gpu.Event{Index: 3, UUID: devs[3].UUID, Kind: gpu.EventXID, XID: 79, Time: t0.Add(time.Minute)}, e)

	dst := samplesFor(devs)
	err = rig.Sample(ctx, dst)
	require.ErrorIs(t, err, gpu.ErrDeviceLost)
	var de *gpu.DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 3, de.Index)
	assert.Equal(t, devs[3].UUID, de.UUID)
	assert.Contains(t, err.Error(), "fallen off the bus")
	assert.False(t, dst[3].PowerW.Valid, "a lost device's reading is cleared, not stale")
	assert.Equal(t, devs[3].UUID, dst[3].UUID)
	for i, s := range dst {
		if i != 3 {
			assert.True(t, s.PowerW.Valid, "device %d still reads", i)
		}
	}

	controls := map[string]error{
		"PowerLimits":   func() error { _, err := rig.PowerLimits(ctx, 3); return err }(),
		"SetPowerLimit": rig.SetPowerLimit(ctx, 3, 200),
		"LockClocks":    rig.LockClocks(ctx, 3, 210, 1200),
		"ResetClocks":   rig.ResetClocks(ctx, 3),
		"Processes":     func() error { _, err := rig.Processes(ctx, 3); return err }(),
	}
	for name, err := range controls {
		assert.ErrorIs(t, err, gpu.ErrDeviceLost, name)
	}

	require.NoError(t, rig.Reset(3))
	assert.True(t, sample(t, rig, 3).PowerW.Valid, "a reset brings the device back")
}

func TestXID48IsOnlyAnEvent(t *testing.T) {
	rig := newRig(t, sim.PresetA100, nil)
	events, _ := watch(t, rig)
	require.NoError(t, rig.InjectXID(5, 48))
	e := next(t, events)
	assert.Equal(t, gpu.EventXID, e.Kind)
	assert.Equal(t, 48, e.XID)
	assert.Equal(t, 5, e.Index)
	assert.True(t, sample(t, rig, 5).PowerW.Valid, "the Manager, not the backend, decides what Xid 48 means")

	assert.ErrorIs(t, rig.InjectXID(9, 48), gpu.ErrNotFound)
	assert.ErrorIs(t, rig.InjectXID(0, 0), gpu.ErrInvalid)
}

func TestEventsReachEveryWatcherAndWaitForOne(t *testing.T) {
	rig := newRig(t, sim.PresetMixed, nil)
	// Raised before anyone watches: kept for the first watcher.
	require.NoError(t, rig.InjectXID(0, 31))
	a, _ := watch(t, rig)
	assert.Equal(t, 31, next(t, a).XID)

	b, _ := watch(t, rig)
	// Make sure b is attached: an event only b could have missed otherwise.
	require.Eventually(t, func() bool {
		require.NoError(t, rig.InjectXID(1, 13))
		select {
		case e := <-b:
			return e.XID == 13
		case <-time.After(10 * time.Millisecond):
			return false
		}
	}, 5*time.Second, time.Millisecond)
	for {
		// Drain a's copies of the probes.
		select {
		case <-a:
			continue
		case <-time.After(50 * time.Millisecond):
		}
		break
	}
	require.NoError(t, rig.InjectXID(2, 43))
	assert.Equal(t, 43, next(t, a).XID)
	assert.Equal(t, 43, next(t, b).XID)
}

func TestBrokenEventPath(t *testing.T) {
	rig := newRig(t, sim.PresetA40, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	broken := errors.New("nvml event set wait failed")
	rig.BreakEvents(broken)
	err := rig.WatchEvents(ctx, make(chan gpu.Event))
	require.ErrorIs(t, err, broken)
	assert.NotErrorIs(t, err, context.DeadlineExceeded)

	rig.RepairEvents()
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	assert.ErrorIs(t, rig.WatchEvents(short, make(chan gpu.Event)), context.DeadlineExceeded)
}

func TestHang(t *testing.T) {
	ctx := context.Background()
	rig := newRig(t, sim.PresetRTX3090, nil)
	devs, err := rig.Devices(ctx)
	require.NoError(t, err)
	require.NoError(t, rig.Hang(2))

	t.Run("sample waits for the context and reports the hung device", func(t *testing.T) {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		dst := samplesFor(devs)
		err := rig.Sample(tctx, dst)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var de *gpu.DeviceError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, 2, de.Index)
		assert.False(t, dst[2].PowerW.Valid)
		assert.True(t, dst[0].PowerW.Valid, "the other devices still read")
	})
	t.Run("control call waits for the context", func(t *testing.T) {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		_, err := rig.PowerLimits(tctx, 2)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "hung")
	})
	t.Run("other devices are not hung", func(t *testing.T) {
		_, err := rig.PowerLimits(ctx, 1)
		assert.NoError(t, err)
	})
	t.Run("unhang releases a blocked call", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- rig.SetPowerLimit(ctx, 2, 200) }()
		time.Sleep(10 * time.Millisecond) // let it block; the result is the same if it has not yet
		require.NoError(t, rig.Unhang(2))
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("unhang did not release the call")
		}
	})
	t.Run("close releases a blocked call", func(t *testing.T) {
		r := newRig(t, sim.PresetRTX3090, nil)
		require.NoError(t, r.Hang(0))
		done := make(chan error, 1)
		go func() { done <- r.Sample(ctx, []gpu.Sample{{Index: 0}}) }()
		require.NoError(t, r.Close())
		select {
		case err := <-done:
			assert.ErrorIs(t, err, gpu.ErrUnavailable)
		case <-time.After(5 * time.Second):
			t.Fatal("close did not release the call")
		}
	})
}

func TestFailNext(t *testing.T) {
	ctx := context.Background()
	rig := newRig(t, sim.PresetCMP170HX, nil)
	flaky := errors.New("nvml: unknown error")
	require.NoError(t, rig.FailNext(4, 2, flaky))

	err := rig.Sample(ctx, []gpu.Sample{{Index: 4}, {Index: 5}})
	require.ErrorIs(t, err, flaky, "first call")
	var de *gpu.DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 4, de.Index)
	_, err = rig.PowerLimits(ctx, 4)
	assert.ErrorIs(t, err, flaky, "second call")
	_, err = rig.PowerLimits(ctx, 4)
	assert.NoError(t, err, "third call succeeds")

	err = rig.FailNext(4, -1, nil)
	require.ErrorIs(t, err, gpu.ErrInvalid)
	assert.Contains(t, err.Error(), "negative")
	assert.ErrorIs(t, rig.FailNext(4, 1, nil), gpu.ErrInvalid)
}

func TestSetLoadIgnoresFaults(t *testing.T) {
	rig := newRig(t, sim.PresetA40, nil)
	require.NoError(t, rig.InjectXID(0, 79))
	require.NoError(t, rig.Hang(1))
	assert.NoError(t, rig.SetLoad(0, sim.Load{Util: 1}), "a workload ending on a lost device must be recordable")
	assert.NoError(t, rig.SetLoad(1, sim.Load{Util: 1}))
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	rig := newRig(t, sim.PresetA100, nil)
	events, stop := watch(t, rig)
	_ = events
	require.NoError(t, rig.Close())
	require.NoError(t, rig.Close(), "Close is idempotent")
	assert.ErrorIs(t, stop(), gpu.ErrUnavailable, "a watcher ends when the rig closes")

	_, err := rig.Devices(ctx)
	assert.ErrorIs(t, err, gpu.ErrUnavailable)
	calls := map[string]error{
		"Sample":        rig.Sample(ctx, []gpu.Sample{{Index: 0}}),
		"SetPowerLimit": rig.SetPowerLimit(ctx, 0, 300),
		"SetMIG":        rig.SetMIG(ctx, 0, true),
		"SetLoad":       rig.SetLoad(0, sim.Load{}),
		"Load":          loadErr(rig, 0),
		"Reset":         rig.Reset(0),
		"InjectXID":     rig.InjectXID(0, 79),
		"Hang":          rig.Hang(0),
		"Unhang":        rig.Unhang(0),
		"FailNext":      rig.FailNext(0, 1, errors.New("flaky")),
		"WatchEvents":   rig.WatchEvents(ctx, make(chan gpu.Event)),
	}
	for name, err := range calls {
		assert.ErrorIs(t, err, gpu.ErrUnavailable, name)
	}
}

// TestWorldCallsOnUnknownGPU: loads and faults aimed at a GPU the rig does
// not have fail, say which, and leave the rig working.
func TestWorldCallsOnUnknownGPU(t *testing.T) {
	rig := newRig(t, sim.PresetRTX3090, nil) // GPUs 0-5
	calls := map[string]error{
		"SetLoad":   rig.SetLoad(6, sim.Load{Util: 1}),
		"Load":      loadErr(rig, 6),
		"Reset":     rig.Reset(-1),
		"InjectXID": rig.InjectXID(6, 79),
		"Hang":      rig.Hang(6),
		"Unhang":    rig.Unhang(6),
		"FailNext":  rig.FailNext(6, 1, errors.New("flaky")),
	}
	for name, err := range calls {
		assert.ErrorIs(t, err, gpu.ErrNotFound, name)
		assert.ErrorContains(t, err, "0-5", "%s: the error says which GPUs exist", name)
	}
	dst := []gpu.Sample{{Index: 0}, {Index: 5}}
	assert.NoError(t, rig.Sample(context.Background(), dst), "the rig still works")
}

func loadErr(rig *sim.Rig, index int) error {
	_, err := rig.Load(index)
	return err
}
