package workload_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

// holderOf is the workload holding GPU uuid, "" when none.
func holderOf(n *node, uuid string) string {
	for _, g := range n.m.GPUs() {
		if g.Device.UUID == uuid {
			return g.Workload
		}
	}
	return ""
}

// TestExternalWorkloadHoldsItsGPUs: an external workload (a Kubernetes
// claim's pod, run by kubelet) takes its GPU from the miner with the
// usual handover, holds it with nothing started by the manager, keeps it
// across a restart of the manager, and gives it back to mining when it
// is cancelled.
func TestExternalWorkloadHoldsItsGPUs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	n := newNode(t, nodeOpts{preset: "a40", filler: true, store: store, rt: rt})
	n.waitMining(len(n.devs))
	uuid := n.devs[2].UUID
	spec := workload.Spec{ID: "claim-1", Kind: workload.KindTraining, Tenant: "team-a", External: true,
		GPUs: workload.GPURequest{UUIDs: []string{uuid}, IgnoreReadiness: true}, PricePerGPUHour: 1.2}
	_, err = n.m.Submit(ctx, spec)
	require.NoError(t, err)
	w := n.waitFor("claim-1", workload.StateRunning)
	assert.Equal(t, []string{uuid}, w.GPUs)
	assert.Equal(t, "claim-1", holderOf(n, uuid))
	assert.Equal(t, len(n.devs)-1, n.mining(), "only its GPU's miner yielded")
	infos, err := rt.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	for _, in := range infos {
		assert.NotEqual(t, "claim-1", in.Workload, "the manager started no container for it")
	}

	// A restart: the hold is made again from the record.
	n.stop()
	require.NoError(t, n.m.Close())
	store2, err := bolt.Open(path)
	require.NoError(t, err)
	n.m, err = workload.New(n.gpus, rt, workload.WithStore(store2), workload.WithClock(n.clk), workload.WithLoad(n.rig.SetGPULoad),
		workload.WithFiller(minerFiller()), workload.WithTick(20*time.Millisecond), workload.WithPowerSettle(0))
	require.NoError(t, err)
	n.start()
	require.Eventually(t, func() bool { return n.m.Status().Running }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // a few ticks: nothing takes the GPU
	w, err = n.m.Get("claim-1")
	require.NoError(t, err)
	assert.Equal(t, workload.StateRunning, w.State, "%s", w.Reason)
	assert.Equal(t, "claim-1", holderOf(n, uuid))

	require.NoError(t, n.m.Cancel(ctx, "claim-1"))
	w = n.waitFor("claim-1", workload.StateCancelled)
	assert.Equal(t, 1, w.Attempt)
	require.Eventually(t, func() bool { h := holderOf(n, uuid); return h != "" && h != "claim-1" }, 10*time.Second, 10*time.Millisecond,
		"a miner takes the GPU back")
}
