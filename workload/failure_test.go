package workload_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

// Regression tests of the node manager's failure paths, one per behaviour
// an operator relies on.

func gpuOf(t *testing.T, n *node, uuid string) workload.GPU {
	t.Helper()
	for _, g := range n.m.GPUs() {
		if g.Device.UUID == uuid {
			return g
		}
	}
	t.Fatalf("no GPU %s", uuid)
	return workload.GPU{}
}

// stays checks that a workload keeps its state for a while.
func (n *node) stays(id string, state workload.State, d time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		w, err := n.m.Get(id)
		require.NoError(n.t, err)
		require.Equal(n.t, state, w.State, "%s left %s: %s", id, state, w.Reason)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBrokenEventStreamLeavesWorkAlone: when the GPUs' health event stream
// breaks, nothing is known to have failed: running work runs on, queued
// work pinned to those GPUs waits, and nothing new is placed until the
// stream is back.
func TestBrokenEventStreamLeavesWorkAlone(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40", gpuOpts: []gpu.Option{gpu.WithEventRetry(300 * time.Millisecond)}})
	ctx := context.Background()
	_, err := n.m.Submit(ctx, trainer("runs", 2, 1, t.TempDir()))
	require.NoError(t, err)
	w := n.waitFor("runs", workload.StateRunning)

	n.rig.BreakEvents(nil)
	require.Eventually(t, func() bool { return !gpuOf(t, n, w.GPUs[0]).Healthy }, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, gpuOf(t, n, w.GPUs[0]).Health, "unknown")
	pinned := trainer("pinned", 0, 1, t.TempDir())
	pinned.GPUs.UUIDs = []string{n.devs[5].UUID}
	_, err = n.m.Submit(ctx, pinned)
	require.NoError(t, err)
	n.stays("runs", workload.StateRunning, 300*time.Millisecond)
	n.stays("pinned", workload.StateQueued, 100*time.Millisecond)

	n.rig.RepairEvents()
	n.waitFor("pinned", workload.StateRunning)
	got := n.waitFor("runs", workload.StateRunning)
	assert.Equal(t, w.Attempt, got.Attempt, "never restarted")
}

// TestHungGPUDoesNotFreezeScheduler: a GPU whose calls hang is marked
// hung within the device deadline, gets no new work, and the rest of the
// node goes on; when it answers again it takes work again.
func TestHungGPUDoesNotFreezeScheduler(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40", filler: true, options: []workload.Option{workload.WithDeviceTimeout(200 * time.Millisecond)}})
	ctx := context.Background()
	n.waitMining(8)
	require.NoError(t, n.rig.Hang(0))
	require.Eventually(t, func() bool { return !gpuOf(t, n, n.devs[0].UUID).Healthy }, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, gpuOf(t, n, n.devs[0].UUID).Health, "hung")

	s := trainer("pinned-3", 0, 1, t.TempDir())
	s.GPUs.UUIDs = []string{n.devs[3].UUID}
	t0 := time.Now()
	_, err := n.m.Submit(ctx, s)
	require.NoError(t, err)
	n.waitFor("pinned-3", workload.StateRunning)
	took := time.Since(t0)
	t.Logf("a job pinned to GPU 3 runs %v after GPU 0 hung", took)
	assert.Less(t, took, 3*time.Second)
	require.Eventually(t, func() bool { return n.m.Status().DrawW > 0 }, 5*time.Second, 10*time.Millisecond, "the others are still measured")

	require.NoError(t, n.rig.Unhang(0))
	require.Eventually(t, func() bool { return gpuOf(t, n, n.devs[0].UUID).Healthy }, 5*time.Second, 10*time.Millisecond,
		"a GPU that answers again takes work again")
}

// TestWaitErrorKeepsGPUsUntilExitConfirmed: when the runtime cannot tell
// how a container ended, its GPUs are not given to anyone else: a Wait
// error while the process lives changes nothing, and a container whose
// state cannot be read keeps its GPU quarantined with the reason.
func TestWaitErrorKeepsGPUsUntilExitConfirmed(t *testing.T) {
	inner, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = inner.Close() })
	rt := newFaultRuntime(inner)
	n := newNode(t, nodeOpts{preset: "a40", rt: rt, options: []workload.Option{workload.WithRetryBackoff(20*time.Millisecond, 100*time.Millisecond)}})
	ctx := context.Background()
	a := trainer("a", 0, 1, t.TempDir())
	a.GPUs.UUIDs = []string{n.devs[0].UUID}
	rt.set("wait", failWith("a", fmt.Errorf("%w: wait stream broke", isolation.ErrUnavailable)))
	_, err = n.m.Submit(ctx, a)
	require.NoError(t, err)
	n.waitFor("a", workload.StateRunning)
	b := trainer("b", 0, 1, t.TempDir())
	b.GPUs.UUIDs = []string{n.devs[0].UUID}
	_, err = n.m.Submit(ctx, b)
	require.NoError(t, err)
	n.stays("a", workload.StateRunning, 300*time.Millisecond)
	n.stays("b", workload.StateQueued, 50*time.Millisecond)

	rt.set("inspect", failWith("a", fmt.Errorf("%w: containerd restarting", isolation.ErrUnavailable)))
	require.Eventually(t, func() bool { return gpuOf(t, n, n.devs[0].UUID).Quarantine != "" }, 5*time.Second, 10*time.Millisecond)
	assert.Contains(t, gpuOf(t, n, n.devs[0].UUID).Quarantine, "cannot confirm that container")
	n.stays("b", workload.StateQueued, 100*time.Millisecond)

	// The runtime answers again; a's end is confirmed, and only then does
	// b get the GPU.
	rt.set("wait", nil)
	rt.set("inspect", nil)
	require.NoError(t, n.m.Cancel(ctx, "a"))
	n.waitFor("a", workload.StateCancelled)
	n.waitFor("b", workload.StateRunning)
	assert.Empty(t, gpuOf(t, n, n.devs[0].UUID).Quarantine, "the confirmed end lifts the quarantine")
}

