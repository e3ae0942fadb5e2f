package workload_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

// BenchmarkHandover: on a node whose 4 GPUs all mine in containers, the
// time from Submit of a 2-GPU training job until its container runs
// (EventStarted), against the bare containerd client doing, one step after
// another on the same 2 GPUs, kill (SIGTERM to both miners, wait for their
// exit), delete (tasks, containers, snapshots), create (same image, same
// CDI devices, same hardening) and start. Both run in the same benchmark,
// interleaved, on the same daemon. ratio is manager p50 / bare p50.
func BenchmarkHandover(b *testing.B) {
	// The durable store a node runs with: its fsyncs are on the path too.
	store, err := bolt.Open(filepath.Join(b.TempDir(), "node.db"))
	require.NoError(b, err)
	n := newCtrNode(b, ctrNodeOpts{gpus: 4, filler: true, store: store})
	n.waitMining(len(n.devs))
	raw := newBareNode(b, n)
	var mgr, bare []time.Duration
	var phases struct{ toScheduled, drain, hygiene, start, kill, del, create, run []time.Duration }
	managerRun := func(i int) {
		id := fmt.Sprintf("train-%d", i)
		ckpt := ckptDir(b)
		t0 := time.Now()
		_, err := n.m.Submit(context.Background(), ctrTrainer(id, 2, ckpt))
		require.NoError(b, err)
		started := n.ev.wait(b, 30*time.Second, eventIs(id, workload.EventStarted))
		mgr = append(mgr, time.Since(t0))
		sched := n.ev.wait(b, time.Second, eventIs(id, workload.EventScheduled))
		phases.toScheduled = append(phases.toScheduled, sched.Time.Sub(t0))
		if h := started.Handover; h != nil {
			phases.drain = append(phases.drain, h.Drain)
			phases.hygiene = append(phases.hygiene, h.Hygiene)
			phases.start = append(phases.start, h.Total-h.Drain-h.Hygiene)
		}
		// Back to all mining, off the clock.
		require.NoError(b, n.m.Cancel(context.Background(), id))
		n.ev.wait(b, 30*time.Second, eventIs(id, workload.EventCancelled))
		n.waitMining(len(n.devs))
		require.Eventually(b, func() bool {
			infos, err := n.rt.List(context.Background(), isolation.Filter{Tenant: customerTenant})
			return err == nil && len(infos) == 0
		}, 10*time.Second, 5*time.Millisecond)
	}
	bareRun := func(i int) {
		raw.startMiners(b, i)
		st := raw.handover(b, i)
		bare = append(bare, st.total)
		phases.kill = append(phases.kill, st.kill)
		phases.del = append(phases.del, st.del)
		phases.create = append(phases.create, st.create)
		phases.run = append(phases.run, st.start)
		raw.removeTrainer(b)
	}
	b.ResetTimer()
	for i := range b.N {
		// Alternate who goes first, so neither always follows the other.
		if i%2 == 0 {
			managerRun(i)
			bareRun(i)
		} else {
			bareRun(i)
			managerRun(i)
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(pct(mgr, 50))/ms(pct(bare, 50)), "ratio")
	b.ReportMetric(ms(pct(mgr, 50)), "mgr-p50-ms")
	b.ReportMetric(ms(pct(mgr, 99)), "mgr-p99-ms")
	b.ReportMetric(ms(pct(bare, 50)), "bare-p50-ms")
	b.ReportMetric(ms(pct(bare, 99)), "bare-p99-ms")
	// The manager prepares the container while the miners drain: its
	// Handover.Drain is the longer of the two.
	b.Logf("N=%d manager p50 %v p99 %v (submit→scheduled %v, drain or create+prepare %v, hygiene %v, start %v); bare p50 %v p99 %v (kill %v, delete %v, create %v, start %v)",
		b.N, pct(mgr, 50), pct(mgr, 99), pct(phases.toScheduled, 50), pct(phases.drain, 50), pct(phases.hygiene, 50), pct(phases.start, 50),
		pct(bare, 50), pct(bare, 99), pct(phases.kill, 50), pct(phases.del, 50), pct(phases.create, 50), pct(phases.run, 50))
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(k, len(s)-1))]
}

