package workload_test

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

func TestSpecValidateReportsEverything(t *testing.T) {
	err := workload.Spec{
		ID: "-bad id", Kind: "crypto", Tenant: "Bad Tenant!", Env: []string{"NOEQUALS"},
		Resources: isolationLimits(-1), StopGrace: -time.Second, Load: 2, PricePerGPUHour: -1,
	}.Validate()
	require.ErrorIs(t, err, workload.ErrInvalid)
	for _, field := range []string{"ID:", "Kind:", "tenant", "GPUs.Count:", "spec.Image", "spec.Env[0]", "spec.Limits.Pids",
		"spec.StopGrace", "Load:", "PricePerGPUHour:"} {
		assert.Contains(t, err.Error(), field)
	}
	assert.Equal(t, 1, strings.Count(err.Error(), "StopGrace"), "each problem is named once")

	// What the container runtime would refuse is refused at once, before
	// any miner is displaced for it.
	err = workload.Spec{
		ID: "a--b", Kind: workload.KindTraining, Tenant: "acme", GPUs: workload.GPURequest{Count: 1}, Image: "x",
		Mounts: []isolation.Mount{{Source: "relative/dir", Target: "/data"}, {Source: "/", Target: "/proc"}},
		Labels: map[string]string{"io.gpufarm/workload": "spoof"},
	}.Validate()
	require.ErrorIs(t, err, workload.ErrInvalid)
	for _, what := range []string{"ID:", "Mounts[0].Source", "Mounts[1].Target", "io.gpufarm/workload"} {
		assert.Contains(t, err.Error(), what)
	}
}

func TestSubmitBadInput(t *testing.T) {
	n := newNode(t, nodeOpts{})
	ctx := context.Background()
	dir := t.TempDir()

	_, err := n.m.Submit(ctx, trainer("big", 9, 0, dir))
	require.ErrorIs(t, err, workload.ErrUnplaceable)
	assert.Contains(t, err.Error(), "needs 9 GPUs, this node has 8")

	s := trainer("huge-mem", 1, 0, dir)
	s.GPUs.MinMemoryBytes = 24 << 30
	_, err = n.m.Submit(ctx, s)
	require.ErrorIs(t, err, workload.ErrUnplaceable)
	assert.Contains(t, err.Error(), "8 with 10 GiB < 24 GiB", "the reason names what falls short")

	s = trainer("riser", 1, 0, dir)
	s.GPUs.MinLink = gpu.Link{Gen: 3, Width: 8}
	_, err = n.m.Submit(ctx, s)
	require.ErrorIs(t, err, workload.ErrUnplaceable)
	assert.Contains(t, err.Error(), "PCIe gen1 < gen3")

	s = trainer("pinned", 0, 0, dir)
	s.GPUs.UUIDs = []string{"GPU-not-here"}
	_, err = n.m.Submit(ctx, s)
	require.ErrorIs(t, err, workload.ErrUnplaceable)

	_, err = n.m.Submit(ctx, trainer("ok", 1, 0, dir))
	require.NoError(t, err)
	_, err = n.m.Submit(ctx, trainer("ok", 1, 0, dir))
	require.ErrorIs(t, err, workload.ErrExists)

	require.ErrorIs(t, n.m.Cancel(ctx, "nope"), workload.ErrNotFound)
	require.ErrorIs(t, n.m.Forget(ctx, "nope"), workload.ErrNotFound)
	require.ErrorIs(t, n.m.Forget(ctx, "ok"), workload.ErrInvalid, "a live workload cannot be forgotten")
	require.NoError(t, n.m.Cancel(ctx, "ok"))
	n.waitFor("ok", workload.StateCancelled)
	require.NoError(t, n.m.Forget(ctx, "ok"))
	_, err = n.m.Submit(ctx, trainer("ok", 1, 0, dir))
	require.NoError(t, err, "a forgotten ID can be used again")
	_, err = n.m.Get("nope")
	require.ErrorIs(t, err, workload.ErrNotFound)
	assert.Len(t, n.m.List(workload.Filter{}), 1, "bad submissions leave no record")
	require.NoError(t, n.m.Cancel(ctx, "ok"))
}

