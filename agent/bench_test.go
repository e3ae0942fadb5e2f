package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/agent/client"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/workload"
)

const probeRef = "gpufarm.test/probe:latest"

// BenchmarkSubmitToRunning measures a paid job from Submit to its
// container running on real containerd, through the agent's API (POST,
// then the started event on the SSE stream) and in process (Submit, then
// the started event from Watch), interleaved on the same node, and
// reports api/in-process (goal <= 1.1).
func BenchmarkSubmitToRunning(b *testing.B) {
	containerdtest.Require(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := containerdtest.Start(b)
	tar := filepath.Join(b.TempDir(), "probe.tar")
	require.NoError(b, ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/probe", Ref: probeRef}, tar))
	p, err := sim.PresetByName(sim.PresetA40)
	require.NoError(b, err)
	p.Cards = p.Cards[:2]
	rig, err := sim.New(p)
	require.NoError(b, err)
	gpus, err := gpu.New(ctx, rig)
	require.NoError(b, err)
	defer gpus.Close()
	cdi, err := containerd.WriteSimulatedCDI(filepath.Join(d.Dir, "cdi"), gpus.Devices())
	require.NoError(b, err)
	rt, err := containerd.New(ctx, containerd.WithAddress(d.Address), containerd.WithCDISpecDirs(cdi.SpecDir),
		containerd.WithLogDir(filepath.Join(d.Dir, "logs")))
	require.NoError(b, err)
	defer rt.Close()
	f, err := os.Open(tar)
	require.NoError(b, err)
	_, err = rt.Import(ctx, "acme", f)
	f.Close()
	require.NoError(b, err)
	m, err := workload.New(gpus, rt, workload.WithLoad(rig.SetGPULoad), workload.WithPowerSettle(0), workload.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(b, err)
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	defer func() { cancel(); <-ran; _ = m.Close() }()
	s, err := agent.New(m)
	require.NoError(b, err)
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, err := client.New(srv.URL)
	require.NoError(b, err)
	stream, err := c.Events(ctx, 0)
	require.NoError(b, err)
	defer stream.Close()
	watch := m.Watch(ctx, 0)

	spec := func(id string) api.Spec {
		return api.Spec{ID: id, Kind: "training", Tenant: "acme", GPUs: api.GPUs{Count: 1}, Image: probeRef,
			Command: []string{"sleep"}, StopGraceSeconds: 2}
	}
	viaAPI := func(id string) time.Duration {
		t0 := time.Now()
		_, err := c.Submit(ctx, spec(id))
		require.NoError(b, err)
		for {
			ev, err := stream.Next()
			require.NoError(b, err)
			if ev.ID == id && ev.Type == "started" {
				return time.Since(t0)
			}
		}
	}
	inProcess := func(id string) time.Duration {
		t0 := time.Now()
		_, err := m.Submit(ctx, workload.Spec{ID: id, Kind: workload.KindTraining, Tenant: "acme", GPUs: workload.GPURequest{Count: 1},
			Image: probeRef, Command: []string{"sleep"}, StopGrace: 2 * time.Second})
		require.NoError(b, err)
		for ev := range watch {
			if ev.ID == id && ev.Type == workload.EventStarted {
				return time.Since(t0)
			}
		}
		b.Fatal("the manager stopped")
		return 0
	}
	// Each job is cancelled and forgotten before the next, untimed.
	done := func(id string) {
		require.NoError(b, m.Cancel(ctx, id))
		require.Eventually(b, func() bool { w, err := m.Get(id); return err == nil && w.State.Final() }, time.Minute, 5*time.Millisecond)
		require.NoError(b, m.Forget(ctx, id))
	}
	done2 := func(id string, took time.Duration) time.Duration { done(id); return took }
	done2("warm-api", viaAPI("warm-api"))
	done2("warm-in", inProcess("warm-in"))

	var apiTotal, inTotal time.Duration
	var apiAll, inAll []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := viaAPI(fmt.Sprintf("api-%d", i))
		b.StopTimer()
		done(fmt.Sprintf("api-%d", i))
		b.StartTimer()
		in := inProcess(fmt.Sprintf("in-%d", i))
		b.StopTimer()
		done(fmt.Sprintf("in-%d", i))
		b.StartTimer()
		apiTotal, inTotal = apiTotal+a, inTotal+in
		apiAll, inAll = append(apiAll, a), append(inAll, in)
	}
	b.StopTimer()
	b.ReportMetric(float64(apiTotal.Microseconds())/float64(b.N)/1000, "api-ms/job")
	b.ReportMetric(float64(inTotal.Microseconds())/float64(b.N)/1000, "in-process-ms/job")
	b.ReportMetric(float64(apiTotal)/float64(inTotal), "api/in-process")
	slices.Sort(apiAll)
	slices.Sort(inAll)
	b.Logf("N=%d submit to running: api %v (median %v), in process %v (median %v), ratio %.3f", b.N,
		apiTotal/time.Duration(b.N), apiAll[len(apiAll)/2], inTotal/time.Duration(b.N), inAll[len(inAll)/2], float64(apiTotal)/float64(inTotal))
}

// BenchmarkEventLatency measures what the event stream adds: from the
// manager handing an event (a GPU's cordon toggled) to an in-process
// watcher, to the client having it decoded from the SSE stream over
// loopback. It reports p50 and p99 in ms (goal p99 under 5 ms), and the
// p99 from the event's own time, which includes the store's fsyncs.
func BenchmarkEventLatency(b *testing.B) {
	n := newNode(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	uuid := n.m.GPUs()[0].Device.UUID
	stream, err := n.op.Events(ctx, 0)
	require.NoError(b, err)
	defer stream.Close()
	// The in-process watcher notes when the manager handed each event out.
	var mu sync.Mutex
	handed := map[uint64]time.Time{}
	watching := make(chan struct{})
	go func() { // ends with ctx
		ch := n.m.Watch(ctx, 0)
		close(watching)
		for ev := range ch {
			mu.Lock()
			handed[ev.Seq] = time.Now()
			mu.Unlock()
		}
	}()
	<-watching
	lat := make([]time.Duration, 0, b.N)
	total := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			require.NoError(b, n.m.Cordon(ctx, uuid, "bench"))
		} else {
			require.NoError(b, n.m.Uncordon(ctx, uuid))
		}
		for {
			ev, err := stream.Next()
			require.NoError(b, err)
			if ev.Type != "cordoned" && ev.Type != "uncordoned" {
				continue
			}
			now := time.Now()
			total = append(total, now.Sub(ev.Time))
			var at time.Time
			require.Eventually(b, func() bool {
				mu.Lock()
				defer mu.Unlock()
				at = handed[ev.Seq]
				return !at.IsZero()
			}, 5*time.Second, 50*time.Microsecond)
			lat = append(lat, max(0, now.Sub(at)))
			break
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(total)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pct := func(ds []time.Duration, p int) time.Duration { return ds[min(len(ds)-1, len(ds)*p/100)] }
	b.ReportMetric(ms(pct(lat, 50)), "p50-ms")
	b.ReportMetric(ms(pct(lat, 99)), "p99-ms")
	b.ReportMetric(ms(pct(total, 99)), "p99-from-event-time-ms")
	b.Logf("N=%d stream latency p50 %v p99 %v max %v; from the event's time p50 %v p99 %v", b.N,
		pct(lat, 50), pct(lat, 99), lat[len(lat)-1], pct(total, 50), pct(total, 99))
}