// TestTransientRuntimeErrorRequeuesWithBackoff: a start that fails because
// the runtime is unavailable puts the job back in the queue, and it runs
// once the runtime works; a permanent error fails it with the reason.
func TestTransientRuntimeErrorRequeuesWithBackoff(t *testing.T) {
	inner, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = inner.Close() })
	rt := newFaultRuntime(inner)
	n := newNode(t, nodeOpts{preset: "a40", rt: rt, options: []workload.Option{workload.WithRetryBackoff(50*time.Millisecond, 200*time.Millisecond)}})
	ctx := context.Background()
	fails := 2
	rt.set("start", func(_ context.Context, ref isolation.Ref) error {
		if strings.HasPrefix(ref.ID, "flaky-") && fails > 0 {
			fails--
			return fmt.Errorf("%w: connection refused", isolation.ErrUnavailable)
		}
		return nil
	})
	_, err = n.m.Submit(ctx, trainer("flaky", 1, 1, t.TempDir()))
	require.NoError(t, err)
	w := n.waitFor("flaky", workload.StateRunning)
	assert.Equal(t, 3, w.Attempt, "two failed starts, then the third")
	assert.Zero(t, w.Retries, "a start resets the backoff")
	history := reasonHistory(t, n.m, "flaky")
	assert.Contains(t, history, "connection refused; requeued, next try in")

	rt.set("create", failWith("doomed", fmt.Errorf("%w: image %q is not in tenant", isolation.ErrNotFound, "nope")))
	_, err = n.m.Submit(ctx, trainer("doomed", 1, 1, t.TempDir()))
	require.NoError(t, err)
	w = n.waitFor("doomed", workload.StateFailed)
	assert.Contains(t, w.Reason, "create container")
	assert.Contains(t, w.Reason, "not in tenant")
	assert.Equal(t, 1, w.Attempt, "a permanent error is not retried")
}

