package workload_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/internal/syncbuf"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/workload"
)

// Images of the fake programs, as a node would run them.
const (
	minerRef   = "gpufarm.test/fakeminer:latest"
	trainerRef = "gpufarm.test/faketrainer:latest"
)

// Tenants of the containerd tests, miners and a customer, unique to this
// test process: containerd puts a container in the cgroup /<namespace>/<id>
// whatever daemon runs it, so two test processes with private daemons (go
// test runs packages in parallel) that reuse a namespace and container ID
// share a cgroup, and one's kill reaches the other's processes.
var (
	miningTenant   = fmt.Sprintf("mining-%d", os.Getpid())
	customerTenant = fmt.Sprintf("acme-%d", os.Getpid())
)

// imageTars builds the fake miner and fake trainer images once per package
// run. The tars go to the folder TestMain made for the host binaries, which
// TestMain removes at the end.
var imageTars struct {
	once    sync.Once
	miner   string
	trainer string
	err     error
}

func buildImages(tb testing.TB) (miner, trainer string) {
	tb.Helper()
	imageTars.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		dir := filepath.Dir(bins.miner)
		imageTars.miner = filepath.Join(dir, "fakeminer-image.tar")
		imageTars.trainer = filepath.Join(dir, "faketrainer-image.tar")
		if imageTars.err = ociimage.BuildFile(ctx, ociimage.Spec{
			Package: "github.com/gpufarm/gpufarm/internal/fakeminer", Ref: minerRef,
		}, imageTars.miner); imageTars.err != nil {
			return
		}
		imageTars.err = ociimage.BuildFile(ctx, ociimage.Spec{
			Package: "github.com/gpufarm/gpufarm/internal/faketrainer", Ref: trainerRef,
		}, imageTars.trainer)
	})
	require.NoError(tb, imageTars.err, "build the fake miner and fake trainer images")
	return imageTars.miner, imageTars.trainer
}

// ctrNode is a simulated rig whose GPUs reach real containers through CDI,
// a private containerd and a workload manager on it.
type ctrNode struct {
	tb     testing.TB
	d      *containerdtest.Daemon
	client *ctrd.Client // straight to the daemon, to check what the SDK did
	cdi    containerd.SimulatedCDI
	rig    *sim.Rig
	gpus   *gpu.Manager
	devs   []gpu.Device
	// logs collects what the manager and the runtimes log; it is printed
	// when the test fails.
	logs   *syncbuf.Buffer
	logDir string
	rt     *containerd.Runtime
	m      *workload.Manager
	ev     *recorder
	stop   func()
}

type ctrNodeOpts struct {
	preset string
	gpus   int // keep the first gpus cards of the preset; 0 keeps all
	store  workload.Store
	filler bool
	// options are added to the manager's.
	options []workload.Option
}

// newCtrNode starts a private containerd, writes the simulated GPUs' CDI
// spec, imports the fake images and runs a manager. Everything stops when
// tb ends.
func newCtrNode(tb testing.TB, o ctrNodeOpts) *ctrNode {
	tb.Helper()
	containerdtest.Require(tb) // before the image builds: skips here, fails in CI
	minerTar, trainerTar := buildImages(tb)
	// Folders first: they are removed after the daemon stopped its
	// containers, which write into them.
	logDir, cdiDir := filepath.Join(tb.TempDir(), "logs"), filepath.Join(tb.TempDir(), "cdi")
	d := containerdtest.Start(tb) // fails in CI when containerd cannot run
	if o.preset == "" {
		o.preset = sim.PresetA40
	}
	p, err := sim.PresetByName(o.preset)
	require.NoError(tb, err)
	if o.gpus > 0 {
		p.Cards = p.Cards[:o.gpus]
	}
	rig, err := sim.New(p)
	require.NoError(tb, err)
	gm, err := gpu.New(context.Background(), rig)
	require.NoError(tb, err)
	n := &ctrNode{tb: tb, d: d, client: d.Client(tb), rig: rig, gpus: gm, devs: gm.Devices(), logs: &syncbuf.Buffer{}, logDir: logDir}
	n.cdi, err = containerd.WriteSimulatedCDI(cdiDir, n.devs)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		_ = gm.Close()
		if tb.Failed() {
			tb.Logf("manager and runtime log:\n%s", n.logs.String())
			for _, ev := range n.events().find(func(ev workload.Event) bool { return ev.Exit != nil }) {
				tb.Logf("event %d %s %s: %s, exit %+v", ev.Seq, ev.Type, ev.ID, ev.Reason, *ev.Exit)
			}
		}
	})
	n.rt = n.newRuntime()
	ctx := ctxFor(tb)
	for tenant, tar := range map[string]string{miningTenant: minerTar, customerTenant: trainerTar} {
		f, err := os.Open(tar)
		require.NoError(tb, err)
		names, err := n.rt.Import(ctx, tenant, f)
		_ = f.Close()
		require.NoError(tb, err)
		tb.Logf("imported %v for tenant %s", names, tenant)
	}
	n.start(o)
	return n
}

