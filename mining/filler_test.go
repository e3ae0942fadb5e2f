package mining

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
)

// fakeMinerBin is the fake miner built for the host, which the process
// runtime runs directly.
var fakeMinerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mining-bins")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeMinerBin = filepath.Join(dir, "fakeminer")
	if err := ociimage.BuildBinary(context.Background(), "github.com/gpufarm/gpufarm/internal/fakeminer", fakeMinerBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// recorder keeps the Filler's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) of(typ EventType) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.events {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// fillerNode is a simulated rig with a workload manager on the process
// runtime whose filler is a mining Filler of fake miners.
type fillerNode struct {
	t    *testing.T
	rig  *sim.Rig
	gpus *gpu.Manager
	devs []gpu.Device
	m    *workload.Manager
	f    *Filler
	ev   *recorder
	logs *syncLog
}

// fakeMiner is a configuration that runs the fake miner as T-Rex (or api)
// on the process runtime, at 100 MH/s.
func fakeMiner(name, api, coin string, extra ...string) Miner {
	a, err := AdapterByName(api)
	if err != nil {
		panic(err)
	}
	cmd := append([]string{fakeMinerBin, "-api", api, "-gpus", "1", "-hashrate", "100e6", "-avg-window", "300ms", "-log-interval", "0"}, extra...)
	return Miner{
		Name: name, Adapter: a, Image: "gpufarm.test/fakeminer:latest", Command: append(cmd, "--"),
		Algorithm: "ethash", Coin: coin, Pool: "stratum+tcp://127.0.0.1:3333", Wallet: "0x0000000000000000000000000000000000000000",
	}
}

func newFillerNode(t *testing.T, miners []Miner, opts ...FillerOption) *fillerNode {
	t.Helper()
	gm, rig := simGPUs(t, sim.PresetRTX3080Riser, 2)
	n := &fillerNode{t: t, rig: rig, gpus: gm, devs: gm.Devices(), ev: &recorder{}, logs: &syncLog{}}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	base := []FillerOption{
		WithLogger(log), WithEvents(n.ev.add), WithAPIPorts(freePortBase(t)),
		WithPollInterval(100*time.Millisecond, 80*time.Millisecond), WithStopGrace(2 * time.Second),
	}
	f, err := NewFiller(gm, miners, append(base, opts...)...)
	require.NoError(t, err)
	n.f = f
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	n.m, err = workload.New(gm, rt, workload.WithFiller(f), workload.WithStartHook(f), workload.WithLoad(f.Load(rig.SetGPULoad)),
		workload.WithPowerSettle(0), workload.WithTick(20*time.Millisecond), workload.WithHygieneTimeout(2*time.Second),
		workload.WithLogger(log))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = n.m.Run(ctx) }() // ends with ctx
	go func() { defer wg.Done(); _ = f.Run(ctx, n.m) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, w := range n.m.List(workload.Filter{}) {
			if !w.State.Final() {
				_, _ = rt.Stop(context.Background(), w.Container)
			}
		}
		_ = n.m.Close()
		_ = rt.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", n.logs.String())
		}
	})
	return n
}

// freePortBase is a base of API ports for the test, from its name and the
// process: in 20000-40000, unlikely to be another test's; a miner whose
// port is taken fails loudly.
func freePortBase(t *testing.T) int {
	t.Helper()
	h := 0
	for _, c := range t.Name() {
		h = h*31 + int(c)
	}
	// Below the kernel's ephemeral range (32768 and up), which other
	// tests' connections take ports from.
	return 20000 + (h+os.Getpid()*7)%12000/10*10
}

// status waits until every GPU's miner has a healthy reading that passes
// ok, and returns them.
func (n *fillerNode) status(ok func(MinerStatus) bool, why string) []MinerStatus {
	n.t.Helper()
	return waitStatus(n.t, n.f, len(n.devs), ok, why)
}

