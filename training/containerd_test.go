package training_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/workload"
)

const trainerRef = "gpufarm.test/faketrainer:latest"

// trainerImage builds the fake trainer's image once per package run.
var trainerImage = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tar := filepath.Join(bins.dir, "faketrainer-image.tar")
	return tar, ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/faketrainer", Ref: trainerRef}, tar)
})

// containerdNode is the contract on a private containerd: the simulated
// GPUs reach the containers through CDI, as device nodes the fake
// launcher counts, and the checkpoint folder is a bind mount.
func containerdNode(t *testing.T) *contractNode {
	containerdtest.Require(t) // skips here, fails with CI=true
	tar, err := trainerImage()
	require.NoError(t, err, "build the fake trainer image")
	d := containerdtest.Start(t)
	// A tenant of this test process only: containerd puts a container in
	// the cgroup /<namespace>/<id> whatever daemon runs it.
	tenant := fmt.Sprintf("acme-%d", os.Getpid())
	log := testLog(t)
	newRuntime := ctrdRuntime(t, d, tar, tenant, log, containerd.WithTenancy(checkpointTenancy()))
	m, devs, ev := startNode(t, sim.PresetA40, 2, newRuntime, log)
	client := d.Client(t)
	return &contractNode{m: m, devs: devs, ev: ev, tenant: tenant, image: trainerRef, gpusSeen: 2,
		checkpointDir: func(t *testing.T) (string, string) { return ckptDir(t), "/checkpoints" },
		argsOf: func(t *testing.T, w workload.Workload) []string {
			ctx := namespaces.WithNamespace(context.Background(), isolation.Namespace(w.Spec.Tenant))
			c, err := client.LoadContainer(ctx, w.Container.ID)
			require.NoError(t, err)
			spec, err := c.Spec(ctx)
			require.NoError(t, err)
			return spec.Process.Args
		}}
}

// testLog is the log of the manager, the adapter and the runtime, shown
// when the test fails.
func testLog(t *testing.T) *slog.Logger {
	var logs syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager, adapter and runtime log:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ctrdRuntime makes the runtimes of a node on daemon d, with the image in
// tar imported for tenant.
func ctrdRuntime(t *testing.T, d *containerdtest.Daemon, tar, tenant string, log *slog.Logger, opts ...containerd.Option) func([]gpu.Device) isolation.Runtime {
	// In the daemon's folder, so they are removed after it stopped the
	// containers that write into them.
	logDir, cdiDir := filepath.Join(d.Dir, "sdk-logs"), filepath.Join(d.Dir, "sdk-cdi")
	return func(devs []gpu.Device) isolation.Runtime {
		cdi, err := containerd.WriteSimulatedCDI(cdiDir, devs)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rt, err := containerd.New(ctx, append([]containerd.Option{containerd.WithAddress(d.Address), containerd.WithLogDir(logDir),
			containerd.WithCDISpecDirs(cdi.SpecDir), containerd.WithLogger(log.With("component", "isolation"))}, opts...)...)
		require.NoError(t, err)
		t.Cleanup(func() { _ = rt.Close() })
		f, err := os.Open(tar)
		require.NoError(t, err)
		defer f.Close()
		_, err = rt.Import(ctx, tenant, f)
		require.NoError(t, err)
		return rt
	}
}

// TestContainerdContract is the integration test of the checkpoint
// contract on real containerd: the fake trainer, launched through the
// torchrun launcher on two simulated GPUs, is preempted by the manager,
// saves within its grace, and resumes from the step read back from disk; a
// trainer that ignores the signal is killed and reported as having
// written no checkpoint during its grace; a trainer that dies mid-save
// leaves a partial checkpoint that the resume skips.
func TestContainerdContract(t *testing.T) {
	n := containerdNode(t)
	t.Run("resume from the grace checkpoint", func(t *testing.T) { testResumeFromGrace(t, n) })
	t.Run("signal ignored", func(t *testing.T) { testSignalIgnored(t, n) })
	t.Run("partial checkpoint ignored", func(t *testing.T) { testPartialIgnored(t, n) })
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

const serverRef = "gpufarm.test/fakeserver:latest"

// serverImage builds the fake inference server's image once per package run.
var serverImage = sync.OnceValues(func() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tar := filepath.Join(bins.dir, "fakeserver-image.tar")
	return tar, ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/fakeserver", Ref: serverRef}, tar)
})

// TestContainerdServerOnTheTenantNetwork: an inference server as Build
// plans it runs on the tenant network under the default policy (no host
// network), and the adapter finds it ready at the container's address.
func TestContainerdServerOnTheTenantNetwork(t *testing.T) {
	containerdtest.Require(t)
	tar, err := serverImage()
	require.NoError(t, err, "build the fake server image")
	d := containerdtest.Start(t)
	tenant := fmt.Sprintf("acme-%d", os.Getpid())
	log := testLog(t)
	net := d.Network()
	newRuntime := ctrdRuntime(t, d, tar, tenant, log, containerd.WithNetwork(containerd.NetworkConfig{Subnet: net.Subnet,
		BridgePrefix: net.BridgePrefix, PluginDirs: containerd.DefaultCNIPluginDirs(), StateDir: net.StateDir}))
	m, devs, ev := startNode(t, sim.PresetRTX3080Riser, 2, newRuntime, log)
	s := server(training.VLLM, 1, gpu.MemoryNeed{Params: 7e9, Precision: gpu.PrecisionINT4})
	// The image's entrypoint is the server, as in the official images.
	s.Tenant, s.Image, s.Args = tenant, serverRef, []string{"--fake-load-delay=500ms"}
	plan, err := s.Build(devs)
	require.NoError(t, err)
	require.Equal(t, isolation.NetworkBridge, plan.Spec.Network)
	pol := isolation.DefaultTenancy(workload.DefaultMiningTenant).For(tenant)
	require.NoError(t, pol.Check(pol.Apply(isolation.Spec{ID: s.ID, Tenant: tenant, Kind: string(plan.Spec.Kind), Network: plan.Spec.Network, Image: s.Image})),
		"the default policy allows the plan")
	_, err = m.Submit(context.Background(), plan.Spec)
	require.NoError(t, err)
	ev.wait(t, 30*time.Second, eventIs(s.ID, workload.EventReady))
	w, err := m.Get(s.ID)
	require.NoError(t, err)
	t.Logf("server %s ready at %s, planned health %s", s.ID, w.Address, plan.HealthURL)
	require.True(t, w.Address.IsValid())
	assert.True(t, net.Subnet.Contains(w.Address), "on the tenant's subnet")
	assert.NoError(t, training.Probe(context.Background(), http.DefaultClient, "http://"+w.Address.String()+":8000/health"),
		"the host reaches it at its address")
	assert.Error(t, training.Probe(context.Background(), &http.Client{Timeout: time.Second}, plan.HealthURL),
		"and not on its own loopback")
}
