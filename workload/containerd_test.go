package workload_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

// On real containerd, miners in containers fill a simulated rig; a
// training job takes two GPUs from them with handover hygiene (miners
// stopped within their grace, the miner's power tuning reset, only its
// own device nodes in the container); cancelled, it checkpoints within its
// grace and exits 0, and miners take the GPUs back.
func TestContainerdMinersYieldToTraining(t *testing.T) {
	n := newCtrNode(t, ctrNodeOpts{gpus: 4, filler: true, options: []workload.Option{workload.WithTick(50 * time.Millisecond)}})
	ctx := ctxFor(t)
	before := n.waitMining(4)
	for _, d := range n.devs {
		t.Logf("GPU %d (%s, %s): miner %s in container %s", d.Index, d.Name, d.UUID, before[d.UUID].Spec.ID, before[d.UUID].Container)
	}
	// The miners' tuning: a lowered power limit that must not reach a customer.
	const tunedW = 220.0
	for _, d := range n.devs {
		require.NoError(t, n.gpus.SetPowerLimit(ctx, d.UUID, tunedW))
	}

	ckpt := ckptDir(t)
	submitted := time.Now()
	_, err := n.m.Submit(ctx, ctrTrainer("train", 2, ckpt))
	require.NoError(t, err)
	started := n.ev.wait(t, 30*time.Second, eventIs("train", workload.EventStarted))
	tookStart := time.Since(submitted)
	w, err := n.m.Get("train")
	require.NoError(t, err)
	require.Equal(t, workload.StateRunning, w.State)
	require.Len(t, w.GPUs, 2)
	require.NotNil(t, started.Handover, "the GPUs came from miners")
	h := started.Handover
	t.Logf("training job %s runs in %s on %v: submit to started %v; handover from %v: drain %v, hygiene %v, total %v",
		w.Spec.ID, w.Container, w.GPUs, tookStart, h.From, h.Drain, h.Hygiene, h.Total)

	var victims []string
	for _, u := range w.GPUs {
		victims = append(victims, before[u].Spec.ID)
	}
	sort.Strings(victims)
	assert.Equal(t, victims, h.From, "the miners on its GPUs gave them up")
	assert.Positive(t, h.Drain)
	assert.Less(t, h.Drain, 2*time.Second, "the miners ended on SIGTERM, within their 2 s grace")
	assert.GreaterOrEqual(t, h.Total, h.Drain+h.Hygiene)
	assert.Less(t, h.Total, 5*time.Second)
	for _, id := range victims {
		pre := n.ev.find(eventIs(id, workload.EventPreempting))
		require.Len(t, pre, 1, "miner %s is asked to stop once", id)
		assert.Equal(t, "preempted by train", pre[0].Reason)
		assert.Less(t, pre[0].Seq, started.Seq)
		ev := n.ev.wait(t, 10*time.Second, eventIs(id, workload.EventPreempted))
		require.NotNil(t, ev.Exit)
		assert.Equal(t, isolation.ReasonStopped, ev.Exit.Reason, "miner %s stopped on its signal, not killed", id)
		assert.Equal(t, 0, ev.Exit.Code)
		assert.Less(t, ev.Seq, started.Seq, "the job starts after the miners are gone")
	}
	mining := n.miners()
	assert.Len(t, mining, 2, "the other miners go on")
	for u, m := range mining {
		assert.NotContains(t, w.GPUs, u)
		assert.Equal(t, before[u].Spec.ID, m.Spec.ID, "an untouched miner is not restarted")
	}

	// The container has the device nodes of its GPUs and nvidiactl, and
	// its device cgroup allows those and no other NVIDIA device.
	var want []string
	for _, u := range w.GPUs {
		want = append(want, fmt.Sprintf("/dev/nvidia%d", n.deviceOf(u).Minor))
	}
	nodes, allowed := n.nvidiaDevices(w.Container)
	t.Logf("container %s has device nodes %v, its cgroup allows %v", w.Container, nodes, allowed)
	assert.ElementsMatch(t, append(want, "/dev/nvidiactl"), nodes)
	assert.ElementsMatch(t, append(want, "/dev/nvidiactl"), allowed)

	// The miner's power tuning does not reach the customer; the GPUs still
	// mining keep it.
	for _, d := range n.devs {
		lim, err := n.gpus.PowerLimits(ctx, d.UUID)
		require.NoError(t, err)
		if slices.Contains(w.GPUs, d.UUID) {
			assert.Equal(t, lim.DefaultW, lim.CurrentW, "GPU %d handed over at its default limit", d.Index)
		} else {
			assert.Equal(t, tunedW, lim.CurrentW, "GPU %d still mines with its tuning", d.Index)
		}
	}

	// The simulated GPUs carry the container's process, so their power
	// follows what runs.
	info, err := n.rt.Inspect(ctx, w.Container)
	require.NoError(t, err)
	require.Positive(t, info.PID)
	for _, u := range w.GPUs {
		procs, err := n.gpus.Processes(ctx, u)
		require.NoError(t, err)
		require.Len(t, procs, 1)
		assert.Equal(t, info.PID, procs[0].PID)
	}
	require.Eventually(t, func() bool { return strings.Contains(n.logOf(w.Container), "'loss'") },
		10*time.Second, 10*time.Millisecond, "the trainer logs its progress")

	// Cancelled, it checkpoints within its grace and exits 0.
	cancelAt := time.Now()
	require.NoError(t, n.m.Cancel(ctx, "train"))
	end := n.ev.wait(t, 15*time.Second, eventIs("train", workload.EventCancelled))
	stopTook := time.Since(cancelAt)
	require.NotNil(t, end.Exit)
	assert.Equal(t, 0, end.Exit.Code)
	assert.Equal(t, isolation.ReasonStopped, end.Exit.Reason, "ended within its grace, not killed")
	assert.Less(t, stopTook, w.Spec.StopGrace)
	cks := checkpoints(ckpt)
	require.Len(t, cks, 1, "one checkpoint, written on SIGTERM")
	t.Logf("cancelled after %v: exit %d (%s), checkpoint %s", stopTook, end.Exit.Code, end.Exit.Reason, filepath.Base(cks[0]))

	// Miners come back on the freed GPUs.
	after := n.waitMining(4)
	for _, u := range w.GPUs {
		assert.NotEqual(t, before[u].Spec.ID, after[u].Spec.ID, "a new miner on %s", u)
		t.Logf("GPU %s mines again: %s in %s", u, after[u].Spec.ID, after[u].Container)
	}
	require.Eventually(t, func() bool {
		infos, err := n.rt.List(ctx, isolation.Filter{Tenant: customerTenant})
		return err == nil && len(infos) == 0
	}, 10*time.Second, 10*time.Millisecond, "the ended job's container is deleted")
}