// TestShutdownDuringLaunchRequeues: stopping Run while a container is
// being created puts the paid job back in the queue, not in failed; the
// next manager runs it.
func TestShutdownDuringLaunchRequeues(t *testing.T) {
	inner, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = inner.Close() })
	rt := newFaultRuntime(inner)
	store := &faultStore{fullStore: workload.NewMemoryStore()}
	n := newNode(t, nodeOpts{preset: "a40", rt: rt, store: store})
	ctx := context.Background()
	created := make(chan struct{}, 1)
	rt.set("create", func(ctx context.Context, ref isolation.Ref) error {
		select {
		case created <- struct{}{}:
		default:
		}
		return hang(ctx, ref)
	})
	_, err = n.m.Submit(ctx, trainer("slow", 1, 1, t.TempDir()))
	require.NoError(t, err)
	<-created
	n.stop()
	w, err := n.m.Get("slow")
	require.NoError(t, err)
	assert.Equal(t, workload.StateQueued, w.State, "requeued, not failed: %s", w.Reason)
	assert.Contains(t, w.Reason, "stopped during the launch")
	require.NoError(t, n.m.Close())

	rt.set("create", nil)
	n.m, err = workload.New(n.gpus, rt, workload.WithStore(store), workload.WithClock(n.clk), workload.WithLoad(n.rig.SetGPULoad),
		workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.start()
	n.waitFor("slow", workload.StateRunning)
}

// TestHygieneHonoursTimeoutWhenDeviceBusy: a GPU that keeps answering
// "busy" to the process list (NVML does while an earlier call hangs) is
// quarantined when the hygiene timeout ends, and the job goes back to the
// queue for other GPUs.
func TestHygieneHonoursTimeoutWhenDeviceBusy(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40", options: []workload.Option{workload.WithHygieneTimeout(300 * time.Millisecond)}})
	ctx := context.Background()
	require.NoError(t, n.rig.FailNext(0, 1_000_000, gpu.ErrBusy))
	s := trainer("first", 0, 1, t.TempDir())
	s.GPUs.UUIDs = []string{n.devs[0].UUID}
	t0 := time.Now()
	_, err := n.m.Submit(ctx, s)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return gpuOf(t, n, n.devs[0].UUID).Quarantine != "" }, 5*time.Second, 5*time.Millisecond)
	took := time.Since(t0)
	assert.Less(t, took, 2*time.Second, "the timeout holds")
	assert.Contains(t, gpuOf(t, n, n.devs[0].UUID).Quarantine, "cannot list its processes within 300ms")
	// The quarantine shows before the job's move back to the queue is
	// written.
	n.waitFor("first", workload.StateQueued)

	// A cancel during hygiene ends it at once.
	require.NoError(t, n.rig.FailNext(1, 1_000_000, gpu.ErrBusy))
	s = trainer("second", 0, 1, t.TempDir())
	s.GPUs.UUIDs = []string{n.devs[1].UUID}
	_, err = n.m.Submit(ctx, s)
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	t0 = time.Now()
	require.NoError(t, n.m.Cancel(ctx, "second"))
	n.waitFor("second", workload.StateCancelled)
	assert.Less(t, time.Since(t0), 250*time.Millisecond, "the cancel does not wait for the hygiene timeout")
	assert.Empty(t, gpuOf(t, n, n.devs[1].UUID).Quarantine, "an abandoned check says nothing of the GPU")
}

// TestRunReturnsWhenReconcileCannotFinish: a runtime that cannot list its
// containers keeps Run retrying, and cancelling Run ends it at once with
// no goroutine left; a store that cannot be read fails Run.
func TestRunReturnsWhenReconcileCannotFinish(t *testing.T) {
	before := goroutines()
	inner, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	rt := newFaultRuntime(inner)
	rt.set("list", func(context.Context, isolation.Ref) error {
		return fmt.Errorf("%w: containerd down", isolation.ErrUnavailable)
	})
	n := newNode(t, nodeOpts{preset: "a40", rt: rt, options: []workload.Option{workload.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond)}})
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	n.stop()
	assert.Less(t, time.Since(t0), time.Second)
	require.NoError(t, n.m.Close())

	store := &faultStore{fullStore: workload.NewMemoryStore()}
	bad := &badListStore{faultStore: store}
	m, err := workload.New(n.gpus, rt, workload.WithStore(bad))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = m.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "load workload records")
	require.NoError(t, m.Close())
	require.NoError(t, inner.Close())
	require.NoError(t, n.gpus.Close())
	noLeak(t, before)
}

