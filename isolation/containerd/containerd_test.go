package containerd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/image-spec/identity"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// A container given simulated GPU 0 opens /dev/nvidia0 and /dev/nvidiactl
// with ENXIO (the device cgroup lets it through, no driver answers), does
// not have /dev/nvidia1, and cannot open GPU 1's node smuggled in through a
// bind mount (EPERM from the device cgroup).
func TestContainerSeesOnlyItsGPUs(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "gpus", probeRef)
	smuggle := filepath.Join(t.TempDir(), "smuggle")
	require.NoError(t, os.Mkdir(smuggle, 0o755))
	node := filepath.Join(smuggle, "nvidia1")
	require.NoError(t, unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(195, 1))))
	require.NoError(t, os.Chmod(node, 0o666), "file permissions are not what stops it")

	for _, name := range []string{"by UUID", "by index"} {
		t.Run(name, func(t *testing.T) {
			g := isolation.GPUFor(simulatedGPUs[0])
			id := "gpu0-uuid"
			if name == "by index" {
				// No UUID given: Create takes it from the CDI spec.
				g, id = isolation.GPU{Device: "nvidia.com/gpu=0"}, "gpu0-index"
			}
			es, out := f.run(t, isolation.Spec{
				ID: id, Tenant: "gpus", Image: probeRef, GPUs: []isolation.GPU{g},
				Mounts: []isolation.Mount{{Source: smuggle, Target: "/mnt/smuggle"}},
				Args:   []string{"report", "-open", "/dev/nvidia0,/dev/nvidiactl,/dev/nvidia1,/mnt/smuggle/nvidia1"},
			})
			require.Equal(t, 0, es.Code, out)
			r := parseReport(t, out)
			t.Logf("probe opened: %v", r.Open)
			assert.Equal(t, "ENXIO", r.Open["/dev/nvidia0"], "its GPU is allowed by the device cgroup")
			assert.Equal(t, "ENXIO", r.Open["/dev/nvidiactl"], "the control node comes with any GPU")
			assert.Equal(t, "ENOENT", r.Open["/dev/nvidia1"], "another GPU's node is absent")
			assert.Equal(t, "EPERM", r.Open["/mnt/smuggle/nvidia1"], "a node reached through a mount is refused by the device cgroup")
			info, err := f.rt.Inspect(ctx(t), isolation.Ref{Tenant: "gpus", ID: id})
			require.NoError(t, err)
			assert.Equal(t, []string{simulatedGPUs[0].UUID}, info.GPUs, "the container's labels name its GPU by UUID")
		})
	}

	t.Run("all", func(t *testing.T) {
		// "all" stands for both GPUs: both are injected, and the labels
		// name both, so no other workload can be given either.
		es, out := f.run(t, isolation.Spec{ID: "gpu-all", Tenant: "gpus", Image: probeRef,
			GPUs: []isolation.GPU{{Device: "nvidia.com/gpu=all"}},
			Args: []string{"report", "-open", "/dev/nvidia0,/dev/nvidia1"}})
		require.Equal(t, 0, es.Code, out)
		r := parseReport(t, out)
		assert.Equal(t, "ENXIO", r.Open["/dev/nvidia0"])
		assert.Equal(t, "ENXIO", r.Open["/dev/nvidia1"])
		info, err := f.rt.Inspect(ctx(t), isolation.Ref{Tenant: "gpus", ID: "gpu-all"})
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{simulatedGPUs[0].UUID, simulatedGPUs[1].UUID}, info.GPUs)
	})

	t.Run("no GPU", func(t *testing.T) {
		_, out := f.run(t, isolation.Spec{ID: "nogpu", Tenant: "gpus", Image: probeRef,
			Args: []string{"report", "-open", "/dev/nvidia0,/dev/nvidiactl"}})
		r := parseReport(t, out)
		assert.Equal(t, "ENOENT", r.Open["/dev/nvidia0"])
		assert.Equal(t, "ENOENT", r.Open["/dev/nvidiactl"])
	})
}