// bareNode drives the node's daemon with the containerd client alone, in a
// namespace of its own, on the same simulated GPUs (the same CDI devices).
type bareNode struct {
	c       *ctrd.Client
	ctx     context.Context // carries the namespace
	cdi     *containerd.CDIRegistry
	devices []string // CDI names of the 2 GPUs the handover moves
	logDir  string
	// image configs, read once as isolation caches them
	minerCfg, trainerCfg imagespec.ImageConfig
	miners               []ctrd.Container
	trainer              ctrd.Container
}

func newBareNode(b *testing.B, n *ctrNode) *bareNode {
	b.Helper()
	minerTar, trainerTar := buildImages(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	// Unique to the process, as the tenants are (see miningTenant).
	ctx = namespaces.WithNamespace(ctx, fmt.Sprintf("bench-bare-%d", os.Getpid()))
	reg, err := containerd.NewCDIRegistry(n.cdi.SpecDir)
	require.NoError(b, err)
	require.NoError(b, reg.Refresh())
	bn := &bareNode{c: n.client, ctx: ctx, cdi: reg, logDir: b.TempDir()}
	for _, d := range n.devs[:2] {
		bn.devices = append(bn.devices, isolation.GPUFor(d).Device)
	}
	for _, tar := range []string{minerTar, trainerTar} {
		f, err := os.Open(tar)
		require.NoError(b, err)
		imgs, err := bn.c.Import(ctx, f)
		_ = f.Close()
		require.NoError(b, err)
		for _, i := range imgs {
			img := ctrd.NewImage(bn.c, i)
			require.NoError(b, img.Unpack(ctx, containerd.DefaultSnapshotter))
			spec, err := img.Spec(ctx)
			require.NoError(b, err)
			if i.Name == minerRef {
				bn.minerCfg = spec.Config
			} else {
				bn.trainerCfg = spec.Config
			}
		}
	}
	return bn
}

// specOpts are isolation's hardening as far as the public client allows:
// user nobody, no new privileges, no capabilities, read-only root with a
// tmpfs /tmp, own network namespace unless host, CDI devices, seccomp.
func (bn *bareNode) specOpts(cfg imagespec.ImageConfig, args []string, devices []string, binds []specs.Mount, hostNet bool) []oci.SpecOpts {
	mounts := append([]specs.Mount{{
		Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
		Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.Itoa(64<<20)},
	}}, binds...)
	opts := []oci.SpecOpts{
		oci.WithProcessArgs(append(slices.Clone(cfg.Entrypoint), args...)...),
		oci.WithEnv(cfg.Env),
		oci.WithProcessCwd("/"),
		oci.WithUIDGID(65534, 65534),
		oci.WithNoNewPrivileges,
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{}, Effective: []string{}, Permitted: []string{}, Inheritable: []string{}, Ambient: []string{}}
			return nil
		},
		oci.WithRootFSReadonly(),
		oci.WithMounts(mounts),
	}
	if hostNet {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf)
	}
	return append(opts, bn.cdi.WithDevices(devices...), seccomp.WithDefaultProfile())
}

// run creates and starts a container, as the bare client would.
func (bn *bareNode) run(id, ref string, opts []oci.SpecOpts) (ctrd.Container, time.Duration, time.Duration, error) {
	t0 := time.Now()
	img, err := bn.c.GetImage(bn.ctx, ref)
	if err != nil {
		return nil, 0, 0, err
	}
	ctr, err := bn.c.NewContainer(bn.ctx, id,
		ctrd.WithNewSnapshot(id, img),
		ctrd.WithNewSpec(opts...),
		ctrd.WithRuntime(containerd.DefaultRuntimeName, nil))
	if err != nil {
		return nil, 0, 0, err
	}
	created := time.Since(t0)
	task, err := ctr.NewTask(bn.ctx, cio.LogFile(filepath.Join(bn.logDir, id+".log")))
	if err != nil {
		return ctr, 0, 0, err
	}
	return ctr, created, time.Since(t0) - created, task.Start(bn.ctx)
}