type badListStore struct{ *faultStore }

func (s *badListStore) List(context.Context) ([]workload.Workload, error) {
	return nil, errors.New("bolt: list: record \"x\": corrupt")
}

// TestExitedWhileDownRecordedNotRerun: a job whose container started but
// whose start the store never heard of (the agent died first), and that
// exited while the agent was down, is recorded with its real exit status
// by the next manager and never run twice.
func TestExitedWhileDownRecordedNotRerun(t *testing.T) {
	inner, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = inner.Close() })
	rt := newFaultRuntime(inner)
	store := &faultStore{fullStore: workload.NewMemoryStore()}
	n := newNode(t, nodeOpts{preset: "a40", rt: rt, store: store})
	ctx := context.Background()
	// Every write from the start on fails, as if the agent died right
	// after it started the container.
	rt.set("start", func(context.Context, isolation.Ref) error {
		store.breakWrites(errors.New("disk full"))
		return nil
	})
	_, err = n.m.Submit(ctx, shJob("short", "sleep 0.3; exit 3"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		infos, _ := inner.List(ctx, isolation.Filter{})
		return len(infos) == 1 && infos[0].State == isolation.StateRunning
	}, 5*time.Second, time.Millisecond)
	rt.set("start", nil)
	n.stop()
	w, _ := n.m.Get("short")
	require.Equal(t, workload.StateScheduled, w.State, "the start was never recorded")
	require.NoError(t, n.m.Close())
	time.Sleep(500 * time.Millisecond) // it exits while nobody watches
	store.heal()

	n.m, err = workload.New(n.gpus, rt, workload.WithStore(store), workload.WithClock(n.clk), workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.start()
	w = n.waitFor("short", workload.StateExited)
	require.NotNil(t, w.Exit)
	assert.Equal(t, 3, w.Exit.Code, "its real exit status")
	assert.Equal(t, 1, w.Attempt, "never run twice")
	time.Sleep(200 * time.Millisecond)
	infos, err := rt.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	assert.Empty(t, infos, "its container is removed, none started again")
}

// TestStoreFailureStopsLaunchesAndIsReported: while the store refuses
// writes, Cancel fails and changes nothing, no new work starts, and the
// failure is an event and part of Status; when the store works again, so
// does the node.
func TestStoreFailureStopsLaunchesAndIsReported(t *testing.T) {
	store := &faultStore{fullStore: workload.NewMemoryStore()}
	n := newNode(t, nodeOpts{preset: "a40", store: store})
	ctx := context.Background()
	_, err := n.m.Submit(ctx, trainer("runs", 1, 1, t.TempDir()))
	require.NoError(t, err)
	n.waitFor("runs", workload.StateRunning)
	events := n.m.Watch(ctx, 0)

	store.breakWrites(errors.New("input/output error"))
	err = n.m.Cancel(ctx, "runs")
	require.ErrorIs(t, err, workload.ErrStore)
	assert.Contains(t, err.Error(), "input/output error")
	n.stays("runs", workload.StateRunning, 100*time.Millisecond)
	st := n.m.Status()
	require.Error(t, st.StoreErr)
	assert.False(t, st.StoreFailedAt.IsZero())
	_, err = n.m.Submit(ctx, trainer("new", 1, 1, t.TempDir()))
	require.ErrorIs(t, err, workload.ErrStore)
	_, err = n.m.Get("new")
	require.ErrorIs(t, err, workload.ErrNotFound, "a refused Submit leaves no record")

	store.heal()
	require.NoError(t, n.m.Cancel(ctx, "runs"))
	n.waitFor("runs", workload.StateCancelled)
	assert.NoError(t, n.m.Status().StoreErr)
	var types []workload.EventType
	for ev := range events {
		if ev.ID == "" {
			types = append(types, ev.Type)
		}
		if ev.Type == workload.EventCancelled {
			break
		}
	}
	assert.Equal(t, []workload.EventType{workload.EventStoreFailed, workload.EventStoreRecovered}, types)
}

