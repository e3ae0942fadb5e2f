//go:build cgo

package nvml

import (
	"context"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// watch starts WatchEvents and returns its event channel and result.
func watch(t *testing.T, b *Backend) (<-chan gpu.Event, <-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	ch := make(chan gpu.Event)
	done := make(chan error, 1)
	go func() { done <- b.WatchEvents(ctx, ch) }()
	return ch, done, cancel
}

func next(t *testing.T, ch <-chan gpu.Event) gpu.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
		return gpu.Event{}
	}
}

func TestWatchEventsDeliversXIDsAndECC(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41))
	b := newTestBackend(t, r)
	ch, done, cancel := watch(t, b)

	r.xid(1, 79) // the A40 fell off the bus
	r.xid(0, 13) // an application fault on the 3080
	r.events <- gonvml.EventData{Device: r.gpus[1].handle, EventType: gonvml.EventTypeDoubleBitEccError}

	tests := []struct {
		index int
		kind  gpu.EventKind
		xid   int
	}{
		{1, gpu.EventXID, 79}, // reported as an Xid; the Manager decides it is fatal
		{0, gpu.EventXID, 13},
		{1, gpu.EventDoubleBitECC, 0},
	}
	for _, tt := range tests {
		e := next(t, ch)
		assert.Equal(t, tt.index, e.Index)
		assert.Equal(t, r.gpus[tt.index].uuid, e.UUID, "event matched to its GPU by UUID")
		assert.Equal(t, tt.kind, e.Kind)
		assert.Equal(t, tt.xid, e.XID)
		assert.False(t, e.Time.IsZero())
	}

	// ECC events are registered only where ECC exists.
	assert.Equal(t, uint64(gonvml.EventTypeXidCriticalError), r.gpus[0].state.registered.Load())
	assert.Equal(t, uint64(healthEvents), r.gpus[1].state.registered.Load())

	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Eventually(t, func() bool { return r.frees.Load() == 1 }, 5*time.Second, time.Millisecond, "event set freed")
}

func TestWatchEventsSkipsDevicesWithoutEvents(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41), h100(0x81))
	r.gpus[0].GetSupportedEventTypesFunc = func() (uint64, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	r.gpus[2].RegisterEventsFunc = func(uint64, gonvml.EventSet) gonvml.Return { return gonvml.ERROR_UNKNOWN }
	b := newTestBackend(t, r)
	ch, done, cancel := watch(t, b)

	// A registration failure other than NOT_SUPPORTED leaves that GPU
	// unwatched, which the Manager must know.
	e := next(t, ch)
	assert.Equal(t, gpu.Event{Index: 2, UUID: r.gpus[2].uuid, Kind: gpu.EventEventPathBroken, Time: e.Time}, e)

	r.xid(1, 48)
	e = next(t, ch)
	assert.Equal(t, 1, e.Index)
	assert.Equal(t, 48, e.XID)
	assert.Zero(t, r.gpus[0].state.registered.Load(), "unsupported GPU not registered")

	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

func TestWatchEventsWaitFailure(t *testing.T) {
	r := newRig(a40(0x41))
	b := newTestBackend(t, r)
	_, done, _ := watch(t, b)
	r.waitErr.Store(int32(gonvml.ERROR_UNKNOWN))
	select {
	case err := <-done:
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrDriver)
		assert.Contains(t, err.Error(), "health events stopped")
	case <-time.After(5 * time.Second):
		t.Fatal("WatchEvents did not report the broken wait")
	}
	assert.Eventually(t, func() bool { return r.frees.Load() == 1 }, 5*time.Second, time.Millisecond)
}

func TestWatchEventsWithoutEventSupport(t *testing.T) {
	r := newRig(a40(0x41))
	r.EventSetCreateFunc = func() (gonvml.EventSet, gonvml.Return) { return nil, gonvml.ERROR_NOT_SUPPORTED }
	b := newTestBackend(t, r)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	// No events is not a broken event path: it waits for the end.
	assert.ErrorIs(t, b.WatchEvents(ctx, make(chan gpu.Event)), context.DeadlineExceeded)
}

