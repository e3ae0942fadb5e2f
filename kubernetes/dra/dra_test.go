package dra_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/kubernetes/dra"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// slice reads the node's ResourceSlice back from the API server, waiting
// until ok accepts it.
func (n *node) slice(ok func(resourceapi.ResourceSlice) bool) resourceapi.ResourceSlice {
	n.t.Helper()
	var got resourceapi.ResourceSlice
	require.Eventually(n.t, func() bool {
		list, err := n.client.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
		if err != nil || len(list.Items) != 1 {
			return false
		}
		got = list.Items[0]
		return ok(got)
	}, 10*time.Second, 20*time.Millisecond, "the published slice never matched; last %d devices", len(got.Spec.Devices))
	return got
}

func device(s resourceapi.ResourceSlice, name string) (resourceapi.Device, bool) {
	for _, d := range s.Spec.Devices {
		if d.Name == name {
			return d, true
		}
	}
	return resourceapi.Device{}, false
}

// TestResourceSliceSaysWhatEachGPUIsGoodFor: one slice per node, a device
// per GPU, attributes read back one by one against the inventory and
// readiness: an A40 is for training, a 3080 on an x1 riser for inference
// and flagged as a riser.
func TestResourceSliceSaysWhatEachGPUIsGoodFor(t *testing.T) {
	for _, tc := range []struct {
		preset      string
		use         string
		riser       bool
		gen, width  int64
		model, arch string
		cc          string
		ecc         bool
	}{
		{sim.PresetA40, "training", false, 4, 16, "A40", "Ampere", "8.6.0", true},
		{sim.PresetRTX3080Riser, "inference", true, 1, 1, "GeForce RTX 3080", "Ampere", "8.6.0", false},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			n := newNode(t, tc.preset, 3, false)
			s := n.slice(func(s resourceapi.ResourceSlice) bool { return len(s.Spec.Devices) == 3 })
			assert.Equal(t, dra.DriverName, s.Spec.Driver)
			require.NotNil(t, s.Spec.NodeName)
			assert.Equal(t, nodeName, *s.Spec.NodeName)
			assert.Equal(t, nodeName, s.Spec.Pool.Name)
			rs, _ := n.gpus.HostReadiness()
			for i, dev := range n.gpus.Devices() {
				d, ok := device(s, fmt.Sprintf("gpu-%d", dev.Index))
				require.True(t, ok)
				a := d.Attributes
				assert.Equal(t, dev.UUID, *a["uuid"].StringValue)
				assert.Equal(t, tc.model, *a["model"].StringValue)
				assert.Equal(t, tc.arch, *a["architecture"].StringValue)
				assert.Equal(t, tc.cc, *a["computeCapability"].VersionValue)
				assert.Equal(t, tc.use, *a["use"].StringValue)
				assert.Equal(t, tc.riser, *a["riser"].BoolValue)
				assert.Equal(t, tc.gen, *a["pcieGeneration"].IntValue)
				assert.Equal(t, tc.width, *a["pcieWidth"].IntValue)
				assert.Equal(t, tc.ecc, *a["ecc"].BoolValue)
				assert.Equal(t, int64(rs[i].Fit.InferenceINT4Params), *a["inferenceINT4Params"].IntValue)
				assert.Equal(t, int64(rs[i].Fit.QLoRAParams), *a["qloraParams"].IntValue)
				assert.Positive(t, *a["inferenceFP16Params"].IntValue)
				assert.Equal(t, dev.PCIBusID, *a["resource.kubernetes.io/pciBusID"].StringValue)
				mem := d.Capacity["memory"].Value
				assert.Equal(t, int64(dev.MemoryBytes), mem.Value())
				assert.Empty(t, d.Taints)
			}
		})
	}
}

// TestUnhealthyGPUIsTaintedThenRecovers: an Xid 79 taints the GPU in the
// slice within seconds; a reset clears it. When the API server drops
// taints, the GPU leaves the slice instead.
func TestUnhealthyGPUIsTaintedThenRecovers(t *testing.T) {
	n := newNode(t, sim.PresetA40, 3, false)
	n.slice(func(s resourceapi.ResourceSlice) bool { return len(s.Spec.Devices) == 3 })
	require.NoError(t, n.rig.InjectXID(1, 79))
	t0 := time.Now()
	s := n.slice(func(s resourceapi.ResourceSlice) bool { d, _ := device(s, "gpu-1"); return len(d.Taints) == 1 })
	d, _ := device(s, "gpu-1")
	t.Logf("tainted after %v: %+v", time.Since(t0), d.Taints[0])
	assert.Less(t, time.Since(t0), 5*time.Second)
	assert.Equal(t, resourceapi.DeviceTaintEffectNoSchedule, d.Taints[0].Effect)
	assert.Equal(t, dra.DriverName+"/unhealthy", d.Taints[0].Key)

	n.drv.HandleError(context.Background(), &resourceslice.DroppedFieldsError{PoolName: nodeName}, "taints dropped")
	n.slice(func(s resourceapi.ResourceSlice) bool {
		_, ok := device(s, "gpu-1")
		return !ok && len(s.Spec.Devices) == 2
	})

	require.NoError(t, n.rig.Reset(1))
	require.NoError(t, n.gpus.ResetHealth(n.gpus.Devices()[1].UUID))
	n.slice(func(s resourceapi.ResourceSlice) bool { return len(s.Spec.Devices) == 3 })
}

