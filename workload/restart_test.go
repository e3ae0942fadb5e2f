package workload_test

import (
	"context"
	"path/filepath"
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

// TestRestartReadoptsAndRecordsWhatVanished: the SDK process restarts (a
// new Manager over the same durable store and the same runtime); what runs
// is re-adopted once, a queued job stays queued, a job whose container
// vanished is requeued, and a container nobody knows is removed.
func TestRestartReadoptsAndRecordsWhatVanished(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", store: store, rt: rt})

	_, err = n.m.Submit(ctx, trainer("keeps-running", 2, 1, t.TempDir()))
	require.NoError(t, err)
	_, err = n.m.Submit(ctx, trainer("will-vanish", 2, 1, t.TempDir()))
	require.NoError(t, err)
	keep := n.waitFor("keeps-running", workload.StateRunning)
	gone := n.waitFor("will-vanish", workload.StateRunning)
	big := trainer("waits", 8, 0, t.TempDir())
	big.Preemptible = false
	_, err = n.m.Submit(ctx, big)
	require.NoError(t, err)

	// The SDK goes down; while it is down one container disappears and a
	// stranger appears.
	n.stop()
	require.NoError(t, n.m.Close())
	_, err = rt.Stop(ctx, gone.Container)
	require.NoError(t, err)
	require.NoError(t, rt.Delete(ctx, gone.Container))
	stranger := isolation.Spec{ID: "stranger", Tenant: "acme", Image: "x", Args: []string{bins.trainer, "-checkpoint-dir", t.TempDir()}}
	_, err = rt.Create(ctx, stranger)
	require.NoError(t, err)
	require.NoError(t, rt.Start(ctx, isolation.Ref{Tenant: "acme", ID: "stranger"}))

	store2, err := bolt.Open(path)
	require.NoError(t, err)
	m2, err := workload.New(n.gpus, rt, workload.WithStore(store2), workload.WithClock(n.clk),
		workload.WithLoad(n.rig.SetGPULoad), workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.m = m2
	n.start()

	n.waitFor("keeps-running", workload.StateRunning)
	w, err := m2.Get("keeps-running")
	require.NoError(t, err)
	assert.Equal(t, keep.Container, w.Container, "the same container is re-adopted, not restarted")
	assert.Equal(t, keep.Attempt, w.Attempt)

	w = n.waitFor("will-vanish", workload.StateQueued, workload.StateScheduled, workload.StateRunning)
	assert.Contains(t, w.Reason+" "+reasonHistory(t, m2, "will-vanish"), "vanished")

	infos, err := rt.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	assert.NotContains(t, ids, "stranger", "a container without a record is removed")
	assert.Contains(t, ids, keep.Container.ID)
	count := 0
	for _, id := range ids {
		if id == keep.Container.ID {
			count++
		}
	}
	assert.Equal(t, 1, count, "no duplicate container")

	w, err = m2.Get("waits")
	require.NoError(t, err)
	assert.Equal(t, workload.StateQueued, w.State, "the queue survives the restart")
}

func reasonHistory(t *testing.T, m *workload.Manager, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s := ""
	for ev := range m.Watch(ctx, 0) {
		if ev.ID == id {
			s += ev.Reason + " "
		}
	}
	return s
}

// TestHandoverRefusesDirtyGPU: a process left on a GPU after its workload
// ended keeps the next workload off it; the GPU is quarantined until an
// operator releases it.
func TestHandoverRefusesDirtyGPU(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "a40", options: []workload.Option{workload.WithHygieneTimeout(100 * time.Millisecond)}})
	ctx := context.Background()
	dirty := n.devs[0].UUID
	// A zombie CUDA process the last tenant left behind.
	n.rig.SetGPULoad(dirty, 0, []int{4242})

	s := trainer("pinned", 0, 1, t.TempDir())
	s.GPUs.UUIDs = []string{dirty}
	_, err := n.m.Submit(ctx, s)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, g := range n.m.GPUs() {
			if g.Device.UUID == dirty {
				return g.Quarantine != ""
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	// The quarantine comes first, then the launch is given up.
	w := n.waitFor("pinned", workload.StateQueued)
	assert.Contains(t, w.Reason, "handover refused", "the workload waits instead of sharing a dirty GPU")
	for _, g := range n.m.GPUs() {
		if g.Device.UUID == dirty {
			assert.Contains(t, g.Quarantine, "process 4242 still on the GPU")
		}
	}

	n.rig.SetGPULoad(dirty, 0, nil) // the operator killed it
	require.NoError(t, n.m.Release(dirty))
	n.waitFor("pinned", workload.StateRunning)
}

// TestPolicyKeepsProfitableMining: a job priced below what mining earns
// does not displace miners; it takes a GPU only when one is idle.
func TestPolicyKeepsProfitableMining(t *testing.T) {
	policy := workload.PolicyFunc(func(s workload.Spec, mining []gpu.Device) (bool, string) {
		const miningPerGPUHour = 0.25
		if s.PricePerGPUHour < miningPerGPUHour {
			return false, "mining earns 0.25 per GPU-hour"
		}
		return true, ""
	})
	n := newNode(t, nodeOpts{filler: true, options: []workload.Option{workload.WithPolicy(policy)}})
	ctx := context.Background()
	n.waitMining(8)
	cheap := trainer("cheap", 1, 1, t.TempDir())
	cheap.PricePerGPUHour = 0.10
	_, err := n.m.Submit(ctx, cheap)
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond)
	w, _ := n.m.Get("cheap")
	assert.Equal(t, workload.StateQueued, w.State)
	assert.Equal(t, 8, n.mining())

	dear := trainer("dear", 1, 1, t.TempDir())
	_, err = n.m.Submit(ctx, dear)
	require.NoError(t, err)
	n.waitFor("dear", workload.StateRunning)
}

func TestExplicitPlacementAndWatchReplay(t *testing.T) {
	n := newNode(t, nodeOpts{preset: "mixed", filler: true})
	ctx := context.Background()
	n.waitMining(8)
	// A control plane places the job on GPUs 2 and 3 (the RTX 3090s).
	s := trainer("placed", 0, 1, t.TempDir())
	s.GPUs.UUIDs = []string{n.devs[2].UUID, n.devs[3].UUID}
	s.GPUs.Models = []string{"GeForce RTX 3090"}
	_, err := n.m.Submit(ctx, s)
	require.NoError(t, err)
	w := n.waitFor("placed", workload.StateRunning)
	assert.Equal(t, s.GPUs.UUIDs, w.GPUs)

	// A watcher that comes late replays what it missed, in order.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var types []workload.EventType
	for ev := range n.m.Watch(wctx, 0) {
		if ev.ID == "placed" {
			types = append(types, ev.Type)
			if ev.Type == workload.EventStarted {
				break
			}
		}
	}
	assert.Equal(t, []workload.EventType{workload.EventQueued, workload.EventScheduled, workload.EventStarted}, types)
}

// TestStandingBudget: a budget given at start holds the rig under it: the
// filler fills only what the budget allows.
func TestStandingBudget(t *testing.T) {
	n := newNode(t, nodeOpts{filler: true, options: []workload.Option{workload.WithPowerBudget(1200)}})
	require.Eventually(t, func() bool { return n.mining() >= 1 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	draw := sumPower(t, n)
	t.Logf("budget 1200 W: %d miners, %.0f W", n.mining(), draw)
	assert.LessOrEqual(t, draw, 1200.0)
	assert.Less(t, n.mining(), 8)
	assert.Equal(t, 1200.0, n.m.PowerBudget())
}

// TestRestartWithoutRecordsReadoptsByLabels: the records are lost (a memory
// store), yet a new Manager re-adopts the running containers from their
// labels instead of killing them.
func TestRestartWithoutRecordsReadoptsByLabels(t *testing.T) {
	ctx := context.Background()
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", rt: rt})
	_, err = n.m.Submit(ctx, trainer("orphaned", 2, 1, t.TempDir()))
	require.NoError(t, err)
	before := n.waitFor("orphaned", workload.StateRunning)
	n.stop()
	require.NoError(t, n.m.Close())

	m2, err := workload.New(n.gpus, rt, workload.WithClock(n.clk), workload.WithLoad(n.rig.SetGPULoad),
		workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.m = m2
	n.start()
	w := n.waitFor("orphaned", workload.StateRunning)
	assert.Equal(t, before.Container, w.Container, "the same container, not a new one")
	assert.ElementsMatch(t, before.GPUs, w.GPUs)
	assert.Contains(t, w.Reason, "labels")
	infos, err := rt.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	assert.Len(t, infos, 1, "nothing killed, nothing duplicated")
	// It is accounted for: its GPUs are held, and it can be cancelled.
	require.NoError(t, m2.Cancel(ctx, "orphaned"))
	n.waitFor("orphaned", workload.StateCancelled)
}

// TestCancelSurvivesRestart: a Cancel that the manager could not carry out
// before it went down is carried out by the next one, and the new events
// continue the old sequence.
func TestCancelSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", store: store, rt: rt})
	_, err = n.m.Submit(ctx, trainer("doomed", 1, 1, t.TempDir()))
	require.NoError(t, err)
	w := n.waitFor("doomed", workload.StateRunning)
	n.stop() // Run is gone: nothing acts on the Cancel
	require.NoError(t, n.m.Cancel(ctx, "doomed"))
	lastSeq := w.Seq
	for _, x := range n.m.List(workload.Filter{}) {
		lastSeq = max(lastSeq, x.Seq)
	}
	require.NoError(t, n.m.Close())

	store2, err := bolt.Open(path)
	require.NoError(t, err)
	m2, err := workload.New(n.gpus, rt, workload.WithStore(store2), workload.WithClock(n.clk), workload.WithTick(20*time.Millisecond))
	require.NoError(t, err)
	n.m = m2
	n.start()
	w = n.waitFor("doomed", workload.StateCancelled)
	assert.Greater(t, w.Seq, lastSeq, "sequence numbers go on across the restart")
}

// TestPowerBudgetSurvivesRestart: a site's power budget is stored before it
// is in force, so a restarted manager keeps enforcing it; lifting it is
// stored too.
func TestPowerBudgetSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", store: store})
	require.Eventually(t, func() bool { return n.m.Status().Running }, 5*time.Second, 5*time.Millisecond)
	_, err = n.m.Curtail(ctx, 1500)
	require.NoError(t, err)
	n.stop()
	require.NoError(t, n.m.Close())

	reopen := func() *workload.Manager {
		s, err := bolt.Open(path)
		require.NoError(t, err)
		m, err := workload.New(n.gpus, n.rt, workload.WithStore(s), workload.WithClock(n.clk), workload.WithTick(20*time.Millisecond),
			workload.WithPowerBudget(9999)) // the stored budget is newer than the option
		require.NoError(t, err)
		return m
	}
	n.m = reopen()
	assert.Equal(t, 1500.0, n.m.PowerBudget())
	assert.Equal(t, 1500.0, n.m.Status().BudgetW)
	n.start()
	require.Eventually(t, func() bool { return n.m.Status().Running }, 5*time.Second, 5*time.Millisecond)
	_, err = n.m.Curtail(ctx, 0)
	require.NoError(t, err)
	n.stop()
	require.NoError(t, n.m.Close())
	n.m = reopen()
	assert.Zero(t, n.m.PowerBudget(), "lifted for good")
}