// The defaults: not root, no capabilities, no new privileges, seccomp
// filtering, a read-only root with a writable /tmp, only loopback.
func TestHardenedByDefault(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "secure", probeRef)
	ckpt := t.TempDir()
	require.NoError(t, os.Chmod(ckpt, 0o777))
	data := t.TempDir()
	es, out := f.run(t, isolation.Spec{
		ID: "hardened", Tenant: "secure", Image: probeRef, Env: []string{"GPUFARM_TEST=1"}, WorkingDir: "/tmp",
		Mounts: []isolation.Mount{{Source: data, Target: "/data", ReadOnly: true}, {Source: ckpt, Target: "/ckpt"}},
		Args:   []string{"report", "-write", "/,/tmp,/app,/data,/ckpt"},
	})
	require.Equal(t, 0, es.Code, out)
	r := parseReport(t, out)
	t.Logf("probe report: %+v", r)
	assert.Equal(t, 65534, r.UID, "runs as nobody")
	assert.Equal(t, 65534, r.GID)
	assert.Equal(t, "0000000000000000", r.CapEff, "no effective capabilities")
	assert.Equal(t, "0000000000000000", r.CapBnd, "no capabilities to gain")
	assert.Equal(t, "1", r.NoNewPrivs)
	assert.Equal(t, "2", r.Seccomp, "seccomp filter mode")
	assert.Equal(t, "EROFS", r.Write["/"], "root filesystem is read-only")
	assert.Equal(t, "EROFS", r.Write["/app"])
	assert.Equal(t, "ok", r.Write["/tmp"], "/tmp is writable")
	assert.Equal(t, "EROFS", r.Write["/data"], "dataset mount is read-only")
	assert.Equal(t, "ok", r.Write["/ckpt"], "checkpoint mount is writable")
	assert.Equal(t, []string{"lo"}, r.Interfaces, "no network but loopback")
	assert.Contains(t, r.Env, "GPUFARM_TEST=1")
	assert.Equal(t, "/tmp", r.Cwd)

	t.Run("host network on request", func(t *testing.T) {
		_, out := f.run(t, isolation.Spec{ID: "hostnet", Tenant: "secure", Image: probeRef,
			Network: isolation.NetworkHost, Args: []string{"report"}})
		r := parseReport(t, out)
		host, err := netInterfaces()
		require.NoError(t, err)
		assert.ElementsMatch(t, host, r.Interfaces, "sees the host's interfaces")
	})
}

// Tenants are containerd namespaces: one tenant cannot list, inspect,
// signal, stop or delete another's containers, and may reuse its IDs.
func TestTenantsCannotSeeEachOther(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "alpha", probeRef)
	f.importImage(t, "beta", probeRef)
	a := f.start(t, isolation.Spec{ID: "job", Tenant: "alpha", Image: probeRef, Args: []string{"sleep"}, Kind: "training"})
	b := f.start(t, isolation.Spec{ID: "job", Tenant: "beta", Image: probeRef, Args: []string{"sleep"}, Kind: "mining"})

	c := ctx(t)
	listA, err := f.rt.List(c, isolation.Filter{Tenant: "alpha"})
	require.NoError(t, err)
	require.Len(t, listA, 1)
	assert.Equal(t, a, listA[0].Ref)
	assert.Equal(t, "training", listA[0].Kind)

	mining, err := f.rt.List(c, isolation.Filter{Labels: map[string]string{isolation.LabelKind: "mining"}})
	require.NoError(t, err)
	require.Len(t, mining, 1, "list by label")
	assert.Equal(t, b, mining[0].Ref)

	// The "job" of tenant beta cannot be reached as tenant gamma.
	other := isolation.Ref{Tenant: "gamma", ID: "job"}
	_, err = f.rt.Inspect(c, other)
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	assert.ErrorIs(t, f.rt.Signal(c, other, syscall.SIGKILL), isolation.ErrNotFound)
	_, err = f.rt.Stop(c, other)
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	assert.ErrorIs(t, f.rt.Delete(c, other), isolation.ErrNotFound)

	// And containerd itself shows each namespace only its own container.
	for ns, want := range map[string]string{isolation.Namespace("alpha"): "alpha", isolation.Namespace("beta"): "beta"} {
		ctrs, err := f.client.Containers(namespaces.WithNamespace(c, ns))
		require.NoError(t, err)
		require.Len(t, ctrs, 1)
		labels, err := ctrs[0].Labels(namespaces.WithNamespace(c, ns))
		require.NoError(t, err)
		assert.Equal(t, want, labels[isolation.LabelTenant])
	}

	// Stopping alpha's job leaves beta's running.
	_, err = f.rt.Stop(c, a)
	require.NoError(t, err)
	info, err := f.rt.Inspect(c, b)
	require.NoError(t, err)
	assert.Equal(t, isolation.StateRunning, info.State)
}