// TestKubeletPreparesAndUnprepares plays kubelet over the plugin's real
// gRPC sockets on a node whose miners run on real containerd: a claim's
// GPU is taken from its miner and its CDI ID is the one the isolation
// layer's spec names; preparing again is the same; bad claims in the same
// request get their own errors and leave nothing; unpreparing gives the
// GPUs back to mining.
func TestKubeletPreparesAndUnprepares(t *testing.T) {
	containerdRequired(t)
	n := newNode(t, sim.PresetA40, 4, true)
	n.waitMining(4)
	ctx := ctxFor(t)
	k := n.kubelet(ctx)
	devs := n.gpus.Devices()

	a := n.claim("team-a", "train", "gpu-1")
	resp, err := k.dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(a)}})
	require.NoError(t, err)
	got := resp.Claims[string(a.UID)]
	require.NotNil(t, got)
	require.Empty(t, got.Error)
	require.Len(t, got.Devices, 1)
	cdiID := "nvidia.com/gpu=" + devs[1].UUID
	assert.Equal(t, []string{cdiID}, got.Devices[0].CdiDeviceIds)
	assert.Contains(t, n.cdi.Names[1], cdiID, "the same name the isolation layer's CDI spec gives GPU 1")
	assert.Equal(t, []string{"gpu"}, got.Devices[0].RequestNames)
	id := dra.WorkloadID(a.Name, a.UID)
	assert.Equal(t, id, n.holder(1).Workload, "the claim holds GPU 1")
	assert.Equal(t, "team-a", n.holder(1).Tenant)
	infos, err := n.rt.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	for _, in := range infos {
		if in.State == isolation.StateRunning {
			assert.NotContains(t, in.GPUs, devs[1].UUID, "no miner left on the claim's GPU: %s", in.Ref)
		}
	}
	n.waitMining(3)

	again, err := k.dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(a)}})
	require.NoError(t, err)
	assert.Equal(t, got.Devices[0].CdiDeviceIds, again.Claims[string(a.UID)].Devices[0].CdiDeviceIds, "prepare is idempotent")
	w, err := n.m.Get(id)
	require.NoError(t, err)
	assert.Equal(t, 1, w.Attempt, "one handover, not two")

	// Bad claims beside a good one, in one request.
	require.NoError(t, n.m.Cordon(ctx, devs[2].UUID, "fan replaced"))
	require.NoError(t, n.rig.InjectXID(3, 79))
	require.Eventually(t, func() bool { return !n.holder(3).Healthy }, 10*time.Second, 10*time.Millisecond)
	good := n.claim("team-b", "infer", "gpu-0")
	cases := map[string]struct {
		c    *resourceapi.ResourceClaim
		says string
	}{
		"unknown device":       {n.claim("team-b", "ghost", "gpu-9"), "not a GPU of node"},
		"another claim's GPU":  {n.claim("team-b", "steal", "gpu-1"), "is prepared for claim team-a/train"},
		"cordoned GPU":         {n.claim("team-b", "cordoned", "gpu-2"), "cordoned: fan replaced"},
		"unhealthy GPU":        {n.claim("team-b", "sick", "gpu-3"), "unhealthy"},
		"good and bad devices": {n.claim("team-b", "mixed", "gpu-9", "gpu-2"), "gpu-9"},
		"the same GPU twice":   {n.claim("team-b", "twice", "gpu-0"), "also allocated to claim team-b/infer in this request"},
	}
	req := &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(good)}}
	for _, tc := range cases {
		req.Claims = append(req.Claims, ref(tc.c))
	}
	resp, err = k.dra.NodePrepareResources(ctx, req)
	require.NoError(t, err)
	assert.Empty(t, resp.Claims[string(good.UID)].Error, "the good claim is prepared")
	assert.Equal(t, []string{"nvidia.com/gpu=" + devs[0].UUID}, resp.Claims[string(good.UID)].Devices[0].CdiDeviceIds)
	for name, tc := range cases {
		r := resp.Claims[string(tc.c.UID)]
		require.NotNil(t, r, name)
		assert.Contains(t, r.Error, tc.says, name)
		t.Logf("%s: %s", name, r.Error)
		_, err := n.m.Get(dra.WorkloadID(tc.c.Name, tc.c.UID))
		assert.ErrorIs(t, err, workload.ErrNotFound, "%s: nothing half-prepared", name)
	}
	assert.Equal(t, id, n.holder(1).Workload, "the other claim's GPU stays with it")

	un, err := k.dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(a), ref(good), ref(good)}})
	require.NoError(t, err)
	for uid, r := range un.Claims {
		assert.Empty(t, r.Error, uid)
	}
	w, err = n.m.Get(id)
	require.NoError(t, err)
	assert.True(t, w.State.Final())
	require.NoError(t, n.m.Uncordon(ctx, devs[2].UUID))
	n.waitMining(3) // GPU 3 is unhealthy: no miner there
	assert.Equal(t, workload.KindMining, n.holder(1).Kind, "GPU 1 mines again")

	un, err = k.dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(a)}})
	require.NoError(t, err)
	assert.Empty(t, un.Claims[string(a.UID)].Error, "unpreparing twice is fine")
}

