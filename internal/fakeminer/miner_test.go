package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for the miner.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)} }

func baseConfig() config {
	return config{name: "t-rex", algo: "ethash", gpus: 2, gpuName: "RTX 3080", hashrateHs: 100e6, difficulty: 1e9}
}

func getJSON(t *testing.T, h http.Handler, path string, v any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), v))
}

func TestSharesFollowHashesOverTime(t *testing.T) {
	tests := []struct {
		name        string
		cfg         func(*config)
		elapsed     time.Duration
		accepted    int64
		rejected    int64
		hashesTotal float64
	}{
		{"no time no shares", func(*config) {}, 0, 0, 0, 0},
		// 100 MH/s * 25 s = 2.5e9 hashes = 2 shares at difficulty 1e9.
		{"two shares after 25s", func(*config) {}, 25 * time.Second, 2, 0, 2.5e9},
		{"every third rejected", func(c *config) { c.rejectEvery = 3 }, 85 * time.Second, 6, 2, 8.5e9},
		{"zero hashrate no shares", func(c *config) { c.hashrateHs = 0 }, time.Hour, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.cfg(&cfg)
			clk := newClock()
			m := newMiner(cfg, clk.now)
			clk.advance(tc.elapsed)
			st := m.snapshot()
			assert.Equal(t, tc.accepted, st.accepted)
			assert.Equal(t, tc.rejected, st.rejected)
			assert.InDelta(t, tc.hashesTotal, st.hashesTotal, 1)
			assert.Equal(t, tc.elapsed, st.uptime)
		})
	}
}

func TestSetHashrateChangesIntegralAndWindows(t *testing.T) {
	clk := newClock()
	m := newMiner(baseConfig(), clk.now)
	clk.advance(30 * time.Second) // 3e9 hashes at 100 MH/s
	m.setHashrate(50e6)
	clk.advance(30 * time.Second) // + 1.5e9 at 50 MH/s
	st := m.snapshot()
	assert.InDelta(t, 4.5e9, st.hashesTotal, 1)
	assert.Equal(t, int64(4), st.accepted)
	assert.Equal(t, 50e6, st.current)
	require.NotNil(t, st.avg10s)
	assert.InDelta(t, 50e6, *st.avg10s, 1, "10 s window sees only the new rate")
	require.NotNil(t, st.avg60s)
	assert.InDelta(t, 75e6, *st.avg60s, 1, "60 s window averages both rates")
	assert.Equal(t, 100e6, st.highest)
}

func TestHistoryIsPrunedButSharesKept(t *testing.T) {
	clk := newClock()
	m := newMiner(baseConfig(), clk.now)
	// Two days of hourly changes alternating 100/0 MH/s.
	for i := 0; i < 48; i++ {
		clk.advance(time.Hour)
		if i%2 == 0 {
			m.setHashrate(0)
		} else {
			m.setHashrate(100e6)
		}
	}
	st := m.snapshot()
	// 24 hours at 100 MH/s in total.
	assert.InDelta(t, 24*3600*100e6, st.hashesTotal, 10)
	assert.Equal(t, int64(24*3600*100e6/1e9), st.accepted)
	m.mu.Lock()
	n := len(m.segs)
	m.mu.Unlock()
	assert.LessOrEqual(t, n, 26, "segments older than a day are dropped")
	require.NotNil(t, st.avgDay)
	assert.InDelta(t, 50e6, *st.avgDay, 1)
}