// newRuntime connects a new containerd runtime to the node's daemon; it is
// closed when tb ends, after the manager has stopped.
func (n *ctrNode) newRuntime() *containerd.Runtime {
	n.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := containerd.New(ctx, containerd.WithTenancy(testTenancy()),
		containerd.WithAddress(n.d.Address),
		containerd.WithLogDir(n.logDir),
		containerd.WithCDISpecDirs(n.cdi.SpecDir),
		containerd.WithLogger(slog.New(slog.NewTextHandler(n.logs, nil)).With("component", "isolation")),
	)
	require.NoError(n.tb, err)
	n.tb.Cleanup(func() { _ = rt.Close() })
	return rt
}

// start makes a manager on n.rt and runs it until n.stop or the end of tb.
func (n *ctrNode) start(o ctrNodeOpts) {
	n.tb.Helper()
	if o.store == nil {
		o.store = workload.NewMemoryStore()
	}
	opts := []workload.Option{
		workload.WithTenancy(testTenancy()),
		workload.WithStore(o.store),
		workload.WithLoad(n.rig.SetGPULoad),
		workload.WithPowerSettle(0),
		workload.WithHygieneTimeout(2 * time.Second),
		workload.WithLogger(slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "workload")),
	}
	if o.filler {
		opts = append(opts, workload.WithFiller(ctrMinerFiller()))
	}
	m, err := workload.New(n.gpus, n.rt, append(opts, o.options...)...)
	require.NoError(n.tb, err)
	n.m = m
	// A restarted manager replays the store's event log; record only what
	// this one does.
	var after uint64
	if n.ev != nil {
		after = n.ev.last()
	}
	n.ev = recordEvents(n.tb, m, after)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }() // ends with ctx
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			// Run may wrap ctx's error (e.g. while it loads the records).
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				n.tb.Errorf("Run: %v", err)
			}
			_ = m.Close()
		})
	}
	// Containers outlive the manager; the daemon's Stop kills them.
	n.tb.Cleanup(n.stop)
}

// events is the recorder of the current manager; an empty one before it runs.
func (n *ctrNode) events() *recorder {
	if n.ev == nil {
		return &recorder{added: make(chan struct{})}
	}
	return n.ev
}

// testTenancy is the default tenancy with this process's tenant names,
// and checkpoint folders under the temp dir allowed to the customer.
func testTenancy() isolation.Tenancy {
	t := isolation.DefaultTenancy(miningTenant)
	t.Default.MountRoots, t.Default.WritableMounts = []string{os.TempDir()}, true
	return t
}

// ctrMinerFiller fills every idle GPU with the fake miner image on the
// host network, as a real miner needs to reach its pool.
func ctrMinerFiller() workload.Filler { return ctrMinerFillerOf(miningTenant) }

func ctrMinerFillerOf(tenant string) workload.Filler {
	return workload.FillerFunc(func(ctx context.Context, d gpu.Device) (workload.Spec, bool) {
		return workload.Spec{
			Tenant: tenant, Image: minerRef,
			Command:   []string{"-listen", "127.0.0.1:0", "-gpu-name", d.Name, "-log-interval", "0"},
			Network:   isolation.NetworkHost,
			StopGrace: 2 * time.Second,
		}, true
	})
}