// TestMinersFillAndYield: miners fill every idle GPU; a paid training job
// takes four of them with handover hygiene; when it ends the miners return.
func TestMinersFillAndYield(t *testing.T) {
	n := newNode(t, nodeOpts{filler: true})
	ctx := context.Background()
	n.waitMining(8)
	// The simulated draw follows the miners.
	for _, d := range n.devs {
		s, err := n.gpus.Sample(ctx, d.UUID)
		require.NoError(t, err)
		assert.Greater(t, s.PowerW.Value, 250.0, "a mining 3080 draws near its limit")
	}
	// A miner's efficiency tuning, which must not reach the customer.
	for _, d := range n.devs {
		require.NoError(t, n.gpus.SetPowerLimit(ctx, d.UUID, 220))
	}

	events := n.m.Watch(ctx, 0)
	dir := t.TempDir()
	spec := trainer("train-1", 4, 10, dir)
	_, err := n.m.Submit(ctx, spec)
	require.NoError(t, err)
	w := n.waitFor("train-1", workload.StateRunning)
	require.Len(t, w.GPUs, 4)
	n.waitMining(4)

	for _, u := range w.GPUs {
		d, err := n.gpus.Device(u)
		require.NoError(t, err)
		assert.Equal(t, d.PowerLimit.Value.DefaultW, d.PowerLimit.Value.CurrentW, "handover restores the default power limit")
		procs, err := n.gpus.Processes(ctx, u)
		require.NoError(t, err)
		require.Len(t, procs, 1, "the GPU lists the trainer's process only")
	}
	var started *workload.Event
	seen := map[workload.EventType]int{}
	var last uint64
	for ev := range events {
		require.Greater(t, ev.Seq, last, "sequence numbers increase")
		last = ev.Seq
		if ev.ID == "train-1" || ev.Kind == workload.KindMining {
			seen[ev.Type]++
		}
		if ev.ID == "train-1" && ev.Type == workload.EventStarted {
			started = &ev
			break
		}
	}
	require.NotNil(t, started)
	require.NotNil(t, started.Handover, "a start that displaced miners reports the handover")
	assert.Len(t, started.Handover.From, 4)
	assert.Greater(t, started.Handover.Total, time.Duration(0))
	assert.Equal(t, 4, seen[workload.EventPreempted], "four miners yielded")
	t.Logf("handover from %v: drain %v, hygiene %v, total %v", started.Handover.From, started.Handover.Drain, started.Handover.Hygiene, started.Handover.Total)

	n.waitLog("train-1", "'loss'") // its SIGTERM handler is in place
	require.NoError(t, n.m.Cancel(ctx, "train-1"))
	w = n.waitFor("train-1", workload.StateCancelled)
	assert.Equal(t, 0, w.Exit.Code, "the trainer saved its checkpoint on SIGTERM and exited 0")
	n.waitMining(8)
	assert.FileExists(t, newestCheckpoint(t, dir))
}