func TestWatchEventsStopsOnClose(t *testing.T) {
	r := newRig(a40(0x41))
	b, err := New(t.Context(), WithLibrary(r), WithEventWait(testWait))
	require.NoError(t, err)
	_, done, _ := watch(t, b)
	time.Sleep(3 * testWait) // let it reach the wait loop
	require.NoError(t, b.Close())
	assert.Equal(t, int32(1), r.frees.Load(), "Close waits for the event set to be freed before Shutdown")
	assert.ErrorIs(t, <-done, gpu.ErrUnavailable)
}

// managerOverDGX runs a Manager over the extended dgxa100 mock and watches
// its health events until the test ends.
func managerOverDGX(t *testing.T) (*dgx, *gpu.Manager, <-chan gpu.Event) {
	t.Helper()
	x := newDGX()
	m, err := gpu.New(t.Context(), newTestBackend(t, x))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return x, m, m.Watch(t.Context())
}

// The dgxa100 mock extended with events, through the whole Manager: an
// Xid 79 makes the GPU unhealthy, an application Xid does not.
func TestManagerHealthOverDGXA100(t *testing.T) {
	x, m, events := managerOverDGX(t)

	x.events <- gonvml.EventData{Device: x.gpus[3].handle, EventType: gonvml.EventTypeXidCriticalError, EventData: 13}
	x.events <- gonvml.EventData{Device: x.gpus[5].handle, EventType: gonvml.EventTypeXidCriticalError, EventData: 79}
	for range 2 {
		select {
		case <-events:
		case <-time.After(5 * time.Second):
			t.Fatal("no event from the Manager")
		}
	}
	h3, err := m.Health(x.gpus[3].uuid)
	require.NoError(t, err)
	assert.True(t, h3.Healthy, "Xid 13 is the application's fault")
	h5, err := m.Health(x.gpus[5].uuid)
	require.NoError(t, err)
	assert.False(t, h5.Healthy)
	assert.Equal(t, 79, h5.XID)
}

// none asserts that no further event arrives for a while.
func none(t *testing.T, ch <-chan gpu.Event) {
	t.Helper()
	select {
	case e := <-ch:
		t.Fatalf("unexpected event %+v", e)
	case <-time.After(20 * testWait):
	}
}

// TestXID79FromALostGPU: after Xid 79 the GPU's handle answers
// GPU_IS_LOST to every call, GetUUID included. The event is matched by its
// handle, so it is delivered, and the GPU is then dropped from the event
// set without a second report while the others are still watched.
func TestXID79FromALostGPU(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41), h100(0x81))
	b := newTestBackend(t, r)
	ch, done, cancel := watch(t, b)
	assert.Eventually(t, func() bool { return r.creates.Load() == 1 }, 5*time.Second, time.Millisecond)

	r.gpus[1].state.lost.Store(true)
	r.xid(1, 79)
	e := next(t, ch)
	assert.Equal(t, gpu.Event{Index: 1, UUID: r.gpus[1].uuid, Kind: gpu.EventXID, XID: 79, Time: e.Time}, e)
	_, ret := r.gpus[1].GetUUID()
	require.Equal(t, gonvml.ERROR_GPU_IS_LOST, ret, "the mock's lost GPU fails GetUUID, as a real one does")

	// The next wait fails for the lost GPU; the set is built again
	// without it, and the others still report.
	assert.Eventually(t, func() bool { return r.creates.Load() == 2 }, 5*time.Second, time.Millisecond, "set rebuilt")
	r.xid(2, 48)
	e = next(t, ch)
	assert.Equal(t, 2, e.Index)
	assert.Equal(t, 48, e.XID)
	none(t, ch) // GPU 1 was reported once, by its Xid
	last := r.lastSet()
	assert.False(t, last.has(1), "the lost GPU is not in the new set")
	assert.True(t, last.has(0) && last.has(2))
	assert.GreaterOrEqual(t, r.frees.Load(), int32(1), "the old set was freed")

	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

