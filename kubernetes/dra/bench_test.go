package dra_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
)

// BenchmarkNodePrepare measures NodePrepareResources of a 1-GPU claim on a
// node whose GPUs all mine on real containerd (kubelet's call over the
// plugin's socket, to the devices in the answer), against the manager's
// own handover of the same GPU to an external workload submitted in
// process, interleaved, and reports prepare/handover (goal <= 1.1).
func BenchmarkNodePrepare(b *testing.B) {
	containerdRequired(b)
	n := newNode(b, sim.PresetA40, 2, true)
	n.waitMining(2)
	ctx := ctxFor(b)
	k := n.kubelet(ctx)
	uuid := n.gpus.Devices()[0].UUID
	viaPlugin := func(i int) (time.Duration, func()) {
		c := n.claim("bench", fmt.Sprintf("claim-%d", i), "gpu-0")
		t0 := time.Now()
		resp, err := k.dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
		took := time.Since(t0)
		require.NoError(b, err)
		require.Empty(b, resp.Claims[string(c.UID)].Error)
		return took, func() {
			_, err := k.dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
			require.NoError(b, err)
		}
	}
	inProcess := func(i int) (time.Duration, func()) {
		id := fmt.Sprintf("direct-%d", i)
		t0 := time.Now()
		w, err := n.m.Submit(ctx, workload.Spec{ID: id, Kind: workload.KindTraining, Tenant: "bench", External: true, Priority: 1000,
			GPUs: workload.GPURequest{UUIDs: []string{uuid}, IgnoreReadiness: true}})
		require.NoError(b, err)
		for ev := range n.m.Watch(ctx, w.Seq) {
			if ev.ID == id && ev.Type == workload.EventStarted {
				break
			}
		}
		return time.Since(t0), func() {
			require.NoError(b, n.m.Cancel(ctx, id))
			require.Eventually(b, func() bool { w, err := n.m.Get(id); return err == nil && w.State.Final() }, time.Minute, time.Millisecond)
		}
	}
	// Untimed: the GPU goes back to mining before the next round.
	back := func(release func()) {
		release()
		n.waitMining(2)
	}
	_, r := viaPlugin(-1)
	back(r)
	var plugin, direct time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, r := viaPlugin(i)
		b.StopTimer()
		back(r)
		b.StartTimer()
		d, r2 := inProcess(i)
		b.StopTimer()
		back(r2)
		b.StartTimer()
		plugin, direct = plugin+p, direct+d
	}
	b.StopTimer()
	b.ReportMetric(float64(plugin.Microseconds())/float64(b.N)/1000, "prepare-ms")
	b.ReportMetric(float64(direct.Microseconds())/float64(b.N)/1000, "handover-ms")
	b.ReportMetric(float64(plugin)/float64(direct), "prepare/handover")
	b.Logf("N=%d NodePrepareResources %v, the manager's handover %v, ratio %.3f", b.N,
		plugin/time.Duration(b.N), direct/time.Duration(b.N), float64(plugin)/float64(direct))
}