// TestPreemptionResumesFromCheckpoint: a higher-priority job preempts a
// training job after its minimum runtime; the training job checkpoints,
// waits in the queue and resumes from its checkpoint when the GPUs free.
func TestPreemptionResumesFromCheckpoint(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "rtx3090"})
	ctx := context.Background()
	dirA, dirB := t.TempDir(), t.TempDir()

	a := trainer("low", 6, 1, dirA)
	a.MinRuntime = time.Hour
	_, err := n.m.Submit(ctx, a)
	require.NoError(t, err)
	n.waitFor("low", workload.StateRunning)

	n.waitLog("low", "'loss'")
	b := trainer("high", 4, 5, dirB)
	b.Preemptible = false
	_, err = n.m.Submit(ctx, b)
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond)
	w, _ := n.m.Get("high")
	assert.Equal(t, workload.StateQueued, w.State, "no preemption before the victim's minimum runtime")

	n.clk.Advance(time.Hour)
	n.m.Submit(ctx, trainer("poke", 1, 0, t.TempDir())) // any event re-runs the scheduler
	n.waitFor("high", workload.StateRunning)
	lw := n.waitFor("low", workload.StateQueued)
	assert.Equal(t, 1, lw.Preemptions)
	assert.Contains(t, lw.Reason, "preempted by high")
	ckpt := newestCheckpoint(t, dirA)
	require.NotEmpty(t, ckpt, "the preempted job checkpointed within its grace")

	require.NoError(t, n.m.Cancel(ctx, "high"))
	require.NoError(t, n.m.Cancel(ctx, "poke"))
	lw = n.waitFor("low", workload.StateRunning)
	assert.Equal(t, 2, lw.Attempt)
	require.Eventually(t, func() bool {
		return strings.Contains(logOf(t, n, "low"), "resumed from step="+strings.TrimPrefix(filepath.Base(ckpt), "checkpoint-"))
	}, 10*time.Second, 20*time.Millisecond, "the second attempt resumes from the checkpoint")
}

