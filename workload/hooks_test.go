package workload_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// TestAllocationsFollowHandovers: each GPU's holds follow the handovers
// exactly: the miner's ends before the trainer's begins, and the
// trainer's is open while it runs.
func TestAllocationsFollowHandovers(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40", filler: true})
	ctx := context.Background()
	n.waitMining(8)
	_, err := n.m.Submit(ctx, trainer("holds", 1, 1, t.TempDir()))
	require.NoError(t, err)
	w := n.waitFor("holds", workload.StateRunning)
	holds, err := n.m.Allocations(w.GPUs[0], start, start.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, holds, 2, "the miner, then the trainer: %+v", holds)
	assert.Equal(t, workload.KindMining, holds[0].Kind)
	assert.False(t, holds[0].To.IsZero(), "the miner's hold is closed")
	assert.Equal(t, "holds", holds[1].Workload)
	assert.Equal(t, 1, holds[1].Attempt)
	assert.Equal(t, "acme", holds[1].Tenant)
	assert.Equal(t, 0.35, holds[1].PricePerGPUHour)
	assert.True(t, holds[1].To.IsZero(), "open while it runs")
	assert.False(t, holds[1].From.Before(holds[0].To), "never two holders at once")

	n.clk.Advance(time.Minute)
	require.NoError(t, n.m.Cancel(ctx, "holds"))
	n.waitFor("holds", workload.StateCancelled)
	holds, err = n.m.Allocations(w.GPUs[0], start.Add(30*time.Second), start.Add(time.Hour))
	require.NoError(t, err)
	require.NotEmpty(t, holds)
	assert.Equal(t, "holds", holds[0].Workload, "the range picks the holds that overlap it")
	assert.Equal(t, start.Add(time.Minute), holds[0].To, "closed when its end was confirmed, on the manager's clock")
	_, err = n.m.Allocations("GPU-nope", start, start)
	require.ErrorIs(t, err, workload.ErrNotFound)
}

// TestExitReporterNotesPreemption: what the exit reporter finds when a
// preempted job's container ended goes on its record and on the preempted
// event.
func TestExitReporterNotesPreemption(t *testing.T) {
	var stopAsked time.Time
	reporter := workload.ExitReporterFunc(func(ctx context.Context, w workload.Workload, exit *isolation.ExitStatus) string {
		if w.Spec.Kind == workload.KindMining {
			return ""
		}
		stopAsked = w.StopAskedAt
		dir := w.Spec.Command[2] // the fake trainer's -checkpoint-dir
		m, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*"))
		if len(m) == 0 {
			return "no checkpoint written"
		}
		return "checkpoint saved at " + filepath.Base(newestCheckpoint(t, dir))
	})
	n := newNode(t, nodeOpts{preset: "a40", options: []workload.Option{workload.WithExitReporter(reporter)}})
	ctx := context.Background()
	low := trainer("low", 8, 1, t.TempDir())
	_, err := n.m.Submit(ctx, low)
	require.NoError(t, err)
	n.waitFor("low", workload.StateRunning)
	n.waitLog("low", "'loss'")
	events := n.m.Watch(ctx, 0)
	high := trainer("high", 1, 5, t.TempDir())
	_, err = n.m.Submit(ctx, high)
	require.NoError(t, err)
	for ev := range events {
		if ev.ID == "low" && ev.Type == workload.EventPreempted {
			assert.Contains(t, ev.Note, "checkpoint saved at checkpoint-")
			break
		}
	}
	w, err := n.m.Get("low")
	require.NoError(t, err)
	assert.Contains(t, w.ExitNote, "checkpoint saved at checkpoint-")
	assert.Equal(t, start, stopAsked, "the reporter knows when the grace began (the manager's clock)")
}