// A container over its memory limit is OOM-killed and Wait says so.
func TestMemoryLimitOOMKill(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "oom", probeRef)
	es, out := f.run(t, isolation.Spec{ID: "hog", Tenant: "oom", Image: probeRef,
		Limits: isolation.Limits{MemoryBytes: 32 << 20, Pids: 64, CPUMillis: 1000}, TmpBytes: 1 << 20,
		Args: []string{"alloc", "-mib", "256"}})
	t.Logf("exit %+v, output %q", es, out)
	assert.NotContains(t, out, "allocated", "the limit stopped it before 256 MiB")
	assert.Equal(t, 137, es.Code)
	assert.True(t, es.OOMKilled)
	assert.Equal(t, isolation.ReasonOOMKilled, es.Reason)

	t.Run("within the limit", func(t *testing.T) {
		es, out := f.run(t, isolation.Spec{ID: "fits", Tenant: "oom", Image: probeRef,
			Limits: isolation.Limits{MemoryBytes: 64 << 20}, Args: []string{"exit", "-code", "3"}})
		assert.Equal(t, isolation.ExitStatus{Code: 3, Reason: isolation.ReasonExited, ExitedAt: es.ExitedAt}, es, out)
		assert.False(t, es.ExitedAt.IsZero())
	})
}

// Stop sends the stop signal; the fake trainer checkpoints within the
// grace and exits 0; a process that ignores the signal is killed at the
// end of the grace.
func TestStopGraceThenKill(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "stop", trainerRef)
	f.importImage(t, "stop", probeRef)

	t.Run("trainer checkpoints", func(t *testing.T) {
		ckpt := t.TempDir()
		require.NoError(t, os.Chmod(ckpt, 0o777))
		ref := f.start(t, isolation.Spec{ID: "trainer", Tenant: "stop", Image: trainerRef,
			Mounts:    []isolation.Mount{{Source: ckpt, Target: "/ckpt"}},
			Args:      []string{"-checkpoint-dir", "/ckpt", "-steps", "100000", "-step-interval", "10ms", "-checkpoint-every", "0", "-save-delay", "300ms"},
			StopGrace: 20 * time.Second})
		f.waitOutput(t, ref, "'loss'")
		start := time.Now()
		es, err := f.rt.Stop(ctx(t), ref)
		require.NoError(t, err)
		t.Logf("stopped in %v: %+v", time.Since(start), es)
		assert.Equal(t, 0, es.Code)
		assert.Equal(t, isolation.ReasonStopped, es.Reason)
		out := f.output(t, ref)
		assert.Contains(t, out, "received SIGTERM, saving checkpoint")
		assert.Contains(t, out, "checkpoint saved step=")
		files, err := filepath.Glob(filepath.Join(ckpt, "checkpoint-*"))
		require.NoError(t, err)
		assert.NotEmpty(t, files, "the checkpoint reached the host directory")

		again, err := f.rt.Wait(ctx(t), ref)
		require.NoError(t, err)
		assert.Equal(t, es, again, "Wait after Stop reports the same end")
	})

	t.Run("ignoring the signal gets killed at the end of the grace", func(t *testing.T) {
		const grace = 1500 * time.Millisecond
		ref := f.start(t, isolation.Spec{ID: "stubborn", Tenant: "stop", Image: probeRef,
			Args: []string{"ignore-term"}, StopGrace: grace, StopSignal: syscall.SIGTERM})
		f.waitOutput(t, ref, "ignoring SIGTERM")
		start := time.Now()
		es, err := f.rt.Stop(ctx(t), ref)
		took := time.Since(start)
		require.NoError(t, err)
		t.Logf("killed after %v: %+v", took, es)
		assert.GreaterOrEqual(t, took, grace)
		assert.Less(t, took, grace+5*time.Second)
		assert.Equal(t, 137, es.Code)
		assert.Equal(t, isolation.ReasonKilled, es.Reason)
		assert.False(t, es.OOMKilled)
	})
}