// startMiners puts a miner on each of the 2 GPUs, off the clock.
func (bn *bareNode) startMiners(b *testing.B, i int) {
	b.Helper()
	bn.miners = bn.miners[:0]
	for g, dev := range bn.devices {
		ctr, _, _, err := bn.run(fmt.Sprintf("miner-%d-%d", i, g), minerRef,
			bn.specOpts(bn.minerCfg, []string{"-listen", "127.0.0.1:0", "-log-interval", "0"}, []string{dev}, nil, true))
		require.NoError(b, err)
		bn.miners = append(bn.miners, ctr)
	}
	// A miner mines once it listens. Before its Go runtime has installed
	// its signal handler, SIGTERM to a container's PID 1 is dropped.
	for _, ctr := range bn.miners {
		log := filepath.Join(bn.logDir, ctr.ID()+".log")
		require.Eventually(b, func() bool {
			out, _ := os.ReadFile(log)
			return strings.Contains(string(out), "listening on")
		}, 10*time.Second, time.Millisecond, "bare miner %s never listened", ctr.ID())
	}
}

type bareTimes struct{ total, kill, del, create, start time.Duration }

// handover is the bare sequence: kill, delete, create, start.
func (bn *bareNode) handover(b *testing.B, i int) bareTimes {
	b.Helper()
	ctx := bn.ctx
	var st bareTimes
	t0 := time.Now()
	var tasks []ctrd.Task
	var exits []<-chan ctrd.ExitStatus
	for _, ctr := range bn.miners {
		task, err := ctr.Task(ctx, nil)
		require.NoError(b, err)
		exit, err := task.Wait(ctx)
		require.NoError(b, err)
		require.NoError(b, task.Kill(ctx, syscall.SIGTERM))
		tasks, exits = append(tasks, task), append(exits, exit)
	}
	for k, exit := range exits {
		select {
		case <-exit:
		case <-time.After(10 * time.Second):
			b.Fatalf("bare miner %s ignored SIGTERM", bn.miners[k].ID())
		}
	}
	st.kill = time.Since(t0)
	for k, ctr := range bn.miners {
		_, err := tasks[k].Delete(ctx)
		require.NoError(b, err)
		require.NoError(b, ctr.Delete(ctx, ctrd.WithSnapshotCleanup))
	}
	st.del = time.Since(t0) - st.kill
	ckpt := ckptDir(b)
	ctr, created, started, err := bn.run(fmt.Sprintf("train-%d", i), trainerRef, bn.specOpts(bn.trainerCfg,
		[]string{"-checkpoint-dir", "/ckpt", "-steps", "1000000", "-step-interval", "5ms", "-checkpoint-every", "0", "-logging-steps", "20"},
		bn.devices, []specs.Mount{{Destination: "/ckpt", Type: "bind", Source: ckpt, Options: []string{"rbind", "rprivate", "nosuid", "rw"}}}, false))
	st.total = time.Since(t0)
	require.NoError(b, err)
	st.create, st.start = created, started
	bn.trainer = ctr
	return st
}

// removeTrainer ends the bare trainer, off the clock.
func (bn *bareNode) removeTrainer(b *testing.B) {
	b.Helper()
	task, err := bn.trainer.Task(bn.ctx, nil)
	require.NoError(b, err)
	exit, err := task.Wait(bn.ctx)
	require.NoError(b, err)
	require.NoError(b, task.Kill(bn.ctx, syscall.SIGKILL))
	<-exit
	_, err = task.Delete(bn.ctx)
	require.NoError(b, err)
	require.NoError(b, bn.trainer.Delete(bn.ctx, ctrd.WithSnapshotCleanup))
}
