package training_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/workload"
)

// startNode runs a workload manager with the training adapter on the first
// gpus cards of a simulated preset, over the runtime newRuntime makes for
// them, until the test ends.
func startNode(t *testing.T, preset string, gpus int, newRuntime func(devs []gpu.Device) isolation.Runtime, log *slog.Logger) (*workload.Manager, []gpu.Device, *recorder) {
	t.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(t, err)
	p.Cards = p.Cards[:gpus]
	rig, err := sim.New(p)
	require.NoError(t, err)
	gm, err := gpu.New(context.Background(), rig)
	require.NoError(t, err)
	rt := newRuntime(gm.Devices())
	adapter, err := training.NewAdapter(gm.Devices(), training.WithPollInterval(50*time.Millisecond), training.WithLogger(log))
	require.NoError(t, err)
	m, err := workload.New(gm, rt, workload.WithAttemptHook(adapter), workload.WithExitReporter(adapter),
		workload.WithLoad(rig.SetGPULoad), workload.WithPowerSettle(0), workload.WithTick(20*time.Millisecond),
		workload.WithHygieneTimeout(2*time.Second), workload.WithLogger(log), workload.WithTenancy(checkpointTenancy()))
	require.NoError(t, err)
	ev := recordEvents(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	ran, adapted := make(chan error, 1), make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	go func() { adapted <- adapter.Run(ctx, m) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("manager Run: %v", err)
		}
		<-adapted
		for _, w := range m.List(workload.Filter{}) {
			if !w.State.Final() {
				_, _ = rt.Stop(context.Background(), w.Container)
			}
		}
		_ = m.Close()
		_ = gm.Close()
	})
	return m, gm.Devices(), ev
}

// processNode is the contract on the process runtime: the fake trainer
// runs on the host, so the job sees host paths.
func processNode(t *testing.T) *contractNode {
	m, devs, ev := startNode(t, sim.PresetA40, 2, processRuntime(t), slog.New(slog.DiscardHandler))
	return &contractNode{m: m, devs: devs, ev: ev, tenant: "acme", image: "gpufarm.test/faketrainer", program: []string{bins.trainer},
		checkpointDir: func(t *testing.T) (string, string) { d := ckptDir(t); return d, d }}
}

// TestContractOnProcesses runs the checkpoint contract with the fake
// trainer as host processes (no root needed); TestContainerdContract runs
// it in containers.
func TestContractOnProcesses(t *testing.T) {
	for name, scenario := range map[string]func(*testing.T, *contractNode){
		"resume from the grace checkpoint": testResumeFromGrace,
		"signal ignored":                   testSignalIgnored,
		"partial checkpoint ignored":       testPartialIgnored,
	} {
		t.Run(name, func(t *testing.T) { scenario(t, processNode(t)) })
	}
}

// TestServerReadyOnProcesses: an inference server built by Server.Build
// counts as ready only once its health endpoint answers.
func TestServerReadyOnProcesses(t *testing.T) {
	m, devs, ev := startNode(t, sim.PresetRTX3080Riser, 2, processRuntime(t), slog.New(slog.DiscardHandler))
	s := server(training.VLLM, 2, gpu.MemoryNeed{Params: 7e9, Precision: gpu.PrecisionINT4})
	s.Program, s.Port, s.Args = []string{bins.server}, freePort(t), []string{"--fake-load-delay=1s"}
	plan, err := s.Build(devs)
	require.NoError(t, err)
	_, err = m.Submit(context.Background(), plan.Spec)
	require.NoError(t, err)
	started := ev.wait(t, 30*time.Second, eventIs("chat-1", workload.EventStarted))
	ready := ev.wait(t, 30*time.Second, eventIs("chat-1", workload.EventReady))
	wait := ready.Time.Sub(started.Time)
	t.Logf("started on %v, ready %v later (%s)", started.GPUs, wait, plan.HealthURL)
	// The server loads for 1 s from its start, which is a little before the
	// started event; the probe runs every 50 ms.
	assert.Greater(t, wait, 800*time.Millisecond, "not ready while the model loads")
	w, err := m.Get("chat-1")
	require.NoError(t, err)
	assert.True(t, w.Ready)
	logs, err := m.Logs(context.Background(), "chat-1")
	require.NoError(t, err)
	assert.Contains(t, string(logs), "parallel 2, max length "+strconv.Itoa(plan.MaxModelLen))
	require.NoError(t, m.Cancel(context.Background(), "chat-1"))
	ended := ev.wait(t, 30*time.Second, eventIs("chat-1", workload.EventCancelled))
	assert.True(t, strings.HasPrefix(ended.Note, "stopped"), ended.Note)
}

// processRuntime makes a process runtime, closed when the test ends.
func processRuntime(t *testing.T) func([]gpu.Device) isolation.Runtime {
	return func([]gpu.Device) isolation.Runtime {
		rt, err := process.New(process.WithUnsafeRoot(), process.WithTenancy(checkpointTenancy()), process.WithLogDir(t.TempDir()))
		require.NoError(t, err)
		t.Cleanup(func() { _ = rt.Close() })
		return rt
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// checkpointTenancy is the default tenancy with the test's checkpoint
// folders (under the temp dir) allowed, writable, as an operator allows
// its checkpoint storage, and the host network the inference servers
// answer on.
func checkpointTenancy() isolation.Tenancy {
	t := isolation.DefaultTenancy(workload.DefaultMiningTenant)
	t.Default.MountRoots, t.Default.WritableMounts = []string{os.TempDir()}, true
	t.Default.Networks = append(t.Default.Networks, isolation.NetworkHost)
	return t
}