// A fresh Runtime (the SDK restarted) finds the running containers, each
// once, and manages them: output still reaches the log, Stop works.
func TestRecoverReadoptsRunning(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "recover", probeRef)
	ref := f.start(t, isolation.Spec{ID: "survivor", Tenant: "recover", Image: probeRef, Args: []string{"sleep"},
		GPUs: []isolation.GPU{isolation.GPUFor(simulatedGPUs[1])}, Kind: "training", Workload: "wl-7"})
	done := f.start(t, isolation.Spec{ID: "finished", Tenant: "recover", Image: probeRef, Args: []string{"exit", "-code", "4"}})
	_, err := f.rt.Wait(ctx(t), done)
	require.NoError(t, err)
	f.waitOutput(t, ref, "sleeping")
	before, err := f.rt.Inspect(ctx(t), ref)
	require.NoError(t, err)
	require.NoError(t, f.rt.Close(), "the SDK goes away; containers stay")
	require.NoError(t, f.rt.Close(), "Close is idempotent")
	_, err = f.rt.Inspect(ctx(t), ref)
	require.ErrorIs(t, err, isolation.ErrUnavailable)

	// What a crash in the middle of Create and Delete would leave: a
	// snapshot held only by a create lease, and a log without a container.
	nctx := namespaces.WithNamespace(ctx(t), isolation.Namespace("recover"))
	lease, err := f.client.LeasesService().Create(nctx, leases.WithRandomID(), leases.WithLabel(isolation.LabelPrefix+"create", "crashed"))
	require.NoError(t, err)
	img, err := f.client.GetImage(nctx, probeRef)
	require.NoError(t, err)
	diffIDs, err := img.RootFS(nctx)
	require.NoError(t, err)
	_, err = f.client.SnapshotService("overlayfs").Prepare(leases.WithLease(nctx, lease.ID), "crashed", identity.ChainID(diffIDs).String())
	require.NoError(t, err)
	ghost := filepath.Join(f.logDir, isolation.Namespace("recover"), "ghost.log")
	require.NoError(t, os.WriteFile(ghost, []byte("left by a deleted container\n"), 0o640))
	require.Contains(t, snapshotKeys(t, f, "recover"), "crashed")

	rt := f.newRuntime(t)
	f.rt = rt
	containerd.SetStaleLeaseAge(rt, 0)
	for round := 0; round < 2; round++ {
		infos, err := rt.Recover(ctx(t))
		require.NoError(t, err)
		byRef := map[isolation.Ref]isolation.Info{}
		for _, i := range infos {
			require.NotContains(t, byRef, i.Ref, "reported twice")
			byRef[i.Ref] = i
		}
		require.Len(t, byRef, 2, "round %d", round)
		got := byRef[ref]
		assert.Equal(t, isolation.StateRunning, got.State)
		assert.Equal(t, before.PID, got.PID, "the same process, not a new one")
		assert.Equal(t, "wl-7", got.Workload)
		assert.Equal(t, "training", got.Kind)
		assert.Equal(t, []string{simulatedGPUs[1].UUID}, got.GPUs)
		require.NotNil(t, byRef[done].Exit)
		assert.Equal(t, 4, byRef[done].Exit.Code)
	}
	assert.NotContains(t, snapshotKeys(t, f, "recover"), "crashed", "the interrupted create's snapshot is gone")
	assert.NoFileExists(t, ghost, "the orphan log is gone")
	assert.FileExists(t, before.LogPath, "the live container's log stays")

	_, err = rt.Create(ctx(t), isolation.Spec{ID: "survivor", Tenant: "recover", Image: probeRef})
	assert.ErrorIs(t, err, isolation.ErrExists, "no duplicate of an adopted container")

	es, err := rt.Stop(ctx(t), ref)
	require.NoError(t, err)
	assert.Equal(t, isolation.ReasonStopped, es.Reason)
	assert.Contains(t, f.output(t, ref), "term", "output after the restart still reaches the log")
}

