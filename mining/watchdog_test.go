package mining

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

func newTestWatchdog(t *testing.T) (*Watchdog, *sim.ManualClock) {
	t.Helper()
	clk := sim.NewClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	w, err := NewWatchdog(WatchdogConfig{Grace: time.Minute, For: time.Minute, Unreachable: 2 * time.Minute,
		Backoff: 10 * time.Second, MaxBackoff: 35 * time.Second, ResetAfter: time.Hour}, clk)
	require.NoError(t, err)
	return w, clk
}

func rate(v float64) Observation { return Observation{Rate: gpu.Some(v), Unit: UnitHashes} }

// observe feeds the same observation every 10 s for d and returns the
// first restart decision.
func observe(w *Watchdog, clk *sim.ManualClock, o Observation, d time.Duration) (bool, string, time.Duration) {
	for t := time.Duration(0); t <= d; t += 10 * time.Second {
		if r, why := w.Observe("GPU-1", o); r {
			return true, why, t
		}
		clk.Advance(10 * time.Second)
	}
	return false, "", d
}

// A rate that falls below half its running median for a minute restarts
// the miner; the grace after start and a short dip do not.
func TestWatchdogLowRate(t *testing.T) {
	w, clk := newTestWatchdog(t)
	w.Start("GPU-1", "mine-1")
	r, _, _ := observe(w, clk, rate(0), 50*time.Second)
	assert.False(t, r, "zero during the grace: the DAG is being built")
	r, _, _ = observe(w, clk, rate(100e6), 5*time.Minute)
	assert.False(t, r)
	r, _, _ = observe(w, clk, rate(20e6), 40*time.Second)
	assert.False(t, r, "a dip shorter than For")
	r, _, _ = observe(w, clk, rate(100e6), time.Minute)
	assert.False(t, r)
	r, why, after := observe(w, clk, rate(20e6), 5*time.Minute)
	require.True(t, r)
	assert.Equal(t, time.Minute, after)
	assert.Equal(t, "rate 20.00 MH/s below 50 % of its median 100.00 MH/s for 1m0s", why)
}

// An absolute floor, a GPU missing from the stats and an API that stays
// down each restart the miner, with their reasons.
func TestWatchdogReasons(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  WatchdogConfig
		o    Observation
		want string
		at   time.Duration
	}{
		{"floor", WatchdogConfig{MinRate: 50e6, MinShareOfMedian: -1}, rate(10e6), "rate 10.00 MH/s below the minimum 50.00 MH/s for 1m0s", time.Minute},
		{"missing GPU", WatchdogConfig{}, Observation{Missing: true}, "GPU missing from the miner's stats for 1m0s", time.Minute},
		{"unreachable", WatchdogConfig{}, Observation{Err: ErrUnavailable}, "miner API failing for 2m0s: mining: miner API unavailable", 2 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := sim.NewClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
			cfg := tc.cfg
			cfg.Grace, cfg.For, cfg.Unreachable = time.Minute, time.Minute, 2*time.Minute
			w, err := NewWatchdog(cfg, clk)
			require.NoError(t, err)
			w.Start("GPU-1", "m")
			clk.Advance(time.Minute)
			r, why, after := observe(w, clk, tc.o, 10*time.Minute)
			require.True(t, r)
			assert.Equal(t, tc.want, why)
			assert.Equal(t, tc.at, after)
		})
	}
}

// Restarts back off: 10 s, 20 s, then the 35 s cap; an hour of good
// mining resets the count.
func TestWatchdogBackoff(t *testing.T) {
	w, clk := newTestWatchdog(t)
	for _, want := range []time.Duration{10 * time.Second, 20 * time.Second, 35 * time.Second, 35 * time.Second} {
		w.Start("GPU-1", "m")
		now := clk.Now()
		until := w.Restarted("GPU-1")
		assert.Equal(t, want, until.Sub(now))
		ok, u := w.Allowed("GPU-1")
		assert.False(t, ok)
		assert.Equal(t, until, u)
		clk.Advance(want)
		ok, _ = w.Allowed("GPU-1")
		assert.True(t, ok, "after the backoff")
	}
	assert.Equal(t, 4, w.Restarts("GPU-1"))
	w.Start("GPU-1", "m")
	observe(w, clk, rate(100e6), 61*time.Minute+time.Minute)
	assert.Equal(t, 0, w.Restarts("GPU-1"), "reset after an hour of good mining")
	now := clk.Now()
	assert.Equal(t, 10*time.Second, w.Restarted("GPU-1").Sub(now))
	ok, _ := w.Allowed("GPU-2")
	assert.True(t, ok, "a GPU never restarted")
}

func TestWatchdogBadConfig(t *testing.T) {
	_, err := NewWatchdog(WatchdogConfig{For: -time.Second, MinRate: -1}, nil)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "WatchdogConfig.For")
	assert.Contains(t, err.Error(), "WatchdogConfig.MinRate")
	_, err = NewWatchdog(WatchdogConfig{Backoff: time.Minute, MaxBackoff: time.Second}, nil)
	assert.ErrorContains(t, err, "WatchdogConfig.MaxBackoff")
}