func TestLostGPUFailsOnlyItsWorkload(t *testing.T) {
	n := newNode(t, nodeOpts{filler: true})
	n.waitMining(8)
	victim := n.devs[3].UUID
	require.NoError(t, n.rig.InjectXID(3, 79))
	require.Eventually(t, func() bool {
		for _, g := range n.m.GPUs() {
			if g.Device.UUID == victim {
				return g.Workload == ""
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	n.waitMining(7)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 7, n.mining(), "the lost GPU is drained, not refilled")
}

func TestCurtailOrder(t *testing.T) {
	n := newNode(t, nodeOpts{filler: true})
	ctx := context.Background()
	n.waitMining(8)
	dir := t.TempDir()
	_, err := n.m.Submit(ctx, trainer("train", 2, 1, dir))
	require.NoError(t, err)
	n.waitFor("train", workload.StateRunning)
	n.waitLog("train", "'loss'")
	n.waitMining(6)

	// Lowering mining limits just enough meets a mild target: every miner
	// runs on, and the draw lands within 5% under the target, not at the
	// miners' minimum limits far below it.
	full := sumPower(t, n)
	rep, err := n.m.Curtail(ctx, 0.6*full)
	require.NoError(t, err)
	t.Logf("curtail to %.0f W: %+v", rep.TargetW, rep)
	assert.True(t, rep.Met)
	require.Len(t, rep.Steps, 1)
	assert.Equal(t, "lower mining power limits", rep.Steps[0].Action)
	assert.LessOrEqual(t, rep.FinalW, rep.TargetW)
	assert.GreaterOrEqual(t, rep.FinalW, 0.95*rep.TargetW, "just enough: within 5%% under the target")
	assert.InDelta(t, sumPower(t, n), rep.FinalW, 1, "the report says what the GPUs draw")
	assert.Equal(t, 6, n.mining())

	// A higher target gives the miners their limits back when it can.
	rep, err = n.m.Curtail(ctx, full+100)
	require.NoError(t, err)
	require.Len(t, rep.Steps, 1)
	assert.Equal(t, "raise lowered power limits", rep.Steps[0].Action)
	assert.InDelta(t, full, rep.FinalW, 1, "back to the draw before the cap")
	_, err = n.m.Curtail(ctx, 0.6*full)
	require.NoError(t, err)

	// A deeper one takes the miners to their minimum, stops them, then
	// lowers training, then stops it.
	rep, err = n.m.Curtail(ctx, 300)
	require.NoError(t, err)
	t.Logf("curtail to 300 W: %+v", rep)
	// Miners go one by one, the hungriest first, then training is
	// throttled, and only then stopped.
	var actions []string
	for _, s := range rep.Steps {
		a := s.Action
		if strings.HasPrefix(a, "stop mining ") {
			a = "stop mining"
		}
		if len(actions) == 0 || actions[len(actions)-1] != a {
			actions = append(actions, a)
		}
	}
	assert.Equal(t, []string{"lower mining power limits", "stop mining", "lower training power limits", "stop training train"}, actions)
	assert.Len(t, rep.Steps, 1+6+2, "six miners, one by one")
	for i := 2; i < 7; i++ {
		assert.Less(t, rep.Steps[i].DrawW, rep.Steps[i-1].DrawW, "each miner stopped lowers the draw")
	}
	assert.True(t, rep.Met, "8 idle 3080s draw about 180 W")
	assert.Equal(t, 0, n.mining())
	w := n.waitFor("train", workload.StateQueued)
	assert.Contains(t, w.Reason, "power cap")
	assert.NotEmpty(t, newestCheckpoint(t, dir), "training checkpointed before it stopped")

	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 0, n.mining(), "no miner starts over the budget")

	rep, err = n.m.Curtail(ctx, 0)
	require.NoError(t, err)
	assert.Greater(t, rep.FinalW, 0.0, "lifting reports the draw too")
	n.waitFor("train", workload.StateRunning)
	n.waitMining(6)
}

func sumPower(t *testing.T, n *node) float64 {
	samples, err := n.gpus.SampleAll(context.Background(), nil)
	require.NoError(t, err)
	sum := 0.0
	for _, s := range samples {
		sum += s.PowerW.Value
	}
	return sum
}

func newestCheckpoint(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*"))
	sort.Slice(m, func(i, j int) bool { return stepOf(m[i]) < stepOf(m[j]) })
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

func stepOf(path string) int {
	n := 0
	for _, r := range strings.TrimPrefix(filepath.Base(path), "checkpoint-") {
		if r < '0' || r > '9' {
			return -1
		}
		n = n*10 + int(r-'0')
	}
	return n
}

func logOf(t *testing.T, n *node, id string) string {
	w, err := n.m.Get(id)
	require.NoError(t, err)
	rc, err := n.rt.Logs(context.Background(), w.Container)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b := new(strings.Builder)
	_, _ = copyAll(b, rc)
	return b.String()
}

// TestLostGPUFailsPaidWorkloadWithReason: a training job that does not
// allow preemption, whose GPU falls off the bus, fails with that reason;
// the job on the other GPUs runs on.
func TestLostGPUFailsPaidWorkloadWithReason(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40"})
	ctx := context.Background()
	doomedSpec := trainer("doomed", 2, 1, t.TempDir())
	doomedSpec.Preemptible = false
	_, err := n.m.Submit(ctx, doomedSpec)
	require.NoError(t, err)
	_, err = n.m.Submit(ctx, trainer("fine", 2, 1, t.TempDir()))
	require.NoError(t, err)
	doomed := n.waitFor("doomed", workload.StateRunning)
	n.waitFor("fine", workload.StateRunning)
	idx := -1
	for i, d := range n.devs {
		if d.UUID == doomed.GPUs[1] {
			idx = i
		}
	}
	require.NoError(t, n.rig.InjectXID(idx, 79))
	w := n.waitFor("doomed", workload.StateFailed)
	assert.Contains(t, w.Reason, "xid 79")
	assert.Contains(t, w.Reason, doomed.GPUs[1])
	time.Sleep(100 * time.Millisecond)
	f, _ := n.m.Get("fine")
	assert.Equal(t, workload.StateRunning, f.State, "the other job runs on")
	for _, g := range n.m.GPUs() {
		if g.Device.UUID == doomed.GPUs[1] {
			assert.Empty(t, g.Workload, "nothing is placed on a lost GPU")
		}
	}
}