// Logs are readable and capped: a container writing far more than the cap
// leaves at most the cap, its newest output.
func TestLogsCapped(t *testing.T) {
	const capBytes = 64 << 10
	f := newFixture(t, containerd.WithLogCapBytes(capBytes), containerd.WithLogCheckInterval(10*time.Millisecond))
	f.importImage(t, "logs", probeRef)
	const total = 2 << 20
	es, out := f.run(t, isolation.Spec{ID: "chatty", Tenant: "logs", Image: probeRef,
		Args: []string{"spam", "-bytes", strconv.Itoa(total)}})
	require.Equal(t, 0, es.Code)
	t.Logf("wrote %d bytes, read back %d", total, len(out))
	assert.LessOrEqual(t, len(out), capBytes)
	assert.GreaterOrEqual(t, len(out), capBytes/2)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	last := lines[len(lines)-1]
	// probe writes 65-byte lines until it has written total bytes.
	const lineBytes = 65
	lastLine := fmt.Sprintf("line %08d ", (total+lineBytes-1)/lineBytes-1)
	assert.True(t, strings.HasPrefix(last, lastLine), "the newest output is kept: want %q..., got %q", lastLine, last)

	var onDisk int64
	files, _ := filepath.Glob(filepath.Join(f.logDir, "*", "chatty.log*"))
	for _, p := range files {
		st, err := os.Stat(p)
		require.NoError(t, err)
		onDisk += st.Size()
	}
	assert.LessOrEqual(t, onDisk, int64(capBytes))
}

// The whole lifecycle and its state errors.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "life", probeRef)
	c := ctx(t)
	spec := isolation.Spec{ID: "life-1", Tenant: "life", Image: probeRef, Args: []string{"sleep"},
		Labels: map[string]string{"team": "ml"}, StopSignal: syscall.SIGINT, StopGrace: 5 * time.Second}
	info, err := f.rt.Create(c, spec)
	require.NoError(t, err)
	ref := info.Ref
	assert.Equal(t, isolation.StateCreated, info.State)
	assert.Equal(t, "ml", info.Labels["team"])
	assert.Equal(t, syscall.SIGINT, info.StopSignal)
	assert.Equal(t, 5*time.Second, info.StopGrace)

	_, err = f.rt.Wait(c, ref)
	assert.ErrorIs(t, err, isolation.ErrState, "wait on a container never started")
	require.NoError(t, f.rt.Start(c, ref))
	assert.ErrorIs(t, f.rt.Start(c, ref), isolation.ErrState, "start twice")
	assert.ErrorIs(t, f.rt.Delete(c, ref), isolation.ErrState, "delete while running")
	f.waitOutput(t, ref, "sleeping")

	info, err = f.rt.Inspect(c, ref)
	require.NoError(t, err)
	assert.Equal(t, isolation.StateRunning, info.State)
	assert.Positive(t, info.PID)

	require.NoError(t, f.rt.Signal(c, ref, syscall.SIGINT))
	es, err := f.rt.Wait(c, ref)
	require.NoError(t, err)
	assert.Equal(t, 0, es.Code)
	assert.Equal(t, isolation.ReasonExited, es.Reason, "a signal from Signal is not a Stop")
	assert.Contains(t, f.output(t, ref), "term interrupt")

	// Restart a stopped container.
	require.NoError(t, f.rt.Start(c, ref))
	f.waitOutput(t, ref, "sleeping")
	es, err = f.rt.Stop(c, ref)
	require.NoError(t, err)
	assert.Equal(t, isolation.ReasonStopped, es.Reason)

	require.NoError(t, f.rt.Delete(c, ref))
	_, err = f.rt.Inspect(c, ref)
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	_, err = os.Stat(filepath.Join(f.logDir, isolation.Namespace("life"), "life-1.log"))
	assert.True(t, errors.Is(err, os.ErrNotExist), "logs deleted with the container")
	assert.Empty(t, snapshotKeys(t, f, "life"), "snapshot deleted with the container")

	// The image's unpacked layers are pruned behind the runtime's back:
	// Create unpacks again.
	nctx := namespaces.WithNamespace(c, isolation.Namespace("life"))
	img, err := f.client.GetImage(nctx, probeRef)
	require.NoError(t, err)
	diffIDs, err := img.RootFS(nctx)
	require.NoError(t, err)
	sn, chainID := f.client.SnapshotService("overlayfs"), identity.ChainID(diffIDs).String()
	var remapped []string // the tenant's copy for its user namespace goes first
	require.NoError(t, sn.Walk(nctx, func(_ context.Context, i snapshots.Info) error {
		remapped = append(remapped, i.Name)
		return nil
	}, "parent=="+chainID))
	for _, k := range remapped {
		require.NoError(t, sn.Remove(nctx, k))
	}
	require.NoError(t, sn.Remove(nctx, chainID))
	info, err = f.rt.Create(c, isolation.Spec{ID: "life-2", Tenant: "life", Image: probeRef})
	require.NoError(t, err)
	require.NoError(t, f.rt.Delete(c, info.Ref))
}