// TestLifecycleCalls: what a Manager accepts before Run, during, after it
// returned and after Close.
func TestLifecycleCalls(t *testing.T) {
	before := goroutines()
	n := newNode(t, nodeOpts{preset: "a40"})
	ctx := context.Background()
	_, err := n.m.Submit(ctx, trainer("a", 1, 1, t.TempDir()))
	require.NoError(t, err)
	n.waitFor("a", workload.StateRunning)
	watch := n.m.Watch(ctx, 0)
	require.Error(t, n.m.Close(), "Close refuses while Run runs")

	n.stop()
	_, err = n.m.Submit(ctx, trainer("late", 1, 1, t.TempDir()))
	require.ErrorIs(t, err, workload.ErrClosed, "a Submit after Run returned would never run")
	assert.Contains(t, err.Error(), "Run has returned")
	for range watch { // the channel closes: nothing more happens
	}
	require.NoError(t, n.m.Cancel(ctx, "a"), "a Cancel after Run is durable for the next manager")
	require.NoError(t, n.m.Close())
	require.NoError(t, n.m.Close(), "Close is idempotent")

	w, _ := n.m.Get("a")
	err = n.m.Cancel(ctx, "a")
	require.ErrorIs(t, err, workload.ErrClosed)
	got, _ := n.m.Get("a")
	assert.Equal(t, w, got, "a call after Close changes nothing")
	require.ErrorIs(t, n.m.Run(ctx), workload.ErrClosed)
	require.ErrorIs(t, n.m.Cordon(ctx, n.devs[0].UUID, "fan"), workload.ErrClosed)

	// Close and Run racing: exactly one order happens.
	for range 20 {
		m, err := workload.New(n.gpus, n.rt)
		require.NoError(t, err)
		rctx, cancel := context.WithCancel(ctx)
		runErr := make(chan error, 1)
		go func() { runErr <- m.Run(rctx) }()
		closeErr := m.Close()
		cancel()
		rerr := <-runErr
		if closeErr == nil {
			assert.True(t, errors.Is(rerr, workload.ErrClosed) || errors.Is(rerr, context.Canceled), "Run after Close: %v", rerr)
		} else {
			assert.ErrorIs(t, rerr, context.Canceled)
			require.NoError(t, m.Close())
		}
	}
	_ = n.rt.Close()
	_ = n.gpus.Close()
	noLeak(t, before)
}

// TestErrorsSayWhatTheyAre: workload errors print their own words and are
// matched with errors.Is, against their category and gpu's.
func TestErrorsSayWhatTheyAre(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40"})
	ctx := context.Background()
	_, err := n.m.Get("x")
	assert.EqualError(t, err, `workload "x" not found`)
	assert.ErrorIs(t, err, workload.ErrNotFound)
	assert.ErrorIs(t, err, gpu.ErrNotFound)
	_, err = n.m.Submit(ctx, trainer("dup", 1, 1, t.TempDir()))
	require.NoError(t, err)
	_, err = n.m.Submit(ctx, trainer("dup", 1, 1, t.TempDir()))
	assert.ErrorIs(t, err, workload.ErrExists)
	assert.True(t, strings.HasPrefix(err.Error(), `workload "dup" already exists`), err.Error())
	assert.NotContains(t, err.Error(), "invalid argument")
	n.stop()
	_, err = n.m.Submit(ctx, trainer("late", 1, 1, t.TempDir()))
	assert.ErrorIs(t, err, workload.ErrClosed)
	assert.NotContains(t, err.Error(), "backend unavailable")
	for _, cat := range []error{workload.ErrInvalid, workload.ErrNotFound, workload.ErrExists, workload.ErrUnplaceable, workload.ErrClosed, workload.ErrStore} {
		assert.NotContains(t, cat.Error(), "gpu:", "%v", cat)
	}
}

