package process_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/internal/syncbuf"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
)

func newProcess(t *testing.T, opts ...process.Option) (*process.Runtime, *syncbuf.Buffer) {
	t.Helper()
	logw := &syncbuf.Buffer{}
	opts = append([]process.Option{
		process.WithLogDir(filepath.Join(t.TempDir(), "logs")),
		process.WithLogger(slog.New(slog.NewTextHandler(logw, nil))),
	}, opts...)
	p, err := process.New(append([]process.Option{process.WithUnsafeRoot()}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p, logw
}

func shSpec(id, script string) isolation.Spec {
	return isolation.Spec{ID: id, Tenant: "dev", Image: "unused", Args: []string{"/bin/sh", "-c", script}}
}

func procOutput(t *testing.T, rt isolation.Runtime, ref isolation.Ref) string {
	t.Helper()
	rc, err := rt.Logs(context.Background(), ref)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return string(b)
}

func TestProcessSaysItIsolatesNothing(t *testing.T) {
	p, logw := newProcess(t)
	assert.Contains(t, logw.String(), "NOTHING IS ISOLATED")
	_, err := p.Create(context.Background(), isolation.Spec{ID: "x", Tenant: "dev", Image: "unused", Args: []string{"/bin/true"},
		Limits: isolation.Limits{MemoryBytes: 1 << 30}})
	require.NoError(t, err)
	assert.Contains(t, logw.String(), "limits", "names what it ignores")
	assert.Contains(t, logw.String(), "network none")
}

func TestProcessLifecycle(t *testing.T) {
	t.Setenv("GPUFARM_SECRET_OF_THE_SDK", "leak")
	p, _ := newProcess(t)
	ctx := context.Background()
	s := shSpec("job", `echo "gpus=$CUDA_VISIBLE_DEVICES secret=$GPUFARM_SECRET_OF_THE_SDK a=$A"; exit 3`)
	s.Env = []string{"A=1"}
	s.GPUs = []isolation.GPU{isolation.GPUFor(gpu.Device{Index: 1, UUID: "GPU-11111111-2222-3333-4444-000000000001"})}
	info, err := p.Create(ctx, s)
	require.NoError(t, err)
	assert.Equal(t, isolation.StateCreated, info.State)
	_, err = p.Wait(ctx, info.Ref)
	assert.ErrorIs(t, err, isolation.ErrState)

	require.NoError(t, p.Start(ctx, info.Ref))
	es, err := p.Wait(ctx, info.Ref)
	require.NoError(t, err)
	assert.Equal(t, 3, es.Code)
	assert.Equal(t, isolation.ReasonExited, es.Reason)
	assert.Equal(t, "gpus=GPU-11111111-2222-3333-4444-000000000001 secret= a=1\n", procOutput(t, p, info.Ref),
		"only its GPUs by convention, and none of the SDK's environment")

	got, err := p.Inspect(ctx, info.Ref)
	require.NoError(t, err)
	assert.Equal(t, isolation.StateStopped, got.State)
	require.NotNil(t, got.Exit)
	assert.Equal(t, 3, got.Exit.Code)

	_, err = p.Create(ctx, s)
	assert.ErrorIs(t, err, isolation.ErrExists)
	require.NoError(t, p.Delete(ctx, info.Ref))
	_, err = p.Inspect(ctx, info.Ref)
	assert.ErrorIs(t, err, isolation.ErrNotFound)
}

func TestProcessStop(t *testing.T) {
	p, _ := newProcess(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		script string
		code   int
		reason isolation.Reason
	}{
		{"exits on the signal", `trap 'echo term; exit 0' TERM; echo ready; while :; do sleep 0.05; done`, 0, isolation.ReasonStopped},
		{"ignores the signal", `trap '' TERM; echo ready; while :; do sleep 0.05; done`, 128 + int(syscall.SIGKILL), isolation.ReasonKilled},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := shSpec("stop-"+string(rune('a'+i)), tc.script)
			s.StopGrace = 500 * time.Millisecond
			info, err := p.Create(ctx, s)
			require.NoError(t, err)
			require.NoError(t, p.Start(ctx, info.Ref))
			require.Eventually(t, func() bool { return strings.Contains(procOutput(t, p, info.Ref), "ready") }, 5*time.Second, 10*time.Millisecond)
			assert.ErrorIs(t, p.Delete(ctx, info.Ref), isolation.ErrState, "running")
			es, err := p.Stop(ctx, info.Ref)
			require.NoError(t, err)
			assert.Equal(t, tc.code, es.Code)
			assert.Equal(t, tc.reason, es.Reason)
		})
	}
}

func TestProcessBadInput(t *testing.T) {
	p, _ := newProcess(t)
	_, err := p.Create(context.Background(), isolation.Spec{ID: "x", Tenant: "dev", Image: "unused", Limits: isolation.Limits{Pids: -1}})
	require.Error(t, err)
	assert.ErrorIs(t, err, isolation.ErrInvalid)
	assert.Contains(t, err.Error(), "Args is empty")
	assert.Contains(t, err.Error(), "Pids is -1")
	_, err = p.Create(context.Background(), isolation.Spec{ID: "y", Tenant: "dev", Image: "unused", Args: []string{"no-such-binary-gpufarm"}})
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	list, err := p.List(context.Background(), isolation.Filter{})
	require.NoError(t, err)
	assert.Empty(t, list, "nothing created")
}