func TestTRexSummary(t *testing.T) {
	clk := newClock()
	cfg := baseConfig()
	cfg.gpus = 3
	m := newMiner(cfg, clk.now)
	clk.advance(100 * time.Second)
	var s map[string]any
	getJSON(t, m.handler(), "/summary", &s)

	// Every top-level key of the real T-Rex 0.26.4 reply is present.
	fixture := readFixture(t, "t-rex", "summary_0.26.4_api4.1_5gpu_kawpow_win.json")
	assert.Subset(t, keys(s), keys(fixture))
	gpusFixture := fixture["gpus"].([]any)
	gpus := s["gpus"].([]any)
	require.Len(t, gpus, 3)
	assert.Subset(t, keys(gpus[0].(map[string]any)), keys(gpusFixture[1].(map[string]any)))

	assert.Equal(t, "t-rex", s["name"])
	assert.Equal(t, "ethash", s["algorithm"])
	assert.EqualValues(t, 100e6, s["hashrate"])
	assert.EqualValues(t, 100e6, s["hashrate_minute"])
	assert.EqualValues(t, 10, s["accepted_count"]) // 1e10 hashes / 1e9
	assert.EqualValues(t, 0, s["rejected_count"])
	assert.EqualValues(t, 100, s["uptime"])
	assert.EqualValues(t, 3, s["gpu_total"])

	var sumRate, sumShares float64
	for i, g := range gpus {
		gm := g.(map[string]any)
		assert.EqualValues(t, i, gm["device_id"])
		assert.Equal(t, "RTX 3080", gm["name"])
		assert.Greater(t, gm["power"], 0.0)
		assert.Greater(t, gm["temperature"], 0.0)
		assert.Len(t, gm["uuid"], 32)
		sumRate += gm["hashrate"].(float64)
		sumShares += gm["shares"].(map[string]any)["accepted_count"].(float64)
	}
	assert.EqualValues(t, 100e6, sumRate, "per-GPU hashrates add up to the total")
	assert.EqualValues(t, 10, sumShares, "per-GPU shares add up to the total")
}

func TestXMRigSummary(t *testing.T) {
	clk := newClock()
	m := newMiner(baseConfig(), clk.now)
	clk.advance(100 * time.Second)
	var s map[string]any
	getJSON(t, m.handler(), "/2/summary", &s)

	fixture := readFixture(t, "xmrig", "2-summary_6.12.0-mo1_arm-cpu_moneroocean.json")
	assert.Subset(t, keys(s), keys(fixture))
	assert.Subset(t, keys(s["results"].(map[string]any)), keys(fixture["results"].(map[string]any)))
	assert.Subset(t, keys(s["connection"].(map[string]any)), keys(fixture["connection"].(map[string]any)))

	hr := s["hashrate"].(map[string]any)
	assert.Equal(t, []any{100e6, 100e6, 100e6}, hr["total"])
	assert.NotContains(t, hr, "threads", "/2/summary has no per-thread rates")
	res := s["results"].(map[string]any)
	assert.EqualValues(t, 10, res["shares_good"])
	assert.EqualValues(t, 10, res["shares_total"])
	assert.EqualValues(t, 1e10, res["hashes_total"])
	assert.Equal(t, "ethash", s["algo"])
}

func TestWarmupWindowsFillOverTime(t *testing.T) {
	clk := newClock()
	cfg := baseConfig()
	cfg.warmup = true
	m := newMiner(cfg, clk.now)
	h := m.handler()
	clk.advance(30 * time.Second)

	var x struct {
		Hashrate struct {
			Total []*float64 `json:"total"`
		} `json:"hashrate"`
	}
	getJSON(t, h, "/2/summary", &x)
	require.Len(t, x.Hashrate.Total, 3)
	require.NotNil(t, x.Hashrate.Total[0])
	assert.Equal(t, 100e6, *x.Hashrate.Total[0])
	assert.Nil(t, x.Hashrate.Total[1], "60 s window is null after 30 s, like XMRig")
	assert.Nil(t, x.Hashrate.Total[2])

	var tr struct {
		Hashrate     int64 `json:"hashrate"`
		HashrateHour int64 `json:"hashrate_hour"`
		HashrateDay  int64 `json:"hashrate_day"`
	}
	getJSON(t, h, "/summary", &tr)
	assert.Equal(t, int64(100e6), tr.Hashrate, "T-Rex short window averages over the uptime")
	assert.Zero(t, tr.HashrateHour, "T-Rex reports 0 until the hour is full")
	assert.Zero(t, tr.HashrateDay)
}