// Bad input gets a clear error before anything is created, and leaves
// nothing: no container, no snapshot, no lease, no namespace.
func TestBadInputCreatesNothing(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "bad", probeRef)
	good := isolation.Spec{ID: "bad-1", Tenant: "bad", Image: probeRef, Args: []string{"sleep"}}
	cases := []struct {
		name   string
		mutate func(*isolation.Spec)
		is     error
		says   []string
	}{
		{"unknown image", func(s *isolation.Spec) { s.Image = "gpufarm.test/nope:1" }, isolation.ErrNotFound, []string{`image "gpufarm.test/nope:1"`, "import or pull"}},
		{"malformed CDI name", func(s *isolation.Spec) { s.GPUs = []isolation.GPU{{Device: "gpu0", UUID: "GPU-0"}} }, isolation.ErrInvalid, []string{`"gpu0"`, "not a CDI device name"}},
		{"unknown CDI name", func(s *isolation.Spec) { s.GPUs = []isolation.GPU{{Device: "nvidia.com/gpu=7", UUID: "GPU-7"}} }, isolation.ErrNotFound, []string{`"nvidia.com/gpu=7"`, "nvidia.com/gpu=0"}},
		{"a CDI name and a UUID that disagree", func(s *isolation.Spec) { s.GPUs = []isolation.GPU{{Device: "nvidia.com/gpu=all", UUID: "GPU-0"}} },
			isolation.ErrInvalid, []string{`"nvidia.com/gpu=all" is GPU`, `not "GPU-0"`}},
		{"an index name and another GPU's UUID", func(s *isolation.Spec) {
			s.GPUs = []isolation.GPU{{Device: "nvidia.com/gpu=0", UUID: simulatedGPUs[1].UUID}}
		},
			isolation.ErrInvalid, []string{`"nvidia.com/gpu=0" is GPU ` + simulatedGPUs[0].UUID}},
		{"a tenant policy broken", func(s *isolation.Spec) {
			s.Tenant = "strict"
			s.Mounts = []isolation.Mount{{Source: "/", Target: "/host"}}
		},
			isolation.ErrDenied, []string{`spec.Mounts[0].Source "/": the tenant may not mount host paths`}},
		{"negative limits", func(s *isolation.Spec) { s.Limits = isolation.Limits{MemoryBytes: -1, Pids: -2} }, isolation.ErrInvalid, []string{"MemoryBytes is -1", "Pids is -2"}},
		{"missing mount source", func(s *isolation.Spec) {
			s.Mounts = []isolation.Mount{{Source: "/nonexistent/dataset", Target: "/data", ReadOnly: true}}
		}, isolation.ErrInvalid, []string{`"/nonexistent/dataset"`, "create it"}},
		{"all at once", func(s *isolation.Spec) {
			s.Image = "gpufarm.test/nope:1"
			s.GPUs = []isolation.GPU{{Device: "nvidia.com/gpu=9"}}
			s.Limits.CPUMillis = -5
			s.Mounts = []isolation.Mount{{Source: "/nonexistent", Target: "relative"}}
		}, isolation.ErrInvalid, []string{"gpufarm.test/nope:1", "nvidia.com/gpu=9", "GPUs[0].UUID is empty", "CPUMillis is -5", "/nonexistent", `Target "relative"`}},
		{"unknown tenant and image", func(s *isolation.Spec) { s.Tenant = "newcomer"; s.Image = "gpufarm.test/nope:1" }, isolation.ErrNotFound, []string{"newcomer"}},
		{"bad tenant", func(s *isolation.Spec) { s.Tenant = "Bad/Tenant" }, isolation.ErrInvalid, []string{"Bad/Tenant"}},
	}
	nsBefore := namespaceList(t, f)
	snapsBefore := snapshotKeys(t, f, "bad")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.mutate(&s)
			_, err := f.rt.Create(ctx(t), s)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.ErrorIs(t, err, tc.is)
			for _, want := range tc.says {
				assert.Contains(t, err.Error(), want)
			}
			infos, err := f.rt.List(ctx(t), isolation.Filter{Tenant: "bad"})
			require.NoError(t, err)
			assert.Empty(t, infos, "no container")
			assert.Equal(t, snapsBefore, snapshotKeys(t, f, "bad"), "no snapshot")
			assert.Equal(t, nsBefore, namespaceList(t, f), "no namespace")
			ls, err := f.client.LeasesService().List(namespaces.WithNamespace(ctx(t), isolation.Namespace("bad")))
			require.NoError(t, err)
			assert.Empty(t, ls, "no lease")
		})
	}

	t.Run("import of a broken tar leaves no namespace", func(t *testing.T) {
		_, err := f.rt.Import(ctx(t), "broken", strings.NewReader("not a tar"))
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.Equal(t, nsBefore, namespaceList(t, f))
	})

	t.Run("pull of an unreachable image leaves no namespace", func(t *testing.T) {
		err := f.rt.Pull(ctx(t), "puller", "127.0.0.1:1/nothing/here:1", isolation.PullOptions{PlainHTTP: true})
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.Equal(t, nsBefore, namespaceList(t, f))
	})
}

