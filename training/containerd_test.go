package training_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
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
	// Made before the daemon, so they are removed after it stopped the
	// containers that write into them.
	logDir, cdiDir := filepath.Join(t.TempDir(), "logs"), filepath.Join(t.TempDir(), "cdi")
	d := containerdtest.Start(t)
	// A tenant of this test process only: containerd puts a container in
	// the cgroup /<namespace>/<id> whatever daemon runs it.
	tenant := fmt.Sprintf("acme-%d", os.Getpid())
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager, adapter and runtime log:\n%s", logs.String())
		}
	})
	newRuntime := func(devs []gpu.Device) isolation.Runtime {
		cdi, err := containerd.WriteSimulatedCDI(cdiDir, devs)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rt, err := containerd.New(ctx, containerd.WithAddress(d.Address), containerd.WithLogDir(logDir), containerd.WithTenancy(checkpointTenancy()),
			containerd.WithCDISpecDirs(cdi.SpecDir), containerd.WithLogger(log.With("component", "isolation")))
		require.NoError(t, err)
		t.Cleanup(func() { _ = rt.Close() })
		f, err := os.Open(tar)
		require.NoError(t, err)
		defer f.Close()
		_, err = rt.Import(ctx, tenant, f)
		require.NoError(t, err)
		return rt
	}
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