func TestProcessLogsCappedAndCloseKills(t *testing.T) {
	const capBytes = 8 << 10
	p, _ := newProcess(t, process.WithLogCapBytes(capBytes))
	ctx := context.Background()
	info, err := p.Create(ctx, shSpec("chatty", `i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; echo done; sleep 60`))
	require.NoError(t, err)
	require.NoError(t, p.Start(ctx, info.Ref))
	require.Eventually(t, func() bool { return strings.Contains(procOutput(t, p, info.Ref), "done") }, 10*time.Second, 10*time.Millisecond)
	out := procOutput(t, p, info.Ref)
	assert.LessOrEqual(t, len(out), capBytes)
	assert.True(t, strings.HasSuffix(out, "line 2999\ndone\n"), "keeps the newest")

	list, err := p.List(ctx, isolation.Filter{Tenant: "dev"})
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, isolation.StateRunning, list[0].State)

	require.NoError(t, p.Close(), "kills what still runs")
	require.NoError(t, p.Close())
	_, err = p.List(ctx, isolation.Filter{})
	assert.ErrorIs(t, err, isolation.ErrUnavailable)
}

// A process that exited on its own is not signalled and not reported as
// stopped: Stop and Signal check that it is gone under the same lock the
// waiter marks it with, before the PID can be reaped and reused.
func TestProcessExitedOnItsOwnIsNotSignalled(t *testing.T) {
	p, _ := newProcess(t)
	ctx := context.Background()
	info, err := p.Create(ctx, shSpec("quick", "exit 5"))
	require.NoError(t, err)
	require.NoError(t, p.Start(ctx, info.Ref))
	es, err := p.Wait(ctx, info.Ref)
	require.NoError(t, err)
	require.Equal(t, 5, es.Code)

	assert.ErrorIs(t, p.Signal(ctx, info.Ref, syscall.SIGTERM), isolation.ErrState)
	stopped, err := p.Stop(ctx, info.Ref)
	require.NoError(t, err)
	assert.Equal(t, isolation.ExitStatus{Code: 5, Reason: isolation.ReasonExited, ExitedAt: es.ExitedAt}, stopped)
}

// TestRefusesRootWithoutOptIn: as root, the runtime that isolates nothing
// would hand the host to its workloads; it refuses unless told.
func TestRefusesRootWithoutOptIn(t *testing.T) {
	if os.Geteuid() != 0 {
		_, err := process.New(process.WithLogDir(t.TempDir()))
		require.NoError(t, err, "an unprivileged user needs no option")
		return
	}
	_, err := process.New(process.WithLogDir(t.TempDir()))
	require.ErrorIs(t, err, isolation.ErrPermission)
	assert.Contains(t, err.Error(), "WithUnsafeRoot")
}

// TestSDKGPUVariablesWin: a tenant's Env cannot widen the GPUs its
// process is told to use.
func TestSDKGPUVariablesWin(t *testing.T) {
	p, _ := newProcess(t)
	ctx := context.Background()
	s := shSpec("greedy", `echo "cuda=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES"`)
	s.Env = []string{"CUDA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=all"}
	s.GPUs = []isolation.GPU{isolation.GPUFor(gpu.Device{Index: 1, UUID: "GPU-1"})}
	info, err := p.Create(ctx, s)
	require.NoError(t, err)
	require.NoError(t, p.Start(ctx, info.Ref))
	_, err = p.Wait(ctx, info.Ref)
	require.NoError(t, err)
	assert.Equal(t, "cuda=GPU-1 nvidia=GPU-1\n", procOutput(t, p, info.Ref))
}

// TestWorkloadsDieWithTheSDK: a process of this runtime gets SIGKILL when
// the SDK process dies, even by SIGKILL, as its doc promises.
func TestWorkloadsDieWithTheSDK(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sdkHelperEnv+"="+t.TempDir())
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var pid int
	_, err = fmt.Fscan(out, &pid)
	require.NoError(t, err, "the helper reports its workload's pid")
	require.NoError(t, syscall.Kill(pid, 0), "the workload runs")
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.Eventually(t, func() bool {
		// Gone, or a zombie the init process has yet to reap.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	}, 5*time.Second, 10*time.Millisecond, "the workload dies with the SDK")
}

const sdkHelperEnv = "GPUFARM_PROCESS_SDK_HELPER"

// TestMain plays the SDK process of TestWorkloadsDieWithTheSDK when asked.
func TestMain(m *testing.M) {
	if dir := os.Getenv(sdkHelperEnv); dir != "" {
		p, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(dir))
		if err != nil {
			os.Exit(2)
		}
		ctx := context.Background()
		info, err := p.Create(ctx, shSpec("sleeper", "exec sleep 600"))
		if err == nil {
			err = p.Start(ctx, info.Ref)
		}
		if err == nil {
			info, err = p.Inspect(ctx, info.Ref)
		}
		if err != nil {
			os.Exit(3)
		}
		fmt.Println(info.PID)
		select {} // until the test kills it
	}
	os.Exit(m.Run())
}

// TestCreateChecksTheTenancy: the process runtime refuses what the
// tenant's policy forbids, as the containerd runtime does.
func TestCreateChecksTheTenancy(t *testing.T) {
	p, _ := newProcess(t)
	s := shSpec("peek", "true")
	s.Mounts = []isolation.Mount{{Source: "/", Target: "/host"}}
	s.Network = isolation.NetworkHost
	_, err := p.Create(context.Background(), s)
	require.ErrorIs(t, err, isolation.ErrDenied)
	assert.Contains(t, err.Error(), "may not mount host paths")
	assert.Contains(t, err.Error(), `spec.Network "host"`)
}