func snapshotKeys(t *testing.T, f *fixture, tenant string) []string {
	t.Helper()
	c := namespaces.WithNamespace(ctx(t), isolation.Namespace(tenant))
	var keys []string
	err := f.client.SnapshotService("overlayfs").Walk(c, func(_ context.Context, i snapshots.Info) error {
		if i.Kind == snapshots.KindActive {
			keys = append(keys, i.Name)
		}
		return nil
	})
	require.NoError(t, err)
	return keys
}

func namespaceList(t *testing.T, f *fixture) []string {
	t.Helper()
	nss, err := f.client.NamespaceService().List(ctx(t))
	require.NoError(t, err)
	return nss
}

func TestNewContainerdUnavailable(t *testing.T) {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := containerd.New(c, containerd.WithAddress(filepath.Join(t.TempDir(), "none.sock")))
	require.Error(t, err)
	assert.ErrorIs(t, err, isolation.ErrUnavailable)
	assert.ErrorIs(t, err, gpu.ErrUnavailable)
}

func netInterfaces() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names, nil
}

// Stop records its signal only once containerd delivered it: a Stop whose
// ctx ends before the signal, or a process that exits on its own first,
// leaves no record, so the exit is ReasonExited; and a Wait running beside
// Stop sees the record even when the signal ends the process at once.
func TestStopRecordsOnlyDeliveredSignals(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "stoprec", probeRef)
	cases := []struct {
		name string
		// hook runs at Stop's steps; cancel ends Stop's ctx.
		hook       func(t *testing.T, ref isolation.Ref, cancel context.CancelFunc) func(string)
		stopErr    error
		want       isolation.Reason
		concurrent bool // Wait beside Stop
	}{
		{
			name: "ctx ends before the signal",
			hook: func(t *testing.T, ref isolation.Ref, cancel context.CancelFunc) func(string) {
				return func(step string) {
					if step == "before-signal" {
						cancel()
					}
				}
			},
			stopErr: context.Canceled,
			want:    isolation.ReasonExited,
		},
		{
			name: "the process exits on its own before the signal",
			hook: func(t *testing.T, ref isolation.Ref, _ context.CancelFunc) func(string) {
				return func(step string) {
					if step != "before-signal" {
						return
					}
					require.NoError(t, f.rt.Signal(ctx(t), ref, syscall.SIGINT))
					es, err := f.rt.Wait(ctx(t), ref)
					require.NoError(t, err)
					require.Equal(t, isolation.ReasonExited, es.Reason)
				}
			},
			want: isolation.ReasonExited,
		},
		{
			name: "a Wait beside Stop sees the stop",
			hook: func(t *testing.T, ref isolation.Ref, _ context.CancelFunc) func(string) {
				return func(step string) {
					if step == "signalled" {
						// The process exits on SIGTERM at once; the record
						// comes later. Wait must not report it meanwhile.
						time.Sleep(300 * time.Millisecond)
					}
				}
			},
			want:       isolation.ReasonStopped,
			concurrent: true,
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref := f.start(t, isolation.Spec{ID: fmt.Sprintf("stoprec-%d", i), Tenant: "stoprec", Image: probeRef, Args: []string{"sleep"}})
			f.waitOutput(t, ref, "sleeping")
			stopCtx, cancel := context.WithCancel(ctx(t))
			defer cancel()
			containerd.SetStopHook(f.rt, tc.hook(t, ref, cancel))
			defer containerd.SetStopHook(f.rt, func(string) {})

			waited := make(chan isolation.ExitStatus, 1)
			if tc.concurrent {
				go func() { // ends when the container exits
					es, err := f.rt.Wait(ctx(t), ref)
					assert.NoError(t, err)
					waited <- es
				}()
			}
			es, err := f.rt.Stop(stopCtx, ref)
			t.Logf("Stop: %+v, %v", es, err)
			if tc.stopErr != nil {
				require.ErrorIs(t, err, tc.stopErr)
				info, err := f.rt.Inspect(ctx(t), ref)
				require.NoError(t, err)
				assert.Equal(t, isolation.StateRunning, info.State, "an undelivered Stop leaves the container running")
				assert.NotContains(t, info.Labels, isolation.LabelPrefix+"stop", "and unrecorded")
				require.NoError(t, f.rt.Signal(ctx(t), ref, syscall.SIGINT))
			} else {
				require.NoError(t, err)
				assert.Equal(t, tc.want, es.Reason, "Stop's report")
			}
			again, err := f.rt.Wait(ctx(t), ref)
			require.NoError(t, err)
			assert.Equal(t, tc.want, again.Reason, "a later Wait's report")
			if tc.concurrent {
				select {
				case es := <-waited:
					assert.Equal(t, tc.want, es.Reason, "the concurrent Wait's report")
				case <-time.After(30 * time.Second):
					t.Fatal("the concurrent Wait did not return")
				}
			}
		})
	}
}