// TestPluginRestartsBetweenPrepareAndUnprepare: the plugin's process
// restarts while a claim is prepared; the new one keeps the claim's GPU
// held, answers a repeated prepare with the same devices, and unprepares.
func TestPluginRestartsBetweenPrepareAndUnprepare(t *testing.T) {
	containerdRequired(t)
	n := newNode(t, sim.PresetA40, 2, true)
	n.waitMining(2)
	ctx := ctxFor(t)
	c := n.claim("team-a", "long-run", "gpu-0")
	resp, err := n.kubelet(ctx).dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	require.NoError(t, err)
	require.Empty(t, resp.Claims[string(c.UID)].Error)
	id := dra.WorkloadID(c.Name, c.UID)

	n.restart()
	k := n.kubelet(ctx) // kubelet registers the new plugin
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, id, n.holder(0).Workload, "still the claim's after the restart")
	again, err := k.dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	require.NoError(t, err)
	assert.Equal(t, resp.Claims[string(c.UID)].Devices[0].CdiDeviceIds, again.Claims[string(c.UID)].Devices[0].CdiDeviceIds)
	w, err := n.m.Get(id)
	require.NoError(t, err)
	assert.Equal(t, 1, w.Attempt, "not prepared twice")

	un, err := k.dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	require.NoError(t, err)
	assert.Empty(t, un.Claims[string(c.UID)].Error)
	n.waitMining(2)
}

// TestClaimIsAccounted: while a claim holds a GPU its energy and time go
// to it in the ledger, as its namespace's.
func TestClaimIsAccounted(t *testing.T) {
	n := newNode(t, sim.PresetA40, 2, false)
	n.waitMining(2)
	ctx := ctxFor(t)
	c := n.claim("team-a", "finetune", "gpu-1")
	c.Annotations = map[string]string{dra.AnnotationPrice: "1.5"}
	_, err := n.client.ResourceV1().ResourceClaims(c.Namespace).Update(ctx, c, metav1.UpdateOptions{})
	require.NoError(t, err)
	k := n.kubelet(ctx)
	resp, err := k.dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	require.NoError(t, err)
	require.Empty(t, resp.Claims[string(c.UID)].Error)
	time.Sleep(time.Second)
	_, err = k.dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	require.NoError(t, err)
	id := dra.WorkloadID(c.Name, c.UID)
	var rows []accounting.Row
	require.Eventually(t, func() bool {
		require.NoError(t, n.meter.Flush(ctx))
		rows, err = accounting.Summarize(n.ledger.Query(ctx, accounting.Query{Workload: id}), accounting.ByTenant)
		return err == nil && len(rows) == 1 && rows[0].GPUHours*3600 > 0.8
	}, 10*time.Second, 50*time.Millisecond, "rows %+v", rows)
	r := rows[0]
	t.Logf("claim %s: %.2f GPU-s, %.1f J, revenue %s, cost %s", id, r.GPUHours*3600, float64(r.EnergyMJ)/1000, r.Revenue, r.Cost)
	assert.Equal(t, "team-a", r.Key)
	assert.Positive(t, r.EnergyMJ)
	assert.Positive(t, r.Revenue.Float(), "the claim's price is its revenue")
	recs, err := accounting.Collect(n.ledger.Query(ctx, accounting.Query{Workload: id}))
	require.NoError(t, err)
	for _, rec := range recs {
		assert.Equal(t, n.gpus.Devices()[1].UUID, rec.GPU)
	}
}

func containerdRequired(t testing.TB) { t.Helper(); daemon.Daemon(t) }