// TestBadBudgetsRefused: NaN, infinite and negative power targets would
// switch admission off; they are refused, naming the option.
func TestBadBudgetsRefused(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40"})
	for _, w := range []float64{math.NaN(), math.Inf(1), -5} {
		_, err := workload.New(n.gpus, n.rt, workload.WithPowerBudget(w))
		require.ErrorIs(t, err, workload.ErrInvalid, "%v", w)
		assert.Contains(t, err.Error(), "WithPowerBudget")
		_, err = n.m.Curtail(context.Background(), w)
		require.ErrorIs(t, err, workload.ErrInvalid, "%v", w)
	}
	_, err := workload.New(n.gpus, n.rt, workload.WithDeviceTimeout(0), workload.WithRetryBackoff(time.Second, 0), workload.WithEventRetention(-1))
	require.ErrorIs(t, err, workload.ErrInvalid)
	for _, want := range []string{"WithDeviceTimeout(0s)", "WithRetryBackoff(1s, 0s)", "WithEventRetention(-1)"} {
		assert.Contains(t, err.Error(), want, "every bad option is named")
	}
}

// TestLostGPURequeuesPreemptibleWork: a preemptible training job whose
// GPU falls off the bus goes back to the queue and resumes from its
// checkpoint on healthy GPUs; one that asks to fail fails with the Xid.
func TestLostGPURequeuesPreemptibleWork(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40"})
	ctx := context.Background()
	dir := t.TempDir()
	_, err := n.m.Submit(ctx, trainer("survives", 2, 1, dir))
	require.NoError(t, err)
	strict := trainer("strict", 2, 1, t.TempDir())
	strict.OnGPULoss = workload.GPULossFail
	_, err = n.m.Submit(ctx, strict)
	require.NoError(t, err)
	w := n.waitFor("survives", workload.StateRunning)
	sw := n.waitFor("strict", workload.StateRunning)
	n.waitLog("survives", "'loss'")
	lost := indexOf(n, w.GPUs[1])
	require.NoError(t, n.rig.InjectXID(lost, 79))
	require.NoError(t, n.rig.InjectXID(indexOf(n, sw.GPUs[0]), 48))

	f := n.waitFor("strict", workload.StateFailed)
	assert.Contains(t, f.Reason, "xid 48")
	again := n.waitFor("survives", workload.StateRunning)
	require.Eventually(t, func() bool {
		again, _ = n.m.Get("survives")
		return again.Attempt == 2 && again.State == workload.StateRunning
	}, 20*time.Second, 10*time.Millisecond)
	assert.NotContains(t, again.GPUs, w.GPUs[1], "not on the lost GPU")
	assert.Contains(t, reasonHistory(t, n.m, "survives"), "xid 79")
	require.Eventually(t, func() bool { return strings.Contains(logOf(t, n, "survives"), "resumed from step=") },
		10*time.Second, 10*time.Millisecond, "it resumes from its checkpoint")
}

func indexOf(n *node, uuid string) int {
	for i, d := range n.devs {
		if d.UUID == uuid {
			return i
		}
	}
	return -1
}

// TestPlacementFollowsReadiness: training goes only to GPUs readiness
// rates for training, inference also to risers, and a refusal names the
// GPUs and why; a request may ignore readiness.
func TestPlacementFollowsReadiness(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "mixed"})
	ctx := context.Background()
	train := trainer("train", 4, 1, t.TempDir())
	train.GPUs.IgnoreReadiness = false
	_, err := n.m.Submit(ctx, train)
	require.NoError(t, err)
	w := n.waitFor("train", workload.StateRunning)
	for _, u := range w.GPUs {
		assert.Equal(t, gpu.UseTraining, gpuOf(t, n, u).Use, "%s (%s)", u, gpuOf(t, n, u).Device.Name)
	}
	big := trainer("big", 5, 1, t.TempDir())
	big.GPUs.IgnoreReadiness = false
	_, err = n.m.Submit(ctx, big)
	require.ErrorIs(t, err, workload.ErrUnplaceable)
	assert.Contains(t, err.Error(), "readiness rates it for inference (x1-riser")
	assert.Contains(t, err.Error(), "readiness rates it for mining")

	onRiser := trainer("on-riser", 0, 1, t.TempDir())
	onRiser.GPUs.IgnoreReadiness = false
	onRiser.GPUs.UUIDs = []string{n.devs[1].UUID}
	_, err = n.m.Submit(ctx, onRiser)
	require.ErrorIs(t, err, workload.ErrUnplaceable)
	assert.Contains(t, err.Error(), "GPU 1 ("+n.devs[1].UUID+"): readiness rates it for inference")

	infer := trainer("infer", 1, 1, t.TempDir())
	infer.Kind, infer.GPUs.IgnoreReadiness = workload.KindInference, false
	_, err = n.m.Submit(ctx, infer)
	require.NoError(t, err)
	w = n.waitFor("infer", workload.StateRunning)
	for _, u := range w.GPUs {
		assert.GreaterOrEqual(t, gpuOf(t, n, u).Use, gpu.UseInference)
	}
	onRiser.GPUs.IgnoreReadiness = true
	_, err = n.m.Submit(ctx, onRiser)
	require.NoError(t, err, "the request may say otherwise")
	n.waitFor("on-riser", workload.StateRunning)
}