func control(t *testing.T, api, path string) {
	t.Helper()
	resp, err := http.Post("http://"+api+path, "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// The filler puts a miner on every GPU with the host network and the
// mining tenant, reads each miner's stats through its adapter, reports the
// GPU's hashrate to the manager as progress, and the simulated GPU's load
// (and power) follows the hashrate.
func TestFillerMinesAndReports(t *testing.T) {
	n := newFillerNode(t, []Miner{fakeMiner("trex-eth", "trex", "")},
		WithBenchmarks(Benchmark{Model: "RTX 3080", Algorithm: "ethash", Rate: 100e6, PowerW: 230}))
	st := n.status(func(s MinerStatus) bool { return s.Listed && s.GPUStats.Rate.Value > 99e6 }, "miners at 100 MH/s")
	for i, s := range st {
		assert.Equal(t, n.devs[i].UUID, s.GPU.UUID)
		assert.Equal(t, "trex-eth", s.Miner)
		assert.Equal(t, "trex", s.Reading.Stats.Miner)
		w, err := n.m.Get(s.Workload)
		require.NoError(t, err)
		assert.Equal(t, "mining", w.Spec.Tenant)
		assert.Equal(t, "host", string(w.Spec.Network))
		assert.Contains(t, w.Spec.Command, "--api-bind-http")
		assert.Contains(t, w.Spec.Command, s.API, "the API on the loopback port of the GPU")
	}
	// Progress events carry the GPU's hashrate.
	require.Eventually(t, func() bool { return progressSeen(n.m, st[0].Workload, "100.00 MH/s") },
		10*time.Second, 20*time.Millisecond)

	before := drawW(t, n.gpus, n.devs[0].UUID)
	control(t, st[0].API, "/control/hashrate?value=40e6")
	n.status(func(s MinerStatus) bool {
		return s.GPU.UUID != n.devs[0].UUID || s.GPUStats.Rate.Value < 41e6
	}, "the new rate")
	require.Eventually(t, func() bool { return drawW(t, n.gpus, n.devs[0].UUID) < before-50 }, 10*time.Second, 20*time.Millisecond,
		"the simulated GPU draws less at 40 %% of the rate (was %.0f W)", before)
	assert.Greater(t, drawW(t, n.gpus, n.devs[1].UUID), before-10, "the other GPU is unchanged")
}

func drawW(t *testing.T, gm *gpu.Manager, uuid string) float64 {
	s, err := gm.Sample(context.Background(), uuid)
	require.NoError(t, err)
	return s.PowerW.Value
}

// eventSeen reports whether the manager emitted an event of the type for
// the workload.
func eventSeen(m *workload.Manager, id string, typ workload.EventType) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	for ev := range m.Watch(ctx, 0) {
		if ev.ID == id && ev.Type == typ {
			return true
		}
	}
	return false
}

// progressSeen reports whether the workload reported progress containing
// text.
func progressSeen(m *workload.Manager, id, text string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	for ev := range m.Watch(ctx, 0) {
		if ev.ID == id && ev.Type == workload.EventProgress && ev.Progress != nil && strings.Contains(ev.Progress.Message, text) {
			return true
		}
	}
	return false
}

// A miner whose hashrate collapses is restarted through the manager; the
// GPU gets a new miner only after the backoff; each decision is an event
// with its reason.
func TestFillerWatchdogRestarts(t *testing.T) {
	n := newFillerNode(t, []Miner{fakeMiner("trex-eth", "trex", "")},
		WithWatchdog(WatchdogConfig{MinRate: 50e6, Grace: 300 * time.Millisecond, For: 500 * time.Millisecond,
			Unreachable: 2 * time.Second, Backoff: 1500 * time.Millisecond, MaxBackoff: 10 * time.Second}))
	st := n.status(func(s MinerStatus) bool { return s.GPUStats.Rate.Value > 99e6 }, "miners at 100 MH/s")
	victim := st[0]
	control(t, victim.API, "/control/hashrate?value=1e6")
	var restart Event
	require.Eventually(t, func() bool {
		if rs := n.ev.of(EventRestart); len(rs) > 0 {
			restart = rs[0]
			return true
		}
		return false
	}, 15*time.Second, 20*time.Millisecond)
	assert.Equal(t, victim.Workload, restart.Workload)
	assert.Equal(t, victim.GPU.UUID, restart.GPU)
	assert.Contains(t, restart.Reason, "rate 1.00 MH/s below the minimum 50.00 MH/s")
	require.Eventually(t, func() bool { return eventSeen(n.m, victim.Workload, workload.EventCancelled) }, 10*time.Second, 10*time.Millisecond,
		"the restart goes through the manager: the miner's workload is cancelled")

	// The GPU stays idle during the backoff, then mines again.
	var next MinerStatus
	n.status(func(s MinerStatus) bool {
		if s.GPU.UUID == victim.GPU.UUID && s.Workload != victim.Workload {
			next = s
			return true
		}
		return s.GPU.UUID != victim.GPU.UUID
	}, "a new miner on the GPU")
	nw, err := n.m.Get(next.Workload)
	require.NoError(t, err)
	assert.False(t, nw.StartedAt.Before(restart.Until.Add(-50*time.Millisecond)),
		"the new miner started at %v, before the backoff ended at %v", nw.StartedAt, restart.Until)
	assert.Len(t, n.ev.of(EventRestart), 1, "the other miner is left alone")
}

// A miner whose API stops answering, and one whose GPU goes missing from
// its stats, are restarted with those reasons.
func TestFillerWatchdogAPIAndMissingGPU(t *testing.T) {
	n := newFillerNode(t, []Miner{fakeMiner("trex-eth", "trex", "")},
		WithWatchdog(WatchdogConfig{Grace: 300 * time.Millisecond, For: 500 * time.Millisecond,
			Unreachable: 500 * time.Millisecond, Backoff: 20 * time.Second}))
	st := n.status(func(s MinerStatus) bool { return s.GPUStats.Rate.Value > 99e6 }, "miners at 100 MH/s")
	control(t, st[0].API, "/control/fault?mode=hang")
	control(t, st[1].API, "/control/gpus?value=0")
	require.Eventually(t, func() bool { return len(n.ev.of(EventRestart)) == 2 }, 15*time.Second, 20*time.Millisecond)
	reasons := map[string]string{}
	for _, ev := range n.ev.of(EventRestart) {
		reasons[ev.GPU] = ev.Reason
	}
	assert.Contains(t, reasons[st[0].GPU.UUID], "miner API failing for")
	assert.Contains(t, reasons[st[0].GPU.UUID], "hung")
	assert.Contains(t, reasons[st[1].GPU.UUID], "GPU missing from the miner's stats")
}

// With coin prices, each GPU mines the more profitable configuration; a
// configuration that becomes better by more than the gain for the ticks
// replaces the miner.
func TestFillerSwitchesToTheMoreProfitable(t *testing.T) {
	market := &switchableMarket{}
	market.set(map[string]float64{"ETH": 0.05, "ETC": 0.01})
	n := newFillerNode(t, []Miner{fakeMiner("eth", "trex", "ETH"), fakeMiner("etc", "lolminer", "ETC")},
		WithCoins(market, 100*time.Millisecond), WithBTCPrice(60000), WithTariff(0.10), WithSwitching(10, 3),
		WithBenchmarks(Benchmark{Model: "RTX 3080", Algorithm: "ethash", Rate: 100e6, PowerW: 230}))
	st := n.status(func(s MinerStatus) bool { return s.Miner == "eth" }, "ETH pays more")
	e, ok := n.f.Estimate(st[0].GPU.UUID)
	require.True(t, ok)
	assert.Equal(t, "eth", e.Miner)
	assert.Positive(t, e.ProfitPerHour)

	market.set(map[string]float64{"ETH": 0.01, "ETC": 0.05})
	st = n.status(func(s MinerStatus) bool { return s.Miner == "etc" }, "ETC pays more now")
	sw := n.ev.of(EventSwitch)
	require.Len(t, sw, 2, "one switch per GPU")
	assert.Contains(t, sw[0].Reason, "for 3 ticks")
	assert.Equal(t, "etc", sw[0].Miner)
	assert.Empty(t, n.ev.of(EventRestart), "a switch is not a restart: no backoff")
	assert.Equal(t, "lolminer", st[0].Reading.Stats.Miner)

	// The economic policy weighs an offer against what the GPUs earn now.
	require.Eventually(t, func() bool { e, ok := n.f.Estimate(n.devs[0].UUID); return ok && e.Miner == "etc" }, 10*time.Second, 20*time.Millisecond)
	e, _ = n.f.Estimate(n.devs[0].UUID)
	policy, err := n.f.Policy(20)
	require.NoError(t, err)
	ok, why := policy.Displace(workload.Spec{PricePerGPUHour: e.ProfitPerHour * 1.1}, n.devs)
	assert.False(t, ok, "10 %% above mining is below the 20 %% margin")
	assert.Contains(t, why, "does not beat mining on GPU 0")
	ok, _ = policy.Displace(workload.Spec{PricePerGPUHour: e.ProfitPerHour * 1.3}, n.devs)
	assert.True(t, ok)
}

// switchableMarket prices two Ethash coins with the difficulty and reward
// of the 2020 WhatToMine sample, at prices the test sets.
type switchableMarket struct {
	mu     sync.Mutex
	prices map[string]float64
}

func (s *switchableMarket) set(p map[string]float64) {
	s.mu.Lock()
	s.prices = p
	s.mu.Unlock()
}

func (s *switchableMarket) Market(context.Context) (Market, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m Market
	for tag, p := range s.prices {
		m.Coins = append(m.Coins, Coin{Tag: tag, Algorithm: "Ethash", BlockReward: 2, Difficulty: 2.27050237419557e15, PriceBTC: p})
	}
	return m, errors.Join()
}

// The tune is applied once the miner runs and is gone when paid work
// takes the GPU.
func TestFillerTunesAndPaidWorkGetsDefaults(t *testing.T) {
	n := newFillerNode(t, []Miner{fakeMiner("trex-eth", "trex", "")},
		WithProfiles(Profile{Model: "RTX 3080", Algorithm: "ethash", PowerLimitW: 220, MinClockMHz: 1000, MaxClockMHz: 1100}))
	n.status(func(s MinerStatus) bool { return s.Tuned }, "tuned miners")
	for _, d := range n.devs {
		assert.Equal(t, 220.0, powerLimit(t, n.gpus, d.UUID))
	}
	assert.Len(t, n.ev.of(EventTuned), 2)

	ctx := context.Background()
	_, err := n.m.Submit(ctx, workload.Spec{ID: "job", Kind: workload.KindBatch, Tenant: "acme", Image: "x",
		Command: []string{fakeMinerBin, "-listen", "127.0.0.1:0", "-log-interval", "0"}, GPUs: workload.GPURequest{Count: 1}})
	require.NoError(t, err)
	var job workload.Workload
	require.Eventually(t, func() bool { job, _ = n.m.Get("job"); return job.State == workload.StateRunning }, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, 320.0, powerLimit(t, n.gpus, job.GPUs[0]), "paid work runs at the default limit")
	require.Eventually(t, func() bool { return len(n.ev.of(EventUntuned)) == 1 }, 10*time.Second, 10*time.Millisecond)
	for _, d := range n.devs {
		if d.UUID != job.GPUs[0] {
			assert.Equal(t, 220.0, powerLimit(t, n.gpus, d.UUID), "the other miner keeps its tune")
		}
	}
}

// Bad configurations are refused at construction, naming the field.
func TestNewFillerBadInput(t *testing.T) {
	gm, _ := simGPUs(t, sim.PresetRTX3080Riser, 1)
	good := fakeMiner("a", "trex", "")
	for _, tc := range []struct {
		name  string
		edit  func(*Miner)
		opts  []FillerOption
		wants []string
	}{
		{"unknown algorithm", func(m *Miner) { m.Algorithm = "scrypt" }, nil, []string{"Miners[0]", "Launch.Algorithm"}},
		{"wallet with shell", func(m *Miner) { m.Wallet = "0xabc;reboot" }, nil, []string{"Miners[0]", "Launch.Wallet"}},
		{"pool with a space", func(m *Miner) { m.Pool = "stratum+tcp://pool .example:1" }, nil, []string{"Launch.Pool"}},
		{"no image", func(m *Miner) { m.Image = "" }, nil, []string{"Miners[0].Image"}},
		{"no adapter", func(m *Miner) { m.Adapter = nil }, nil, []string{"Miners[0].Adapter"}},
		{"pool fee", func(m *Miner) { m.PoolFee = 2 }, nil, []string{"Miners[0].PoolFee"}},
		{"profile out of range", func(*Miner) {}, []FillerOption{WithProfiles(Profile{Model: "RTX 3080", PowerLimitW: 500})},
			[]string{"Profiles[0].PowerLimitW"}},
		{"watchdog", func(*Miner) {}, []FillerOption{WithWatchdog(WatchdogConfig{For: -1})}, []string{"WatchdogConfig.For"}},
		{"tariff", func(*Miner) {}, []FillerOption{WithTariff(-1)}, []string{"WithTariff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.edit(&m)
			_, err := NewFiller(gm, []Miner{m}, tc.opts...)
			require.ErrorIs(t, err, ErrInvalid)
			for _, w := range tc.wants {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	_, err := NewFiller(gm, []Miner{good, good})
	assert.ErrorContains(t, err, "used twice")
}