// The SDK restarts on a node whose containers run on: a new manager over
// the same bbolt file and a new runtime on the same daemon re-adopts every
// running container once (no new container, no duplicate), and the job
// whose container was deleted meanwhile is requeued and resumes from the
// checkpoint it wrote when stopped.
func TestContainerdRestartReadopts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	store, err := bolt.Open(path)
	require.NoError(t, err)
	opts := ctrNodeOpts{gpus: 4, filler: true, store: store, options: []workload.Option{workload.WithTick(50 * time.Millisecond)}}
	n := newCtrNode(t, opts)
	ctx := ctxFor(t)
	n.waitMining(4)
	_, err = n.m.Submit(ctx, ctrTrainer("keeps", 1, ckptDir(t)))
	require.NoError(t, err)
	_, err = n.m.Submit(ctx, ctrTrainer("vanishes", 1, ckptDir(t)))
	require.NoError(t, err)
	keep := n.waitFor("keeps", workload.StateRunning)
	gone := n.waitFor("vanishes", workload.StateRunning)
	miners := n.waitMining(2)
	require.Eventually(t, func() bool { return strings.Contains(n.logOf(gone.Container), "'loss'") },
		10*time.Second, 10*time.Millisecond, "the trainer logs its progress")
	running := n.containers()
	t.Logf("before the restart: containers %v", running)

	// The SDK goes down; meanwhile an operator stops and deletes one job's
	// container (it checkpoints on the way out).
	n.stop()
	_, err = n.rt.Stop(ctx, gone.Container)
	require.NoError(t, err)
	require.NoError(t, n.rt.Delete(ctx, gone.Container))
	require.NoError(t, n.rt.Close())
	// Its process left the GPU. Nobody told the simulated rig, whose load
	// the manager sets (WithLoad): do what the driver would show.
	for _, u := range gone.GPUs {
		n.rig.SetGPULoad(u, 0, nil)
	}
	t.Logf("while down: deleted %s", gone.Container)

	opts.store, err = bolt.Open(path)
	require.NoError(t, err)
	n.rt = n.newRuntime()
	n.start(opts)

	w := n.waitFor("keeps", workload.StateRunning)
	assert.Equal(t, keep.Container, w.Container, "the same container is re-adopted")
	assert.Equal(t, keep.Attempt, w.Attempt)
	assert.Equal(t, keep.GPUs, w.GPUs)
	for u, m := range n.waitMining(2) {
		assert.Equal(t, miners[u].Spec.ID, m.Spec.ID, "miner on %s re-adopted", u)
		assert.Equal(t, miners[u].Container, m.Container)
	}

	requeued := n.ev.wait(t, 10*time.Second, eventIs("vanishes", workload.EventQueued))
	assert.Contains(t, requeued.Reason, "vanished")
	w = n.waitFor("vanishes", workload.StateRunning)
	assert.Equal(t, gone.Attempt+1, w.Attempt)
	assert.NotEqual(t, gone.Container, w.Container)
	assert.Equal(t, gone.GPUs, w.GPUs, "it takes the GPU its container left")
	require.Eventually(t, func() bool { return strings.Contains(n.logOf(w.Container), "resumed from step=") },
		10*time.Second, 10*time.Millisecond, "it resumes from its checkpoint")
	t.Logf("after the restart: %s requeued (%s) and running again in %s", w.Spec.ID, requeued.Reason, w.Container)

	// Exactly the containers that ran, each once, plus the requeued job's
	// new one; the re-adopted ones are not started again.
	want := slices.DeleteFunc(slices.Clone(running), func(r isolation.Ref) bool { return r == gone.Container })
	want = sortedRefs(append(want, w.Container))
	// Settled once the set is right and stays so for a while.
	var have []isolation.Ref
	stable := time.Time{}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if have = n.containers(); !slices.Equal(want, have) {
			stable = time.Time{}
			continue
		}
		if stable.IsZero() {
			stable = time.Now()
		}
		if time.Since(stable) > 300*time.Millisecond {
			break
		}
	}
	assert.Equal(t, want, have, "the containers that ran, each once, and the requeued job's new one")
	t.Logf("after the restart: containers %v", have)
	for _, ev := range n.ev.find(func(ev workload.Event) bool { return ev.Type == workload.EventStarted }) {
		assert.Equal(t, "vanishes", ev.ID, "only the requeued job starts a container")
	}
}

