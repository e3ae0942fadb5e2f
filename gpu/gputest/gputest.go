package gputest

import (
	"context"
	"errors"
	"reflect"
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
	// Hang, when set, makes calls on device index of b (a backend New
	// returned) block until their context ends, as a wedged GPU makes the
	// driver block. The suite then checks that a Sample including that
	// device gives up at its deadline. A hook whose hang would also hold
	// up Close should undo it in a t.Cleanup: cleanups the hook registers
	// run before the suite's Close.
	Hang func(t *testing.T, b gpu.Backend, index int)
	// InjectXID, when set, makes device index of b report Xid xid through
	// its event stream. The suite then checks that the events reach a
	// gpu.EventSource watcher with the right device and Xid numbers.
	InjectXID func(t *testing.T, b gpu.Backend, index, xid int)
}

// Bounds of the fault checks: a Sample with a hung device must give up
// within hungSampleBound of its hungSampleDeadline, and injected events
// must arrive within eventBound. They are generous so that a loaded CI
// machine passes; a backend that ignores its context fails them all the
// same.
const (
	hungSampleDeadline = 50 * time.Millisecond
	hungSampleBound    = 3 * time.Second
	eventBound         = 5 * time.Second
)

// check is one subtest of the suite.
type check struct {
	name string
	run  func(t *testing.T, h Harness)
}

// checks returns the suite in order. Checks of optional capabilities or
// hooks pass with a log line when the backend or harness lacks them.
func checks() []check {
	return []check{
		{"Inventory", checkInventory},
		{"Sample", checkSample},
		{"EnergyCounterMonotonic", checkEnergyCounterMonotonic},
		{"UnknownIndex", checkUnknownIndex},
		{"CancelledContext", checkCancelledContext},
		{"PowerLimits", checkPowerLimits},
		{"Clocks", checkClocks},
		{"Processes", checkProcesses},
		{"EventsStopWithContext", checkEventsStopWithContext},
		{"HungDeviceSample", checkHungDeviceSample},
		{"XIDEvents", checkXIDEvents},
		{"CloseIdempotent", checkCloseIdempotent},
	}
}

// Checks returns the names of the suite's checks, in the order Run runs
// them. Each is the name of a subtest of Run, so one check runs with
// go test -run 'TestConformance/<name>'.
func Checks() []string {
	cs := checks()
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.name
	}
	return names
}

// Run runs the conformance suite as subtests of t, one per name in Checks.
func Run(t *testing.T, h Harness) {
	require.NotNil(t, h.New, "gputest: Harness.New is required")
	for _, c := range checks() {
		t.Run(c.name, func(t *testing.T) { c.run(t, h) })
	}
}

// open builds a backend for one check; the check's cleanup closes it.
func (h Harness) open(t *testing.T) (gpu.Backend, []gpu.Device) {
	t.Helper()
	b := h.New(t)
	t.Cleanup(func() { _ = b.Close() })
	devs, err := b.Devices(context.Background())
	require.NoError(t, err)
	require.NotEmpty(t, devs, "a backend under test must have devices")
	return b, devs
}

