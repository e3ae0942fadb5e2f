package containerdtest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
)

// TestDaemonRunsContainerAndStopLeavesNothing starts a private daemon, runs
// a container from an imported image in it, stops the daemon while the
// container still runs, and checks that no shim and no folder is left.
func TestDaemonRunsContainerAndStopLeavesNothing(t *testing.T) {
	containerdtest.Require(t)
	d, err := containerdtest.Launch(context.Background(), t.Logf)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Stop() })
	require.True(t, len(d.Address) < 100, "socket path must fit a unix socket: %s", d.Address)
	cfg, err := os.ReadFile(filepath.Join(d.Dir, "config.toml"))
	require.NoError(t, err)
	require.Equal(t, containerdtest.Config(d.Dir), string(cfg), "the daemon runs with Config")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, "harness")
	c := d.Client(t)

	tar := filepath.Join(t.TempDir(), "probe.tar")
	require.NoError(t, ociimage.BuildFile(ctx, ociimage.Spec{
		Package: "github.com/gpufarm/gpufarm/internal/probe",
		Ref:     "gpufarm.test/probe:latest",
	}, tar))
	f, err := os.Open(tar)
	require.NoError(t, err)
	imgs, err := c.Import(ctx, f)
	_ = f.Close()
	require.NoError(t, err)
	require.Len(t, imgs, 1)
	img := containerd.NewImage(c, imgs[0])
	require.NoError(t, img.Unpack(ctx, ""))

	ctr, err := c.NewContainer(ctx, "sleeper",
		containerd.WithNewSnapshot("sleeper", img),
		containerd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep"})))
	require.NoError(t, err)
	logPath := filepath.Join(t.TempDir(), "sleeper.log")
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	require.NoError(t, err)
	require.NoError(t, task.Start(ctx))
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "sleeping")
	}, 10*time.Second, 20*time.Millisecond, "the container's output reaches its log file")
	t.Logf("ran probe sleep as pid %d", task.Pid())

	// A restarted daemon finds the container its predecessor started,
	// still running in its shim.
	require.NoError(t, d.Restart(ctx))
	c2, err := containerd.New(d.Address, containerd.WithTimeout(10*time.Second))
	require.NoError(t, err)
	defer c2.Close()
	ctr2, err := c2.LoadContainer(ctx, "sleeper")
	require.NoError(t, err)
	task2, err := ctr2.Task(ctx, nil)
	require.NoError(t, err)
	st, err := task2.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, containerd.Running, st.Status, "the container survives the daemon's restart")
	require.Equal(t, task.Pid(), task2.Pid())
	require.NoError(t, syscall.Kill(int(task.Pid()), 0))

	require.NoError(t, d.Stop())
	require.NoError(t, d.Stop(), "Stop is idempotent")
	_, err = os.Stat(d.Dir)
	require.True(t, os.IsNotExist(err), "daemon folder removed")
	require.Error(t, syscall.Kill(int(task.Pid()), 0), "the container's process is gone")
}
