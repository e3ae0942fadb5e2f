package accounting_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// TestWithWorkloadManager meters a real workload manager on the
// simulator: miners fill the GPUs, a rental takes four and is preempted
// by a bigger one, and everything ends. The manager's own allocation
// timeline is the meter's Timeline; every workload attempt's energy
// equals the simulator's counters over its holds, to the millijoule.
func TestWithWorkloadManager(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, preset(t, sim.PresetA40))
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()), process.WithClock(r.clk))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close() })
	miner := workload.FillerFunc(func(context.Context, gpu.Device) (workload.Spec, bool) {
		return workload.Spec{Tenant: "mining", Image: "x", Command: []string{"sleep", "infinity"}, Network: isolation.NetworkHost, StopGrace: time.Second}, true
	})
	wm, err := workload.New(r.gpus, rt, workload.WithClock(r.clk), workload.WithLoad(r.sim.SetGPULoad), workload.WithFiller(miner),
		workload.WithTick(10*time.Millisecond), workload.WithPowerSettle(0))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- wm.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		for _, w := range wm.List(workload.Filter{}) {
			if !w.State.Final() {
				_, _ = rt.Stop(ctx, w.Container)
			}
		}
		_ = wm.Close()
	})
	l := accounting.NewMemoryLedger()
	m := newMeter(t, r, wm, l)

	// The simulator's counter of every GPU at every second the clock shows.
	truth := map[time.Time][]uint64{}
	read := func() {
		at := r.clk.Now()
		cs := make([]uint64, len(r.devs))
		for g := range r.devs {
			cs[g] = counter(t, r.sim, g)
		}
		truth[at] = cs
		require.NoError(t, m.Poll(ctx))
	}
	running := func(k workload.Kind) int {
		return len(wm.List(workload.Filter{Kind: k, States: []workload.State{workload.StateRunning}}))
	}
	settle := func(cond func() bool) {
		require.Eventually(t, cond, 30*time.Second, 5*time.Millisecond)
		read() // the clock stood still while the manager handed over
	}
	advance := func(d time.Duration) {
		for end := r.clk.Now().Add(d); r.clk.Now().Before(end); {
			r.clk.Advance(time.Second)
			read()
		}
	}
	read()
	settle(func() bool { return running(workload.KindMining) == 8 })
	advance(90 * time.Second)
	small := workload.Spec{ID: "small", Kind: workload.KindTraining, Tenant: "acme", Priority: 1, GPUs: workload.GPURequest{Count: 4},
		Image: "x", Command: []string{"sleep", "infinity"}, Preemptible: true, StopGrace: time.Second, PricePerGPUHour: 1}
	_, err = wm.Submit(ctx, small)
	require.NoError(t, err)
	settle(func() bool { return running(workload.KindTraining) == 1 && running(workload.KindMining) == 4 })
	advance(125 * time.Second)
	big := small
	big.ID, big.Tenant, big.Priority, big.GPUs.Count, big.Preemptible, big.PricePerGPUHour = "big", "beta", 9, 6, false, 2
	_, err = wm.Submit(ctx, big)
	require.NoError(t, err)
	settle(func() bool {
		w, err := wm.Get("small")
		return err == nil && w.State == workload.StateQueued && running(workload.KindTraining) == 1 && running(workload.KindMining) == 2
	})
	advance(70 * time.Second)
	require.NoError(t, wm.Cancel(ctx, "big"))
	settle(func() bool { return running(workload.KindTraining) == 1 && running(workload.KindMining) == 4 })
	advance(61 * time.Second)
	require.NoError(t, m.Flush(ctx))
	end := r.clk.Now()

	want := map[string]int64{}
	for g, d := range r.devs {
		holds, err := wm.Allocations(d.UUID, t0, end)
		require.NoError(t, err)
		held := int64(0)
		for _, a := range holds {
			to := a.To
			if to.IsZero() {
				to = end
			}
			require.Contains(t, truth, a.From, "holds begin when the clock shows a second")
			require.Contains(t, truth, to)
			e := int64(truth[to][g] - truth[a.From][g])
			want[a.Workload+"#"+string(rune('0'+a.Attempt))] += e
			held += e
		}
		want[""] += int64(truth[end][g]-truth[t0][g]) - held
	}
	if want[""] == 0 {
		delete(want, "") // handovers took no time on the clock: never idle
	}
	rs := records(t, l, accounting.Query{})
	checkStreams(t, rs, m, time.Minute)
	got := byHolder(rs)
	assert.Equal(t, want, got, "every attempt's energy is the simulator's over its holds")
	assert.Contains(t, got, "small#1")
	assert.Contains(t, got, "small#2", "the preempted rental's second attempt is its own")
	assert.Contains(t, got, "big#1")
}