// TestLogsKeptAfterExit: a job's output stays readable after its
// container is gone, until Forget.
func TestLogsKeptAfterExit(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40"})
	ctx := context.Background()
	_, err := n.m.Submit(ctx, shJob("talks", "echo hello from the job; exit 0"))
	require.NoError(t, err)
	n.waitFor("talks", workload.StateExited)
	var out []byte
	require.Eventually(t, func() bool {
		infos, _ := n.rt.List(ctx, isolation.Filter{})
		out, err = n.m.Logs(ctx, "talks")
		return len(infos) == 0 && err == nil && strings.Contains(string(out), "hello from the job")
	}, 5*time.Second, 10*time.Millisecond, "logs after the container is deleted: %q %v", out, err)
	require.NoError(t, n.m.Forget(ctx, "talks"))
	_, err = n.m.Logs(ctx, "talks")
	require.ErrorIs(t, err, workload.ErrNotFound)
}

// TestCordonAndDrain: a cordoned GPU takes no new work, a drain moves its
// work off with checkpoint grace, a cordoned node starts nothing, and
// cordons survive a restart.
func TestCordonAndDrain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", filler: true, store: store})
	ctx := context.Background()
	n.waitMining(8)

	dir := t.TempDir()
	_, err = n.m.Submit(ctx, trainer("moves", 1, 1, dir))
	require.NoError(t, err)
	w := n.waitFor("moves", workload.StateRunning)
	n.waitLog("moves", "'loss'")
	drained := w.GPUs[0]
	require.NoError(t, n.m.Drain(ctx, drained))
	g := gpuOf(t, n, drained)
	assert.Empty(t, g.Workload, "nothing holds a drained GPU")
	assert.Equal(t, "drained", g.Cordoned)
	w = n.waitFor("moves", workload.StateRunning)
	assert.NotEqual(t, drained, w.GPUs[0], "it runs on another GPU")
	assert.Equal(t, 1, w.Preemptions)
	require.Eventually(t, func() bool { return strings.Contains(logOf(t, n, "moves"), "resumed from step=") },
		10*time.Second, 10*time.Millisecond, "after its checkpoint")
	time.Sleep(100 * time.Millisecond)
	assert.Empty(t, gpuOf(t, n, drained).Workload, "no miner refills a cordoned GPU")

	require.NoError(t, n.m.Cordon(ctx, n.devs[7].UUID, "fan replaced at 14:00"))
	require.ErrorIs(t, n.m.Cordon(ctx, n.devs[7].UUID, ""), workload.ErrInvalid, "a cordon needs a reason")
	require.ErrorIs(t, n.m.Cordon(ctx, "GPU-nope", "x"), workload.ErrNotFound)
	require.NoError(t, n.m.CordonNode(ctx, "maintenance window"))
	require.NoError(t, n.m.Cancel(ctx, "moves"))
	n.waitFor("moves", workload.StateCancelled)
	time.Sleep(100 * time.Millisecond)
	assert.Empty(t, gpuOf(t, n, w.GPUs[0]).Workload, "a cordoned node starts nothing")

	// The cordons survive a restart.
	n.stop()
	require.NoError(t, n.m.Close())
	store2, err := bolt.Open(path)
	require.NoError(t, err)
	n.m, err = workload.New(n.gpus, n.rt, workload.WithStore(store2), workload.WithClock(n.clk), workload.WithLoad(n.rig.SetGPULoad),
		workload.WithFiller(minerFiller()), workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.start()
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, "maintenance window", n.m.Status().Cordoned)
	assert.Equal(t, "fan replaced at 14:00", gpuOf(t, n, n.devs[7].UUID).Cordoned+"")
	require.NoError(t, n.m.UncordonNode(ctx))
	// GPU 7's miner ran on through its cordon; the drained GPU stays empty.
	n.waitMining(7)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 7, n.mining(), "a GPU cordoned on its own stays out of service")
	assert.Empty(t, gpuOf(t, n, drained).Workload)
	require.NoError(t, n.m.Uncordon(ctx, drained))
	require.NoError(t, n.m.Uncordon(ctx, n.devs[7].UUID))
	n.waitMining(8)
}