// ctrTrainer is a training job of the fake trainer image that checkpoints
// only when it is stopped, into ckpt mounted at /ckpt.
func ctrTrainer(id string, gpus int, ckpt string) workload.Spec {
	return workload.Spec{
		ID: id, Kind: workload.KindTraining, Tenant: customerTenant, Priority: 1,
		GPUs:  workload.GPURequest{Count: gpus},
		Image: trainerRef,
		Command: []string{"-checkpoint-dir", "/ckpt", "-steps", "1000000", "-step-interval", "5ms",
			"-checkpoint-every", "0", "-logging-steps", "20"},
		Mounts:      []isolation.Mount{{Source: ckpt, Target: "/ckpt"}},
		Preemptible: true, StopGrace: 5 * time.Second, PricePerGPUHour: 0.35,
	}
}

// ckptDir is a checkpoint folder the container's user (nobody) can write.
func ckptDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	require.NoError(tb, os.Chmod(dir, 0o777))
	return dir
}

// checkpoints lists the checkpoint files the fake trainer wrote in dir.
func checkpoints(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*"))
	return m
}

func ctxFor(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// waitFor waits until workload id is in one of states.
func (n *ctrNode) waitFor(id string, states ...workload.State) workload.Workload {
	n.tb.Helper()
	var w workload.Workload
	require.Eventually(n.tb, func() bool {
		var err error
		w, err = n.m.Get(id)
		return err == nil && slices.Contains(states, w.State)
	}, 30*time.Second, 5*time.Millisecond, "workload %s never reached %v (last %s: %s)", id, states, w.State, w.Reason)
	return w
}

// miners returns the running miners by GPU UUID.
func (n *ctrNode) miners() map[string]workload.Workload {
	out := map[string]workload.Workload{}
	for _, w := range n.m.List(workload.Filter{Kind: workload.KindMining, States: []workload.State{workload.StateRunning}}) {
		for _, u := range w.GPUs {
			out[u] = w
		}
	}
	return out
}

// waitMining waits until count miners run and mine (they listen: before
// its Go runtime has installed its handler, a container's PID 1 drops
// SIGTERM) and the runtime has no other containers of theirs left (the
// ones that ended are deleted), so the node is settled.
func (n *ctrNode) waitMining(count int) map[string]workload.Workload {
	n.tb.Helper()
	require.Eventually(n.tb, func() bool {
		miners := n.miners()
		if len(miners) != count {
			return false
		}
		for _, m := range miners {
			if !strings.Contains(n.logOf(m.Container), "listening on") {
				return false
			}
		}
		infos, err := n.rt.List(context.Background(), isolation.Filter{Tenant: miningTenant})
		return err == nil && len(infos) == count
	}, 30*time.Second, 5*time.Millisecond, "want %d miners running, have %d", count, len(n.miners()))
	return n.miners()
}

// logOf is what a workload's current container wrote.
func (n *ctrNode) logOf(ref isolation.Ref) string {
	rc, err := n.rt.Logs(context.Background(), ref)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// recorder keeps every event of a manager as it happens.
type recorder struct {
	mu     sync.Mutex
	events []workload.Event
	added  chan struct{} // closed and replaced on every event
}

// recordEvents watches m from the event after until tb ends.
func recordEvents(tb testing.TB, m *workload.Manager, after uint64) *recorder {
	r := &recorder{added: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // ends with ctx
		defer close(done)
		for ev := range m.Watch(ctx, after) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			close(r.added)
			r.added = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return r
}

// last is the sequence number of the last event recorded.
func (r *recorder) last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return 0
	}
	return r.events[len(r.events)-1].Seq
}

// find returns the events that match.
func (r *recorder) find(match func(workload.Event) bool) []workload.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []workload.Event
	for _, ev := range r.events {
		if match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// wait returns the first event that matches, waiting for it up to timeout.
func (r *recorder) wait(tb testing.TB, timeout time.Duration, match func(workload.Event) bool) workload.Event {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, ev := range r.events {
			if match(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		added := r.added
		r.mu.Unlock()
		select {
		case <-added:
		case <-deadline.C:
			tb.Fatalf("no matching event within %v", timeout)
		}
	}
}

// eventIs matches the events of one workload of the given types.
func eventIs(id string, types ...workload.EventType) func(workload.Event) bool {
	return func(ev workload.Event) bool { return ev.ID == id && slices.Contains(types, ev.Type) }
}