// checkInventory: every layer above addresses devices by index, UUID, bus
// id and device node, so these must be consistent and unique.
func checkInventory(t *testing.T, h Harness) {
	_, devs := h.open(t)
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
		// Minor -1 means unknown (DevicePath ""); known minors name
		// distinct /dev/nvidiaN nodes.
		if d.Minor >= 0 {
			assert.False(t, minors[d.Minor], "device %d: duplicate minor %d", i, d.Minor)
			minors[d.Minor] = true
		} else {
			assert.Equal(t, -1, d.Minor, "device %d: an unknown minor is -1", i)
		}
		norm, err := gpu.NormalizePCIBusID(d.PCIBusID)
		if assert.NoError(t, err, "device %d: PCIBusID", i) {
			assert.Equal(t, norm, d.PCIBusID, "device %d: PCIBusID must be normalised", i)
		}
		assert.False(t, buses[d.PCIBusID], "device %d: duplicate PCI bus id %s", i, d.PCIBusID)
		buses[d.PCIBusID] = true
		if d.LinkMax.Width != 0 && d.LinkCurrent.Width != 0 {
			assert.LessOrEqual(t, d.LinkCurrent.Width, d.LinkMax.Width, "device %d: current link wider than max", i)
		}
		// Readiness tells a slot limit from a card limit by these: the
		// max is the lower of GPU and host, so neither may be below it.
		if d.LinkMaxGPUGen != 0 && d.LinkMax.Gen != 0 {
			assert.GreaterOrEqual(t, d.LinkMaxGPUGen, d.LinkMax.Gen, "device %d: the GPU's own generation below the max of GPU and host", i)
		}
		if d.LinkMaxHostGen != 0 {
			assert.Equal(t, d.LinkMax.Gen, d.LinkMaxHostGen, "device %d: a known host generation is the lower one, so the max", i)
			assert.Less(t, d.LinkMaxHostGen, d.LinkMaxGPUGen, "device %d: the host's generation is known only when below the GPU's", i)
		}
		if d.ReservedMemoryBytes.Valid {
			assert.Less(t, d.ReservedMemoryBytes.Value, d.MemoryBytes, "device %d: reserved memory is part of the total", i)
		}
		if p, ok := d.PowerLimit.Value, d.PowerLimit.Valid; ok {
			assert.Greater(t, p.MaxW, 0.0, "device %d: MaxW", i)
			assert.LessOrEqual(t, p.MinW, p.MaxW, "device %d: MinW <= MaxW", i)
			assert.True(t, p.Contains(p.CurrentW), "device %d: current limit %v outside %v-%v", i, p.CurrentW, p.MinW, p.MaxW)
			// A default the device does not tell is 0, never a guess.
			if p.HasDefault() {
				assert.True(t, p.Contains(p.DefaultW), "device %d: default limit %v outside %v-%v", i, p.DefaultW, p.MinW, p.MaxW)
			}
		}
	}
}

// checkSample: readings are either absent or plausible, and name their
// device.
func checkSample(t *testing.T, h Harness) {
	b, devs := h.open(t)
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
}

// checkEnergyCounterMonotonic: accounting differences the energy counter,
// so it must never run backwards.
func checkEnergyCounterMonotonic(t *testing.T, h Harness) {
	b, devs := h.open(t)
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
}

// checkUnknownIndex: a bad index is the caller's error, categorised and
// attributed to the index.
func checkUnknownIndex(t *testing.T, h Harness) {
	b, devs := h.open(t)
	dst := []gpu.Sample{{Index: len(devs) + 7}}
	err := b.Sample(context.Background(), dst)
	require.Error(t, err)
	assert.ErrorIs(t, err, gpu.ErrNotFound)
	var de *gpu.DeviceError
	if assert.ErrorAs(t, err, &de) {
		assert.Equal(t, len(devs)+7, de.Index)
	}
}

// checkCancelledContext: a cancelled caller gets its context's error.
func checkCancelledContext(t *testing.T, h Harness) {
	b, devs := h.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.Sample(ctx, samples(devs))
	require.Error(t, err, "Sample on a cancelled context must fail")
	assert.ErrorIs(t, err, context.Canceled)
}

// checkPowerLimits: power caps are how mining is tuned and the site cap
// enforced, so limits must apply and stay inside their constraints.
func checkPowerLimits(t *testing.T, h Harness) {
	b, devs := h.open(t)
	pl, ok := capability[gpu.PowerLimiter](t, b)
	if !ok {
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

		// Devices tell the limit in force, so the inventory follows a set.
		if now, err := b.Devices(ctx); assert.NoError(t, err) && now[d.Index].PowerLimit.Valid {
			assert.InDelta(t, lim.MinW, now[d.Index].PowerLimit.Value.CurrentW, 0.001, "device %d: inventory not updated by a set", d.Index)
		}
		if !lim.HasDefault() {
			t.Logf("device %d reports no default limit: nothing to restore", d.Index)
			continue
		}
		require.NoError(t, pl.SetPowerLimit(ctx, d.Index, lim.DefaultW))
		got, err = pl.PowerLimits(ctx, d.Index)
		require.NoError(t, err)
		assert.InDelta(t, lim.DefaultW, got.CurrentW, 0.001, "device %d: default not restored", d.Index)
	}
	_, err := pl.PowerLimits(ctx, len(devs)+3)
	assert.ErrorIs(t, err, gpu.ErrNotFound)
}