// deviceOf is the node's device with uuid.
func (n *ctrNode) deviceOf(uuid string) gpu.Device {
	for _, d := range n.devs {
		if d.UUID == uuid {
			return d
		}
	}
	n.tb.Fatalf("no GPU %s", uuid)
	return gpu.Device{}
}

// nvidiaDevices reads the container's OCI spec from containerd: the
// NVIDIA device nodes it has (made, or bound from the host in a user
// namespace) and those its device cgroup allows.
func (n *ctrNode) nvidiaDevices(ref isolation.Ref) (nodes, allowed []string) {
	n.tb.Helper()
	c := n.client
	ctx := namespaces.WithNamespace(ctxFor(n.tb), isolation.Namespace(ref.Tenant))
	ctr, err := c.LoadContainer(ctx, ref.ID)
	require.NoError(n.tb, err)
	spec, err := ctr.Spec(ctx)
	require.NoError(n.tb, err)
	const nvidiaMajor = 195
	for _, d := range spec.Linux.Devices {
		if d.Major == nvidiaMajor {
			nodes = append(nodes, d.Path)
		}
	}
	for _, m := range spec.Mounts {
		if m.Type == "bind" && strings.HasPrefix(m.Destination, "/dev/nvidia") {
			nodes = append(nodes, m.Destination)
		}
	}
	for _, r := range spec.Linux.Resources.Devices {
		if !r.Allow || r.Major == nil || *r.Major != nvidiaMajor {
			continue
		}
		switch {
		case r.Minor == nil:
			allowed = append(allowed, "/dev/nvidia*")
		case *r.Minor == 255:
			allowed = append(allowed, "/dev/nvidiactl")
		default:
			allowed = append(allowed, fmt.Sprintf("/dev/nvidia%d", *r.Minor))
		}
	}
	return nodes, allowed
}

// containers lists every container of the SDK's tenants straight from
// containerd, sorted.
func (n *ctrNode) containers() []isolation.Ref {
	n.tb.Helper()
	c := n.client
	ctx := ctxFor(n.tb)
	nss, err := c.NamespaceService().List(ctx)
	require.NoError(n.tb, err)
	var out []isolation.Ref
	for _, ns := range nss {
		tenant, ok := strings.CutPrefix(ns, isolation.NamespacePrefix)
		if !ok {
			continue
		}
		ctrs, err := c.Containers(namespaces.WithNamespace(ctx, ns))
		require.NoError(n.tb, err)
		for _, ctr := range ctrs {
			out = append(out, isolation.Ref{Tenant: tenant, ID: ctr.ID()})
		}
	}
	return sortedRefs(out)
}

func sortedRefs(refs []isolation.Ref) []isolation.Ref {
	out := slices.Clone(refs)
	slices.SortFunc(out, func(a, b isolation.Ref) int { return strings.Compare(a.String(), b.String()) })
	return out
}
