package containerd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	gocni "github.com/containerd/go-cni"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// BenchmarkStartStop measures one create, start (running), kill, wait,
// delete cycle through the runtime against the bare containerd v2 client
// doing the same steps with the same hardened OCI spec, user namespace
// (containerd's remapped snapshot) and tenant network (a netns and CNI's
// bridge) on the same daemon in the same run, interleaved, and reports
// runtime/bare (goal <= 1.15). It reports what the user namespace and the
// tenant network add to one start through the runtime, in ms, from
// runtimes without them in the same loop; bare-defaults is the bare client
// with containerd's default spec (no seccomp filter, root, writable root,
// no network), for reference. Then it starts 8 containers at once through
// the runtime and reports the wall time until all run over the time one
// start takes (goal <= 3), and the same ratio for the bare client, which
// is what the daemon and runc allow on this machine.
func BenchmarkStartStop(b *testing.B) {
	f := newFixture(b)
	const tenant = "bench"
	f.importImage(b, tenant, probeRef)
	c := context.Background()
	nctx := namespaces.WithNamespace(c, isolation.Namespace(tenant))
	img, err := f.client.GetImage(nctx, probeRef)
	require.NoError(b, err)
	logDir := b.TempDir()
	plain := f.newRuntime(b, containerd.WithUserNamespaces(false))

	runtimeStart := func(rt *containerd.Runtime, network isolation.Network) func(id string) (func() error, error) {
		return func(id string) (func() error, error) {
			info, err := rt.Create(c, isolation.Spec{ID: id, Tenant: tenant, Image: probeRef, Args: []string{"sleep"}, Network: network})
			if err != nil {
				return nil, err
			}
			if err := rt.Start(c, info.Ref); err != nil {
				return nil, err
			}
			return func() error {
				if err := rt.Signal(c, info.Ref, syscall.SIGKILL); err != nil {
					return err
				}
				if _, err := rt.Wait(c, info.Ref); err != nil {
					return err
				}
				return rt.Delete(c, info.Ref)
			}, nil
		}
	}
	rtStart := runtimeStart(f.rt, isolation.NetworkNone)
	hardened := []oci.SpecOpts{
		oci.WithImageConfigArgs(img, []string{"sleep"}),
		oci.WithUIDGID(65534, 65534), oci.WithNoNewPrivileges, oci.WithCapabilities([]string{}),
		oci.WithRootFSReadonly(),
		oci.WithMounts([]specs.Mount{{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=67108864"}}}),
		seccomp.WithDefaultProfile(),
	}
	bareStart := func(id string, opts []oci.SpecOpts) (func() error, error) {
		ctr, err := f.client.NewContainer(nctx, id,
			ctrd.WithNewSnapshot(id, img),
			ctrd.WithNewSpec(opts...))
		if err != nil {
			return nil, err
		}
		return bareTask(nctx, ctr, filepath.Join(logDir, id+".log"), nil)
	}
	// The bare client's tenant: a user namespace of its own range and a
	// bridge of its own, configured as the runtime configures a tenant's.
	const bareSlot = 200
	bareIDs := uint32(containerd.IDBase + bareSlot*containerd.IDsPerTenant)
	conf, err := containerd.NetworkConf(f.rt, bareSlot)
	require.NoError(b, err)
	bareCNI, err := gocni.New(gocni.WithPluginDir(containerd.DefaultCNIPluginDirs()),
		gocni.WithConfListBytes(conf))
	require.NoError(b, err)
	netnsDir := filepath.Join(f.d.Network().StateDir, "bench-netns")
	idMap := []specs.LinuxIDMapping{{HostID: bareIDs, Size: containerd.IDsPerTenant}}
	bareFull := func(id string) (func() error, error) {
		ns := filepath.Join(netnsDir, id) // made as the runtime makes one
		if err := containerd.NewNetNS(ns); err != nil {
			return nil, err
		}
		if _, err := bareCNI.Setup(nctx, id, ns); err != nil {
			return nil, err
		}
		opts := append(append([]oci.SpecOpts(nil), hardened...),
			oci.WithUserNamespace(idMap, idMap),
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: ns}),
			withHostSys)
		ctr, err := f.client.NewContainer(nctx, id,
			ctrd.WithRemappedSnapshot(id, img, bareIDs, bareIDs),
			ctrd.WithNewSpec(opts...))
		if err != nil {
			return nil, err
		}
		return bareTask(nctx, ctr, filepath.Join(logDir, id+".log"), func() error {
			if err := bareCNI.Remove(nctx, id, ns); err != nil {
				return err
			}
			return containerd.RemoveNetNS(ns)
		})
	}
	cycle := func(start func() (func() error, error)) time.Duration {
		t0 := time.Now()
		stop, err := start()
		require.NoError(b, err)
		require.NoError(b, stop())
		return time.Since(t0)
	}
	with := func(start func(id string) (func() error, error), id string) func() (func() error, error) {
		return func() (func() error, error) { return start(id) }
	}
	bare := func(opts []oci.SpecOpts) func(id string) (func() error, error) {
		return func(id string) (func() error, error) { return bareStart(id, opts) }
	}
	defaults := []oci.SpecOpts{oci.WithImageConfigArgs(img, []string{"sleep"})}
	variants := []struct {
		name  string
		start func(id string) (func() error, error)
		total time.Duration
	}{
		{name: "runtime", start: runtimeStart(f.rt, isolation.NetworkBridge)},
		{name: "bare", start: bareFull},
		{name: "runtime-userns", start: rtStart},
		{name: "runtime-plain", start: runtimeStart(plain, isolation.NetworkNone)},
		{name: "bare-defaults", start: bare(defaults)},
	}
	// Warm up every path (page cache, shim binary, cgroup parents, the
	// remapped layers, the bridges and the firewall).
	for _, v := range variants {
		cycle(with(v.start, "warm-"+v.name))
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range variants {
			variants[j].total += cycle(with(variants[j].start, fmt.Sprintf("%s-%d", variants[j].name, i)))
		}
	}
	b.StopTimer()
	rtTotal, bareTotal, usernsTotal, plainTotal, defTotal := variants[0].total, variants[1].total, variants[2].total, variants[3].total, variants[4].total

	// 8 concurrent starts against one, a few rounds.
	const rounds, parallel = 3, 8
	concurrency := func(name string, start func(id string) (func() error, error)) float64 {
		var single, concurrent time.Duration
		for r := 0; r < rounds; r++ {
			t0 := time.Now()
			stop, err := start(fmt.Sprintf("%s-one-%d", name, r))
			single += time.Since(t0)
			require.NoError(b, err)
			require.NoError(b, stop())

			stops := make([]func() error, parallel)
			errs := make([]error, parallel)
			var wg sync.WaitGroup
			t0 = time.Now()
			for p := 0; p < parallel; p++ {
				wg.Add(1)
				go func(p int) {
					defer wg.Done()
					stops[p], errs[p] = start(fmt.Sprintf("%s-par-%d-%d", name, r, p))
				}(p)
			}
			wg.Wait()
			concurrent += time.Since(t0)
			for p := 0; p < parallel; p++ {
				require.NoError(b, errs[p])
				require.NoError(b, stops[p]())
			}
		}
		b.Logf("%s: 8 concurrent starts %v, one start %v", name, concurrent/rounds, single/rounds)
		return float64(concurrent) / float64(single)
	}
	rtConc := concurrency("runtime", rtStart)
	// The same with the slow half done ahead (Prepare), as the workload
	// manager does while GPUs drain: only Start is timed.
	prepared := func(id string) (func() error, func() error, error) {
		info, err := f.rt.Create(c, isolation.Spec{ID: id, Tenant: tenant, Image: probeRef, Args: []string{"sleep"}})
		if err != nil {
			return nil, nil, err
		}
		if err := f.rt.Prepare(c, info.Ref); err != nil {
			return nil, nil, err
		}
		start := func() error { return f.rt.Start(c, info.Ref) }
		stop := func() error {
			if err := f.rt.Signal(c, info.Ref, syscall.SIGKILL); err != nil {
				return err
			}
			if _, err := f.rt.Wait(c, info.Ref); err != nil {
				return err
			}
			return f.rt.Delete(c, info.Ref)
		}
		return start, stop, nil
	}
	var prepOne, prepPar time.Duration
	for r := 0; r < rounds; r++ {
		var starts, stops []func() error
		for p := 0; p <= parallel; p++ {
			start, stop, err := prepared(fmt.Sprintf("prep-%d-%d", r, p))
			require.NoError(b, err)
			starts, stops = append(starts, start), append(stops, stop)
		}
		t0 := time.Now()
		require.NoError(b, starts[0]())
		prepOne += time.Since(t0)
		errs := make([]error, parallel)
		var wg sync.WaitGroup
		t0 = time.Now()
		for p := 1; p <= parallel; p++ {
			wg.Add(1)
			go func(p int) { defer wg.Done(); errs[p-1] = starts[p]() }(p)
		}
		wg.Wait()
		prepPar += time.Since(t0)
		for _, err := range errs {
			require.NoError(b, err)
		}
		for _, stop := range stops {
			require.NoError(b, stop())
		}
	}
	b.Logf("prepared: 8 concurrent starts %v, one start %v", prepPar/rounds, prepOne/rounds)
	b.ReportMetric(float64(prepPar)/float64(prepOne), "8-prepared-starts/1")
	bareConc := concurrency("bare", bare(hardened))

	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / n / 1e6 }
	b.ReportMetric(float64(rtTotal.Nanoseconds())/n, "runtime-ns/cycle")
	b.ReportMetric(float64(bareTotal.Nanoseconds())/n, "bare-ns/cycle")
	b.ReportMetric(float64(defTotal.Nanoseconds())/n, "bare-defaults-ns/cycle")
	b.ReportMetric(float64(rtTotal)/float64(bareTotal), "runtime/bare")
	b.ReportMetric(ms(usernsTotal-plainTotal), "userns-ms/start")
	b.ReportMetric(ms(rtTotal-usernsTotal), "network-ms/start")
	b.ReportMetric(rtConc, "8-starts/1-start")
	b.ReportMetric(bareConc, "bare-8-starts/1-start")
	b.Logf("N=%d runtime %v/cycle, bare %v/cycle (ratio %.3f), bare with default spec %v/cycle; "+
		"the user namespace adds %.1f ms, the tenant network %.1f ms; 8 starts / 1: runtime x%.2f, bare x%.2f",
		b.N, rtTotal/time.Duration(b.N), bareTotal/time.Duration(b.N), float64(rtTotal)/float64(bareTotal),
		defTotal/time.Duration(b.N), ms(usernsTotal-plainTotal), ms(rtTotal-usernsTotal), rtConc, bareConc)
}

// bareTask makes and starts the container's task and returns what stops
// and deletes it, then runs cleanup (may be nil).
func bareTask(ctx context.Context, ctr ctrd.Container, log string, cleanup func() error) (func() error, error) {
	task, err := ctr.NewTask(ctx, cio.LogFile(log))
	if err != nil {
		return nil, err
	}
	exit, err := task.Wait(ctx)
	if err != nil {
		return nil, err
	}
	if err := task.Start(ctx); err != nil {
		return nil, err
	}
	return func() error {
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			return err
		}
		<-exit
		if _, err := task.Delete(ctx); err != nil {
			return err
		}
		if err := ctr.Delete(ctx, ctrd.WithSnapshotCleanup); err != nil {
			return err
		}
		if cleanup != nil {
			return cleanup()
		}
		return nil
	}, nil
}

// withHostSys binds the host's /sys read-only, as a container in a user
// namespace must when its network namespace is not its own.
func withHostSys(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	for i, m := range s.Mounts {
		if m.Destination == "/sys" {
			s.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys",
				Options: []string{"rbind", "rprivate", "nosuid", "noexec", "nodev", "ro"}}
		}
	}
	return nil
}