// TestPrepareThenStart: a prepared container runs nothing until Start, which
// then only runs its process; a prepared container deletes cleanly.
func TestPrepareThenStart(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "prep", probeRef)
	c := ctx(t)
	info, err := f.rt.Create(c, isolation.Spec{ID: "prep-1", Tenant: "prep", Image: probeRef, Args: []string{"sleep"}})
	require.NoError(t, err)
	require.NoError(t, f.rt.Prepare(c, info.Ref))
	require.NoError(t, f.rt.Prepare(c, info.Ref), "preparing twice does nothing")
	time.Sleep(100 * time.Millisecond)
	assert.NotContains(t, f.output(t, info.Ref), "sleeping", "nothing of the image runs before Start")
	in, err := f.rt.Inspect(c, info.Ref)
	require.NoError(t, err)
	assert.NotEqual(t, isolation.StateRunning, in.State)

	require.NoError(t, f.rt.Start(c, info.Ref))
	f.waitOutput(t, info.Ref, "sleeping")
	assert.ErrorIs(t, f.rt.Prepare(c, info.Ref), isolation.ErrState, "a running container cannot be prepared")
	_, err = f.rt.Stop(c, info.Ref)
	require.NoError(t, err)
	require.NoError(t, f.rt.Delete(c, info.Ref))

	// Prepared, never started, then abandoned: Delete leaves nothing.
	info, err = f.rt.Create(c, isolation.Spec{ID: "prep-2", Tenant: "prep", Image: probeRef, Args: []string{"sleep"}})
	require.NoError(t, err)
	require.NoError(t, f.rt.Prepare(c, info.Ref))
	require.NoError(t, f.rt.Delete(c, info.Ref))
	_, err = f.rt.Inspect(c, info.Ref)
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	assert.Empty(t, snapshotKeys(t, f, "prep"), "no snapshot left")
}
