package mining

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/workload"
)

// On real containerd: the fake miner image, as T-Rex, runs under the
// mining Filler with the host network on two simulated A40s; the T-Rex
// adapter reads its stats through its API; each GPU is tuned while it
// mines; the watchdog restarts a miner whose hashrate is dropped through
// the control endpoint, after its backoff; a paid job takes a GPU and the
// miner's tune is gone from it.
func TestContainerdMiningFiller(t *testing.T) {
	containerdtest.Require(t) // before the image build: skips here, fails in CI
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pid := os.Getpid()
	miningTenant, customerTenant := fmt.Sprintf("mining-%d", pid), fmt.Sprintf("acme-%d", pid)
	const ref = "gpufarm.test/fakeminer:latest"
	tar := filepath.Join(t.TempDir(), "fakeminer.tar")
	require.NoError(t, ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/fakeminer", Ref: ref}, tar))
	logDir, cdiDir := filepath.Join(t.TempDir(), "logs"), filepath.Join(t.TempDir(), "cdi")
	d := containerdtest.Start(t)

	p, err := sim.PresetByName(sim.PresetA40)
	require.NoError(t, err)
	p.Cards = p.Cards[:2]
	rig, err := sim.New(p)
	require.NoError(t, err)
	gm, err := gpu.New(ctx, rig)
	require.NoError(t, err)
	defer gm.Close()
	devs := gm.Devices()
	cdi, err := containerd.WriteSimulatedCDI(cdiDir, devs)
	require.NoError(t, err)

	var logs syncLog
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rt, err := containerd.New(ctx, containerd.WithAddress(d.Address), containerd.WithLogDir(logDir), containerd.WithTenancy(isolation.DefaultTenancy(miningTenant)),
		containerd.WithCDISpecDirs(cdi.SpecDir), containerd.WithLogger(log.With("component", "isolation")))
	require.NoError(t, err)
	defer rt.Close()
	for _, tenant := range []string{miningTenant, customerTenant} {
		f, err := os.Open(tar)
		require.NoError(t, err)
		_, err = rt.Import(ctx, tenant, f)
		_ = f.Close()
		require.NoError(t, err)
	}

	trex, err := AdapterByName("trex")
	require.NoError(t, err)
	rec := &recorder{}
	const tunedW = 220.0
	filler, err := NewFiller(gm, []Miner{{
		Name: "trex-ethash", Adapter: trex, Image: ref,
		// The fake miner reads T-Rex's own command line after "--".
		Command:   []string{"-api", "trex", "-gpus", "1", "-hashrate", "100e6", "-avg-window", "500ms", "-log-interval", "0", "--"},
		Algorithm: "ethash", Pool: "stratum+tcp://127.0.0.1:3333", Wallet: "0x0000000000000000000000000000000000000000", Worker: "rig1",
	}},
		WithTenant(miningTenant), WithAPIPorts(freePortBase(t)), WithLogger(log.With("component", "mining")), WithEvents(rec.add),
		WithPollInterval(200*time.Millisecond, 150*time.Millisecond), WithStopGrace(2*time.Second),
		WithProfiles(Profile{Model: "A40", Algorithm: "ethash", PowerLimitW: tunedW, MinClockMHz: 900, MaxClockMHz: 1200}),
		WithWatchdog(WatchdogConfig{MinRate: 50e6, Grace: time.Second, For: time.Second, Unreachable: 5 * time.Second,
			Backoff: 2 * time.Second, MaxBackoff: time.Minute}),
		WithBenchmarks(Benchmark{Model: "A40", Algorithm: "ethash", Rate: 100e6, PowerW: 220}))
	require.NoError(t, err)
	m, err := workload.New(gm, rt, workload.WithFiller(filler), workload.WithStartHook(filler), workload.WithLoad(filler.Load(rig.SetGPULoad)),
		workload.WithPowerSettle(0), workload.WithTick(50*time.Millisecond), workload.WithHygieneTimeout(3*time.Second),
		workload.WithTenancy(isolation.DefaultTenancy(miningTenant)), workload.WithLogger(log.With("component", "workload")))
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = m.Run(runCtx) }() // ends with runCtx
	go func() { defer wg.Done(); _ = filler.Run(runCtx, m) }()
	defer func() {
		stop()
		wg.Wait()
		_ = m.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	}()
	start := time.Now()
	since := func() string { return time.Since(start).Round(10 * time.Millisecond).String() }

	// Both GPUs mine; the adapter reads 100 MH/s through the API on the
	// host network; both are tuned.
	st := waitStatus(t, filler, len(devs), func(s MinerStatus) bool {
		return s.Listed && s.GPUStats.Rate.Value > 99e6 && s.Tuned
	}, "two tuned miners at 100 MH/s")
	for _, s := range st {
		w, err := m.Get(s.Workload)
		require.NoError(t, err)
		assert.Equal(t, miningTenant, w.Spec.Tenant)
		assert.Equal(t, "host", string(w.Spec.Network))
		assert.Equal(t, tunedW, powerLimit(t, gm, s.GPU.UUID))
		t.Logf("%s: GPU %d (%s) mines in container %s: %s at %s reports %.1f MH/s, %d accepted; power limit %.0f W",
			since(), s.GPU.Index, s.GPU.UUID, w.Container.ID, s.Reading.Stats.Miner, s.API,
			s.GPUStats.Rate.Value/1e6, s.Reading.Stats.Shares.Accepted.Value, powerLimit(t, gm, s.GPU.UUID))
	}

	// The watchdog restarts the miner whose hashrate drops, after its
	// backoff.
	victim := st[0]
	control(t, victim.API, "/control/hashrate?value=5e6")
	t.Logf("%s: hashrate of the miner on GPU %d set to 5 MH/s through %s/control/hashrate", since(), victim.GPU.Index, victim.API)
	var restart Event
	require.Eventually(t, func() bool {
		rs := rec.of(EventRestart)
		if len(rs) > 0 {
			restart = rs[0]
		}
		return len(rs) > 0
	}, 30*time.Second, 20*time.Millisecond, "a restart")
	assert.Equal(t, victim.Workload, restart.Workload)
	assert.Contains(t, restart.Reason, "below the minimum 50.00 MH/s")
	t.Logf("%s: watchdog: restart %s: %s; GPU held until +%v", since(), restart.Workload, restart.Reason, restart.Until.Sub(restart.Time))
	st = waitStatus(t, filler, len(devs), func(s MinerStatus) bool {
		return s.GPUStats.Rate.Value > 99e6 && s.Tuned && s.Workload != victim.Workload
	}, "a new tuned miner on the restarted GPU")
	var again MinerStatus
	for _, s := range st {
		if s.GPU.UUID == victim.GPU.UUID {
			again = s
		}
	}
	w, err := m.Get(again.Workload)
	require.NoError(t, err)
	assert.False(t, w.StartedAt.Before(restart.Until.Add(-100*time.Millisecond)), "the GPU waited for the backoff")
	t.Logf("%s: GPU %d mines again in %s (started %v after the restart), %.1f MH/s",
		since(), again.GPU.Index, w.Container.ID, w.StartedAt.Sub(restart.Time).Round(10*time.Millisecond), again.GPUStats.Rate.Value/1e6)

	// A paid job takes a GPU: the miner's tune is gone from it.
	_, err = m.Submit(ctx, workload.Spec{ID: "job", Kind: workload.KindBatch, Tenant: customerTenant, Image: ref,
		Command: []string{"-listen", "127.0.0.1:0", "-log-interval", "0"}, GPUs: workload.GPURequest{Count: 1},
		PricePerGPUHour: 1})
	require.NoError(t, err)
	var job workload.Workload
	require.Eventually(t, func() bool {
		job, _ = m.Get("job")
		return job.State == workload.StateRunning
	}, 60*time.Second, 20*time.Millisecond, "the paid job runs")
	paid := job.GPUs[0]
	assert.Equal(t, 300.0, powerLimit(t, gm, paid), "the A40's default power limit, not the mining tune")
	s, err := gm.Sample(ctx, paid)
	require.NoError(t, err)
	assert.Greater(t, s.SMClockMHz.Value, 1200, "the clocks are unlocked")
	require.Eventually(t, func() bool { return len(rec.of(EventUntuned)) > 0 }, 10*time.Second, 20*time.Millisecond)
	t.Logf("%s: paid job runs on %s: power limit %.0f W, SM clock %d MHz; %s", since(), paid,
		powerLimit(t, gm, paid), s.SMClockMHz.Value, rec.of(EventUntuned)[len(rec.of(EventUntuned))-1].Reason)
	for _, dv := range devs {
		if dv.UUID != paid {
			assert.Equal(t, tunedW, powerLimit(t, gm, dv.UUID), "the other GPU keeps mining, tuned")
		}
	}
	var lines []string
	for _, ev := range rec.all() {
		lines = append(lines, fmt.Sprintf("  %s %s gpu=%s %s: %s", ev.Time.Format("15:04:05.000"), ev.Type, shortUUID(ev.GPU), ev.Workload, ev.Reason))
	}
	t.Logf("filler events:\n%s", strings.Join(lines, "\n"))
}

func shortUUID(u string) string {
	if len(u) > 12 {
		return u[:12]
	}
	return u
}

// waitStatus waits until n miners have a healthy reading that passes ok.
func waitStatus(t *testing.T, f *Filler, n int, ok func(MinerStatus) bool, what string) []MinerStatus {
	t.Helper()
	var st []MinerStatus
	require.Eventually(t, func() bool {
		st = f.Status()
		if len(st) != n {
			return false
		}
		for _, s := range st {
			if !s.Reading.Healthy || !ok(s) {
				return false
			}
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, what)
	return st
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