func TestControlHashrate(t *testing.T) {
	tests := []struct {
		method, query string
		code          int
		want          float64 // rate after the call
	}{
		{http.MethodPost, "value=50000000", http.StatusOK, 50e6},
		{http.MethodPut, "value=0", http.StatusOK, 0},
		{http.MethodPost, "value=1.5e8", http.StatusOK, 150e6},
		{http.MethodPost, "value=-1", http.StatusBadRequest, 100e6},
		{http.MethodPost, "value=abc", http.StatusBadRequest, 100e6},
		{http.MethodPost, "value=NaN", http.StatusBadRequest, 100e6},
		{http.MethodPost, "", http.StatusBadRequest, 100e6},
		{http.MethodDelete, "value=1", http.StatusMethodNotAllowed, 100e6},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.query, func(t *testing.T) {
			clk := newClock()
			m := newMiner(baseConfig(), clk.now)
			h := m.handler()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, "/control/hashrate?"+tc.query, nil))
			assert.Equal(t, tc.code, rec.Code, rec.Body.String())

			clk.advance(20 * time.Second)
			var got struct{ Hashrate float64 }
			getJSON(t, h, "/control/hashrate", &got)
			assert.Equal(t, tc.want, got.Hashrate)
			var tr struct {
				GPUs []struct {
					HashrateInstant int64 `json:"hashrate_instant"`
				} `json:"gpus"`
			}
			getJSON(t, h, "/summary", &tr)
			var sum int64
			for _, g := range tr.GPUs {
				sum += g.HashrateInstant
			}
			assert.Equal(t, int64(tc.want), sum, "T-Rex instant rate follows the control value")
		})
	}
}

func TestLogLine(t *testing.T) {
	clk := newClock()
	m := newMiner(baseConfig(), clk.now)
	clk.advance(95 * time.Second)
	assert.Equal(t, "20240501 12:01:35 t-rex ethash: 100.00 MH/s, [A:9, R:0], uptime 1m35s", m.logLine(m.snapshot()))
}

func TestFormatting(t *testing.T) {
	assert.Equal(t, "4.29 G", siString(4.29e9))
	assert.Equal(t, "512.00", siString(512))
	assert.Equal(t, "0.00H/W", efficiency(0, 0))
	assert.Equal(t, "175kH/W", efficiency(30.45e6, 174))
	assert.Equal(t, "12.50H/W", efficiency(2500, 200))
	assert.Equal(t, "95.50 MH/s", humanRate(95.5e6))
}

func readFixture(t *testing.T, miner, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", miner, name))
	require.NoError(t, err, "provenance in testdata/SOURCES.txt")
	var v map[string]any
	require.NoError(t, json.Unmarshal(b, &v))
	return v
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func Example_summary() {
	clk := newClock()
	m := newMiner(config{name: "t-rex", algo: "ethash", gpus: 2, gpuName: "RTX 3080", hashrateHs: 95.5e6, difficulty: 4e9}, clk.now)
	clk.advance(10 * time.Minute)
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/summary", nil))
	var s struct {
		Hashrate      int64 `json:"hashrate"`
		AcceptedCount int64 `json:"accepted_count"`
		GPUs          []struct {
			Name     string `json:"name"`
			Hashrate int64  `json:"hashrate"`
			Power    int    `json:"power"`
		} `json:"gpus"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &s)
	fmt.Println("total H/s:", s.Hashrate, "accepted:", s.AcceptedCount)
	for _, g := range s.GPUs {
		fmt.Println(strings.Join([]string{g.Name, fmt.Sprint(g.Hashrate), fmt.Sprint(g.Power, " W")}, ", "))
	}
	// Output:
	// total H/s: 95500000 accepted: 14
	// RTX 3080, 47750000, 120 W
	// RTX 3080, 47750000, 120 W
}