// TestRetentionAndDurableWatch: finished records go when their retention
// ends; Watch replays the event log across a restart, in order and once.
func TestRetentionAndDurableWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", store: store, options: []workload.Option{workload.WithRetention(time.Hour)}})
	ctx := context.Background()
	_, err = n.m.Submit(ctx, shJob("old", "exit 0"))
	require.NoError(t, err)
	n.waitFor("old", workload.StateExited)
	n.clk.Advance(30 * time.Minute)
	_, err = n.m.Submit(ctx, shJob("young", "exit 0"))
	require.NoError(t, err)
	n.waitFor("young", workload.StateExited)
	var before []workload.Event
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	for ev := range n.m.Watch(wctx, 0) {
		before = append(before, ev)
	}
	cancel()
	require.NotEmpty(t, before)

	n.clk.Advance(45 * time.Minute) // old ended 75 min ago, young 45
	require.Eventually(t, func() bool {
		_, err := n.m.Get("old")
		return errors.Is(err, workload.ErrNotFound)
	}, 10*time.Second, 10*time.Millisecond, "past its retention")
	_, err = n.m.Get("young")
	require.NoError(t, err, "within its retention")

	n.stop()
	require.NoError(t, n.m.Close())
	store2, err := bolt.Open(path)
	require.NoError(t, err)
	n.m, err = workload.New(n.gpus, n.rt, workload.WithStore(store2), workload.WithClock(n.clk), workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.start()
	var after []workload.Event
	wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	for ev := range n.m.Watch(wctx, 0) {
		after = append(after, ev)
	}
	require.GreaterOrEqual(t, len(after), len(before))
	for i, ev := range before {
		if ev.ID == "" {
			continue // node events are in the log too, but not workload ones
		}
		assert.Equal(t, ev.Seq, after[i].Seq, "the same events, in the same order")
		assert.Equal(t, ev.Type, after[i].Type)
	}
	for i := 1; i < len(after); i++ {
		assert.Greater(t, after[i].Seq, after[i-1].Seq, "once each, in order")
	}
	_, err = n.m.Submit(ctx, shJob("next", "exit 0"))
	require.NoError(t, err)
	w := n.waitFor("next", workload.StateExited)
	assert.Greater(t, w.Seq, after[len(after)-1].Seq, "new events follow the replayed ones")
}

// TestDrainNode: draining the node stops every workload with its grace,
// requeues the paid ones, cordons the node, and starts nothing new.
func TestDrainNode(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40", filler: true})
	ctx := context.Background()
	n.waitMining(8)
	_, err := n.m.Submit(ctx, trainer("paid", 2, 1, t.TempDir()))
	require.NoError(t, err)
	n.waitFor("paid", workload.StateRunning)
	n.waitLog("paid", "'loss'")
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, n.m.DrainNode(dctx))
	for _, g := range n.m.GPUs() {
		assert.Empty(t, g.Workload, "GPU %s is empty", g.Device.UUID)
	}
	assert.Equal(t, "drained", n.m.Status().Cordoned)
	w := n.waitFor("paid", workload.StateQueued)
	assert.Equal(t, 1, w.Preemptions, "paid work waits in the queue, checkpointed")
	time.Sleep(100 * time.Millisecond)
	assert.Zero(t, n.mining(), "no miner on a drained node")
	require.NoError(t, n.m.UncordonNode(ctx))
	n.waitFor("paid", workload.StateRunning)
	n.waitMining(6)
}