// TestWaitLostOneOfEight: a GPU of a DGX falls off the bus without an Xid
// reaching us; the wait answers GPU_IS_LOST. Only that GPU turns
// unhealthy (device lost), and the stream goes on for the other seven.
func TestWaitLostOneOfEight(t *testing.T) {
	x, m, events := managerOverDGX(t)
	r := x.rig
	assert.Eventually(t, func() bool { return r.creates.Load() == 1 }, 5*time.Second, time.Millisecond)

	x.gpus[5].state.lost.Store(true)
	e := next(t, events)
	assert.Equal(t, 5, e.Index)
	assert.Equal(t, gpu.EventDeviceLost, e.Kind)
	assert.True(t, e.Fatal)

	x.events <- xidEvent(x.gpus[2], 48)
	e = next(t, events)
	assert.Equal(t, 2, e.Index, "the stream goes on for the others")
	assert.Equal(t, 48, e.XID)

	for i, g := range x.gpus {
		h, err := m.Health(g.uuid)
		require.NoError(t, err)
		switch i {
		case 5:
			assert.False(t, h.Healthy)
			assert.Equal(t, "device lost", h.Reason)
		case 2:
			assert.False(t, h.Healthy, "Xid 48 is a double-bit ECC error")
		default:
			assert.True(t, h.Healthy, "GPU %d must not be marked for another GPU's fall: %s", i, h.Reason)
		}
	}
}

// TestRegisterUnknownRebuildsSet: nvml.h says a set is undefined after a
// registration answers UNKNOWN; it is freed and built again without that
// GPU, which is reported as unwatched.
func TestRegisterUnknownRebuildsSet(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41), h100(0x81))
	r.gpus[1].RegisterEventsFunc = func(uint64, gonvml.EventSet) gonvml.Return { return gonvml.ERROR_UNKNOWN }
	b := newTestBackend(t, r)
	ch, _, _ := watch(t, b)

	e := next(t, ch)
	assert.Equal(t, gpu.Event{Index: 1, UUID: r.gpus[1].uuid, Kind: gpu.EventEventPathBroken, Time: e.Time}, e)
	assert.Eventually(t, func() bool { return r.creates.Load() == 2 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, int32(1), r.frees.Load(), "the undefined set was freed")

	r.xid(0, 13)
	r.xid(2, 31)
	assert.Equal(t, 0, next(t, ch).Index)
	assert.Equal(t, 2, next(t, ch).Index)
	last := r.lastSet()
	assert.True(t, last.has(0) && last.has(2), "the others registered again in the new set")
	assert.Len(t, r.gpus[1].RegisterEventsCalls(), 1, "the failing GPU is not retried in a loop")
}

// TestRegistrationOfALostGPU: a GPU lost before the watch starts is
// reported lost, not as a broken event path.
func TestRegistrationOfALostGPU(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41))
	b := newTestBackend(t, r)
	r.gpus[0].state.lost.Store(true)
	ch, _, _ := watch(t, b)
	e := next(t, ch)
	assert.Equal(t, 0, e.Index)
	assert.Equal(t, gpu.EventDeviceLost, e.Kind)
	r.xid(1, 13)
	assert.Equal(t, 1, next(t, ch).Index)
}

// TestWaitLostButEveryGPUAnswers: when no handle fails the lost GPU
// cannot be told, so the event path is reported broken, for the Manager
// to distrust every GPU until it is back.
func TestWaitLostButEveryGPUAnswers(t *testing.T) {
	r := newRig(a40(0x41))
	b := newTestBackend(t, r)
	_, done, _ := watch(t, b)
	r.waitErr.Store(int32(gonvml.ERROR_GPU_IS_LOST))
	select {
	case err := <-done:
		assert.ErrorIs(t, err, gpu.ErrDeviceLost)
		assert.Contains(t, err.Error(), "every GPU still answers")
	case <-time.After(5 * time.Second):
		t.Fatal("WatchEvents did not report the broken wait")
	}
}