// TestMarkReady: a running workload becomes ready when its launcher says
// it answers; a queued one cannot.
func TestMarkReady(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40"})
	ctx := context.Background()
	_, err := n.m.Submit(ctx, trainer("serve", 8, 1, t.TempDir()))
	require.NoError(t, err)
	_, err = n.m.Submit(ctx, trainer("waits", 1, 0, t.TempDir()))
	require.NoError(t, err)
	w := n.waitFor("serve", workload.StateRunning)
	assert.False(t, w.Ready)
	require.ErrorIs(t, n.m.MarkReady(ctx, "waits"), workload.ErrInvalid)
	require.NoError(t, n.m.MarkReady(ctx, "serve"))
	require.NoError(t, n.m.MarkReady(ctx, "serve"), "twice is once")
	w, _ = n.m.Get("serve")
	assert.True(t, w.Ready)
	ready := 0
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	for ev := range n.m.Watch(wctx, 0) {
		if ev.Type == workload.EventReady && ev.ID == "serve" {
			ready++
		}
	}
	assert.Equal(t, 1, ready)
}

// TestAttemptHookSetsEachAttempt: the attempt hook's command runs in
// each attempt's container; an invalid answer fails the workload.
func TestAttemptHookSetsEachAttempt(t *testing.T) {
	hook := workload.AttemptHookFunc(func(ctx context.Context, w workload.Workload) (workload.Attempt, error) {
		if w.Spec.ID == "bad" {
			return workload.Attempt{}, fmt.Errorf("%w: no checkpoint directory", workload.ErrInvalid)
		}
		return workload.Attempt{Command: []string{"/bin/sh", "-c", fmt.Sprintf("echo attempt %d; exit 0", w.Attempt)}}, nil
	})
	n := newNode(t, nodeOpts{preset: "a40", options: []workload.Option{workload.WithAttemptHook(hook)}})
	ctx := context.Background()
	_, err := n.m.Submit(ctx, shJob("good", "exit 9"))
	require.NoError(t, err)
	w := n.waitFor("good", workload.StateExited)
	assert.Equal(t, 0, w.Exit.Code, "the hook's command ran, not the submitted one")
	require.Eventually(t, func() bool {
		out, _ := n.m.Logs(ctx, "good")
		return strings.Contains(string(out), "attempt 1")
	}, 5*time.Second, 10*time.Millisecond)
	_, err = n.m.Submit(ctx, shJob("bad", "exit 0"))
	require.NoError(t, err)
	w = n.waitFor("bad", workload.StateFailed)
	assert.Contains(t, w.Reason, "no checkpoint directory")
}

// TestStartHookRunsAfterHygiene: the start hook sees the GPU clean (at
// its default limit) and held by the workload, and what it sets is what
// the workload starts under; an error requeues the launch.
func TestStartHookRunsAfterHygiene(t *testing.T) {
	var n *node
	fails := 1
	hook := startHookFunc(func(ctx context.Context, w workload.Workload) error {
		if fails > 0 {
			fails--
			return errors.New("profile not ready")
		}
		d, err := n.gpus.Device(w.GPUs[0])
		if err != nil {
			return err
		}
		if d.PowerLimit.Value.CurrentW != d.PowerLimit.Value.DefaultW {
			return fmt.Errorf("GPU not at its default limit: %v", d.PowerLimit.Value)
		}
		if gpuOf(t, n, w.GPUs[0]).Workload != w.Spec.ID {
			return errors.New("the workload does not hold its GPU")
		}
		return n.gpus.SetPowerLimit(ctx, w.GPUs[0], 200)
	})
	n = newNode(t, nodeOpts{preset: "a40", options: []workload.Option{workload.WithStartHook(hook),
		workload.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond)}})
	ctx := context.Background()
	require.NoError(t, n.gpus.SetPowerLimit(ctx, n.devs[0].UUID, 150)) // the last tenant's tune
	s := trainer("tuned", 0, 1, t.TempDir())
	s.GPUs.UUIDs = []string{n.devs[0].UUID}
	_, err := n.m.Submit(ctx, s)
	require.NoError(t, err)
	w := n.waitFor("tuned", workload.StateRunning)
	assert.Equal(t, 2, w.Attempt, "the hook's error requeued the first attempt")
	d, err := n.gpus.Device(n.devs[0].UUID)
	require.NoError(t, err)
	assert.Equal(t, 200.0, d.PowerLimit.Value.CurrentW, "it starts under what the hook set")
}

type startHookFunc func(ctx context.Context, w workload.Workload) error

func (f startHookFunc) BeforeStart(ctx context.Context, w workload.Workload) error { return f(ctx, w) }