// checkClocks: clock locks apply and reset where supported.
func checkClocks(t *testing.T, h Harness) {
	b, devs := h.open(t)
	cl, ok := capability[gpu.ClockLocker](t, b)
	if !ok {
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
}

// checkProcesses: process lists name real PIDs.
func checkProcesses(t *testing.T, h Harness) {
	b, devs := h.open(t)
	pl, ok := capability[gpu.ProcessLister](t, b)
	if !ok {
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
}

// checkEventsStopWithContext: the event watcher is a goroutine the
// Manager owns; it must stop with its context.
func checkEventsStopWithContext(t *testing.T, h Harness) {
	b, _ := h.open(t)
	es, ok := capability[gpu.EventSource](t, b)
	if !ok {
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
}

// checkHungDeviceSample: a wedged GPU must not hold a Sample past its
// deadline, or one bad card stalls the telemetry of the whole node.
func checkHungDeviceSample(t *testing.T, h Harness) {
	if h.Hang == nil {
		t.Logf("harness has no Hang hook")
		return
	}
	b, devs := h.open(t)
	hung := len(devs) - 1
	h.Hang(t, b, hung)
	ctx, cancel := context.WithTimeout(context.Background(), hungSampleDeadline)
	defer cancel()
	begin := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Sample(ctx, samples(devs)) }()
	select {
	case err := <-done:
		elapsed := time.Since(begin)
		t.Logf("Sample of %d GPUs with GPU %d hung returned after %v: %v", len(devs), hung, elapsed, err)
		require.Error(t, err, "Sample including a hung GPU must fail")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, elapsed, hungSampleBound, "Sample returned %v after its %v deadline", elapsed, hungSampleDeadline)
	case <-time.After(hungSampleBound):
		t.Fatalf("Sample including hung GPU %d did not return within %v of its %v deadline", hung, hungSampleBound, hungSampleDeadline)
	}
}

// checkXIDEvents: Xids must reach a watcher with the device and number the
// driver reported, since the Manager decides health from them (79 is
// fatal, 13 is the application's fault).
func checkXIDEvents(t *testing.T, h Harness) {
	if h.InjectXID == nil {
		t.Logf("harness has no InjectXID hook")
		return
	}
	b, devs := h.open(t)
	es, ok := b.(gpu.EventSource)
	require.True(t, ok, "the harness injects Xids, so the backend must be a gpu.EventSource")

	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan gpu.Event)
	done := make(chan error, 1)
	go func() { done <- es.WatchEvents(ctx, ch) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(eventBound):
			t.Errorf("WatchEvents did not return within %v of its context ending", eventBound)
		}
	})

	type key struct{ index, xid int }
	want := map[key]bool{{0, 13}: true, {len(devs) - 1, 79}: true}
	for k := range want {
		h.InjectXID(t, b, k.index, k.xid)
	}
	timeout := time.After(eventBound)
	for len(want) > 0 {
		select {
		case e := <-ch:
			if e.Kind != gpu.EventXID && e.Kind != gpu.EventDeviceLost {
				t.Logf("ignoring a %s event of GPU %d", e.Kind, e.Index)
				continue
			}
			k := key{e.Index, e.XID}
			require.True(t, want[k], "unexpected event %+v: want Xid 13 on GPU 0 and 79 on GPU %d", e, len(devs)-1)
			delete(want, k)
			if e.Kind == gpu.EventDeviceLost {
				assert.Equal(t, 79, e.XID, "only Xid 79 may arrive as device-lost")
			}
			if e.UUID != "" {
				assert.Equal(t, devs[e.Index].UUID, e.UUID, "event UUID of GPU %d", e.Index)
			}
			t.Logf("Xid %d reached the watcher for GPU %d", e.XID, e.Index)
		case err := <-done:
			t.Fatalf("WatchEvents returned before delivering the injected Xids: %v", err)
		case <-timeout:
			t.Fatalf("injected Xids not delivered within %v: missing %v", eventBound, want)
		}
	}
}

// checkCloseIdempotent: Close may be called twice, and a closed backend
// says it is unavailable.
func checkCloseIdempotent(t *testing.T, h Harness) {
	b, devs := h.open(t)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "a second Close must succeed")
	err := b.Sample(context.Background(), samples(devs))
	assert.ErrorIs(t, err, gpu.ErrUnavailable, "Sample after Close")
}

// capability returns b as the optional interface T, or logs that the
// backend lacks it: a missing capability is not a failure.
func capability[T any](t *testing.T, b gpu.Backend) (T, bool) {
	c, ok := b.(T)
	if !ok {
		t.Logf("backend %T has no %v", b, reflect.TypeFor[T]())
	}
	return c, ok
}

func samples(devs []gpu.Device) []gpu.Sample {
	dst := make([]gpu.Sample, len(devs))
	for i, d := range devs {
		dst[i].Index = d.Index
	}
	return dst
}
