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

// The dgxa100 mock extended with events, through the whole Manager: an
// Xid 79 makes the GPU unhealthy, an application Xid does not.
func TestManagerHealthOverDGXA100(t *testing.T) {
	x := newDGX()
	b := newTestBackend(t, x)
	m, err := gpu.New(t.Context(), b)
	require.NoError(t, err)
	defer m.Close()
	watchCtx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events := m.Watch(watchCtx)

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
