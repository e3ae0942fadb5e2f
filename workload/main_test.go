package workload_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
)

// bins holds the fake miner and fake trainer built for the host, which the
// process runtime runs directly.
var bins struct{ miner, trainer string }

func TestMain(m *testing.M) {
	if os.Getenv(agentEnv) != "" {
		os.Exit(runAgent()) // this process is the chaos test's agent
	}
	dir, err := os.MkdirTemp("", "workload-bins")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.miner = filepath.Join(dir, "fakeminer")
	bins.trainer = filepath.Join(dir, "faketrainer")
	for pkg, out := range map[string]string{"fakeminer": bins.miner, "faketrainer": bins.trainer} {
		if err := ociimage.BuildBinary(context.Background(), "github.com/gpufarm/gpufarm/internal/"+pkg, out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var start = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// node is a simulated rig with a workload manager on the process runtime.
type node struct {
	t     *testing.T
	rig   *sim.Rig
	clk   *sim.ManualClock
	gpus  *gpu.Manager
	rt    isolation.Runtime
	m     *workload.Manager
	devs  []gpu.Device
	store workload.Store
	stop  func()
}

type nodeOpts struct {
	preset  string
	filler  bool
	store   workload.Store
	rt      isolation.Runtime
	options []workload.Option
	gpuOpts []gpu.Option
}

func newNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	if o.preset == "" {
		o.preset = sim.PresetRTX3080Riser
	}
	p, err := sim.PresetByName(o.preset)
	require.NoError(t, err)
	clk := sim.NewClock(start)
	rig, err := sim.New(p, sim.WithClock(clk))
	require.NoError(t, err)
	gm, err := gpu.New(context.Background(), rig, append([]gpu.Option{gpu.WithClock(clk)}, o.gpuOpts...)...)
	require.NoError(t, err)
	rt := o.rt
	if rt == nil {
		rt, err = process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
		require.NoError(t, err)
	}
	if o.store == nil {
		o.store = workload.NewMemoryStore()
	}
	n := &node{t: t, rig: rig, clk: clk, gpus: gm, rt: rt, devs: gm.Devices(), store: o.store}
	opts := []workload.Option{
		workload.WithClock(clk), workload.WithLoad(rig.SetGPULoad), workload.WithStore(o.store),
		workload.WithPowerSettle(0), workload.WithTick(20 * time.Millisecond),
		workload.WithHygieneTimeout(2 * time.Second),
	}
	if o.filler {
		opts = append(opts, workload.WithFiller(minerFiller()))
	}
	n.m, err = workload.New(gm, rt, append(opts, o.options...)...)
	require.NoError(t, err)
	n.start()
	t.Cleanup(func() {
		n.stop()
		for _, w := range n.m.List(workload.Filter{}) {
			if !w.State.Final() {
				_, _ = rt.Stop(context.Background(), w.Container)
			}
		}
		_ = n.m.Close()
		_ = rt.Close()
		_ = gm.Close()
	})
	return n
}

// start runs the manager until stop.
func (n *node) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.m.Run(ctx) }()
	n.stop = func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			n.t.Errorf("Run: %v", err)
		}
		n.stop = func() {}
	}
}

func minerFiller() workload.Filler {
	return workload.FillerFunc(func(ctx context.Context, d gpu.Device) (workload.Spec, bool) {
		return workload.Spec{
			Tenant: "mining", Image: "gpufarm.test/fakeminer:latest",
			Command:   []string{bins.miner, "-listen", "127.0.0.1:0", "-gpu-name", d.Name},
			Network:   isolation.NetworkHost,
			StopGrace: 2 * time.Second,
		}, true
	})
}

// trainer is a training spec running the fake trainer with its checkpoints
// in dir. It ignores readiness: most tests run on the riser rig, which
// readiness rates for inference only (TestPlacementFollowsReadiness checks
// that rule).
func trainer(id string, gpus, priority int, dir string) workload.Spec {
	return workload.Spec{
		ID: id, Kind: workload.KindTraining, Tenant: "acme", Priority: priority,
		GPUs:  workload.GPURequest{Count: gpus, IgnoreReadiness: true},
		Image: "gpufarm.test/faketrainer:latest",
		Command: []string{bins.trainer, "-checkpoint-dir", dir, "-steps", "100000",
			"-step-interval", "5ms", "-checkpoint-every", "0", "-logging-steps", "20"},
		Preemptible: true, StopGrace: 5 * time.Second, PricePerGPUHour: 0.35,
	}
}

// waitFor waits for a workload to reach a state.
func (n *node) waitFor(id string, states ...workload.State) workload.Workload {
	n.t.Helper()
	var w workload.Workload
	require.Eventually(n.t, func() bool {
		var err error
		w, err = n.m.Get(id)
		if err != nil {
			return false
		}
		for _, s := range states {
			if w.State == s {
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "workload %s never reached %v (last %s: %s)", id, states, w.State, w.Reason)
	return w
}

// mining returns the number of running miners.
func (n *node) mining() int {
	return len(n.m.List(workload.Filter{Kind: workload.KindMining, States: []workload.State{workload.StateRunning}}))
}

func (n *node) waitMining(count int) {
	n.t.Helper()
	require.Eventually(n.t, func() bool { return n.mining() == count }, 20*time.Second, 10*time.Millisecond,
		"want %d miners running, have %d", count, n.mining())
}

// waitLog waits until a workload's log shows text: a fake trainer that
// has logged a step has its signal handler in place.
func (n *node) waitLog(id, text string) {
	n.t.Helper()
	require.Eventually(n.t, func() bool { return strings.Contains(logOf(n.t, n, id), text) },
		20*time.Second, 10*time.Millisecond, "workload %s never logged %q", id, text)
}
