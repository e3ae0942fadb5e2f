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
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
)

// BenchmarkStartStop measures one create, start (running), kill, wait,
// delete cycle through the runtime against the bare containerd v2 client
// doing the same steps with the same hardened OCI spec, on the same daemon
// in the same run, interleaved, and reports runtime/bare (goal <= 1.15).
// bare-defaults is the bare client with containerd's default spec (no
// seccomp filter, root, writable root), for reference. Then it starts 8
// containers at once through the runtime and reports the wall time until
// all run over the time one start takes (goal <= 3), and the same ratio for
// the bare client, which is what the daemon and runc allow on this machine.
func BenchmarkStartStop(b *testing.B) {
	f := newFixture(b)
	const tenant = "bench"
	f.importImage(b, tenant, probeRef)
	c := context.Background()
	nctx := namespaces.WithNamespace(c, isolation.Namespace(tenant))
	img, err := f.client.GetImage(nctx, probeRef)
	require.NoError(b, err)
	logDir := b.TempDir()

	rtStart := func(id string) (func() error, error) {
		info, err := f.rt.Create(c, isolation.Spec{ID: id, Tenant: tenant, Image: probeRef, Args: []string{"sleep"}})
		if err != nil {
			return nil, err
		}
		if err := f.rt.Start(c, info.Ref); err != nil {
			return nil, err
		}
		return func() error {
			if err := f.rt.Signal(c, info.Ref, syscall.SIGKILL); err != nil {
				return err
			}
			if _, err := f.rt.Wait(c, info.Ref); err != nil {
				return err
			}
			return f.rt.Delete(c, info.Ref)
		}, nil
	}
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
		task, err := ctr.NewTask(nctx, cio.LogFile(filepath.Join(logDir, id+".log")))
		if err != nil {
			return nil, err
		}
		exit, err := task.Wait(nctx)
		if err != nil {
			return nil, err
		}
		if err := task.Start(nctx); err != nil {
			return nil, err
		}
		return func() error {
			if err := task.Kill(nctx, syscall.SIGKILL); err != nil {
				return err
			}
			<-exit
			if _, err := task.Delete(nctx); err != nil {
				return err
			}
			return ctr.Delete(nctx, ctrd.WithSnapshotCleanup)
		}, nil
	}
	cycle := func(start func() (func() error, error)) time.Duration {
		t0 := time.Now()
		stop, err := start()
		require.NoError(b, err)
		require.NoError(b, stop())
		return time.Since(t0)
	}
	rt := func(id string) func() (func() error, error) {
		return func() (func() error, error) { return rtStart(id) }
	}
	bare := func(id string, opts []oci.SpecOpts) func() (func() error, error) {
		return func() (func() error, error) { return bareStart(id, opts) }
	}
	defaults := []oci.SpecOpts{oci.WithImageConfigArgs(img, []string{"sleep"})}
	// Warm up every path (page cache, shim binary, cgroup parents).
	cycle(rt("warm-rt"))
	cycle(bare("warm-bare", hardened))
	cycle(bare("warm-default", defaults))

	var rtTotal, bareTotal, defTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rtTotal += cycle(rt(fmt.Sprintf("rt-%d", i)))
		bareTotal += cycle(bare(fmt.Sprintf("bare-%d", i), hardened))
		defTotal += cycle(bare(fmt.Sprintf("def-%d", i), defaults))
	}
	b.StopTimer()

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
	bareConc := concurrency("bare", func(id string) (func() error, error) { return bareStart(id, hardened) })

	n := float64(b.N)
	b.ReportMetric(float64(rtTotal.Nanoseconds())/n, "runtime-ns/cycle")
	b.ReportMetric(float64(bareTotal.Nanoseconds())/n, "bare-ns/cycle")
	b.ReportMetric(float64(defTotal.Nanoseconds())/n, "bare-defaults-ns/cycle")
	b.ReportMetric(float64(rtTotal)/float64(bareTotal), "runtime/bare")
	b.ReportMetric(rtConc, "8-starts/1-start")
	b.ReportMetric(bareConc, "bare-8-starts/1-start")
	b.Logf("N=%d runtime %v/cycle, bare %v/cycle (ratio %.3f), bare with default spec %v/cycle; 8 starts / 1: runtime x%.2f, bare x%.2f",
		b.N, rtTotal/time.Duration(b.N), bareTotal/time.Duration(b.N), float64(rtTotal)/float64(bareTotal),
		defTotal/time.Duration(b.N), rtConc, bareConc)
}
