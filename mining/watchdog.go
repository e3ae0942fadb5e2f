package mining

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// WatchdogConfig says when a miner is restarted. Zero fields take the
// defaults written next to them.
type WatchdogConfig struct {
	// MinRate restarts a miner whose rate on its GPU stays below it, in the
	// miner's unit, for For. 0 sets no absolute floor.
	MinRate float64
	// MinShareOfMedian restarts a miner whose rate stays below this share
	// of its own running median (over MedianWindow) for For (default 0.5;
	// negative turns it off).
	MinShareOfMedian float64
	MedianWindow     time.Duration // default 10 min
	// For is how long a low rate or a GPU missing from the miner's stats
	// must last (default 2 min).
	For time.Duration
	// Grace after a start, when the rate is not judged: miners build their
	// DAG first (default 2 min).
	Grace time.Duration
	// Unreachable is how long, after the grace, the miner's API may fail
	// before the miner is restarted (default 2 min).
	Unreachable time.Duration
	// Backoff is how long a restarted GPU waits before a miner is started
	// on it again; it doubles with each restart up to MaxBackoff (default
	// 30 s and 30 min), and is back to Backoff once a miner has run well
	// for ResetAfter (default 30 min).
	Backoff, MaxBackoff, ResetAfter time.Duration
}

func (c WatchdogConfig) withDefaults() WatchdogConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MinShareOfMedian == 0 {
		c.MinShareOfMedian = 0.5
	}
	def(&c.MedianWindow, 10*time.Minute)
	def(&c.For, 2*time.Minute)
	def(&c.Grace, 2*time.Minute)
	def(&c.Unreachable, 2*time.Minute)
	def(&c.Backoff, 30*time.Second)
	def(&c.MaxBackoff, 30*time.Minute)
	def(&c.ResetAfter, 30*time.Minute)
	return c
}

func (c WatchdogConfig) validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"MedianWindow", c.MedianWindow}, {"For", c.For}, {"Grace", c.Grace}, {"Unreachable", c.Unreachable},
		{"Backoff", c.Backoff}, {"MaxBackoff", c.MaxBackoff}, {"ResetAfter", c.ResetAfter},
	} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("WatchdogConfig.%s: %v is negative", f.name, f.d))
		}
	}
	if c.MinRate < 0 {
		errs = append(errs, fmt.Errorf("WatchdogConfig.MinRate: %v is negative", c.MinRate))
	}
	if c.MinShareOfMedian >= 1 {
		errs = append(errs, fmt.Errorf("WatchdogConfig.MinShareOfMedian: %v: want less than 1 (0.5 restarts below half the median)", c.MinShareOfMedian))
	}
	if c.MaxBackoff != 0 && c.MaxBackoff < c.Backoff {
		errs = append(errs, fmt.Errorf("WatchdogConfig.MaxBackoff: %v is less than Backoff %v", c.MaxBackoff, c.Backoff))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// Observation is what a poll says of a miner's GPU.
type Observation struct {
	// Err is the poll's error; nil when the miner answered.
	Err error
	// Missing reports that the miner's stats list GPUs, but not this one.
	Missing bool
	// Rate is the GPU's rate (the miner's total when it lists no GPUs).
	Rate gpu.Optional[float64]
	Unit Unit
}

// Watchdog decides when a miner is broken enough to restart, and how long
// its GPU waits before the next one. It is a state machine driven by
// Start, Observe, Restarted and Stop, on its clock; safe for concurrent
// use.
type Watchdog struct {
	cfg   WatchdogConfig
	clock gpu.Clock

	mu   sync.Mutex
	gpus map[string]*watch
}

type rateSample struct {
	at   time.Time
	rate float64
}

type watch struct {
	workload     string
	running      bool
	started      time.Time
	samples      []rateSample
	low, missing time.Time // since when the condition holds; zero when it does not
	unreachable  time.Time
	healthySince time.Time
	restarts     int
	until        time.Time // no miner on the GPU before this
}

// NewWatchdog returns a watchdog; a negative duration or rate is an
// ErrInvalid naming the field.
func NewWatchdog(cfg WatchdogConfig, clock gpu.Clock) (*Watchdog, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = gpu.SystemClock{}
	}
	return &Watchdog{cfg: cfg.withDefaults(), clock: clock, gpus: map[string]*watch{}}, nil
}

func (w *Watchdog) get(uuid string) *watch {
	g := w.gpus[uuid]
	if g == nil {
		g = &watch{}
		w.gpus[uuid] = g
	}
	return g
}

// Start tells the watchdog a miner started on the GPU.
func (w *Watchdog) Start(uuid, workload string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.get(uuid)
	now := w.clock.Now()
	*g = watch{workload: workload, running: true, started: now, healthySince: now,
		restarts: g.restarts, until: g.until}
}

// Stop tells the watchdog the miner on the GPU ended; the GPU keeps its
// backoff.
func (w *Watchdog) Stop(uuid string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if g := w.gpus[uuid]; g != nil {
		g.running, g.samples = false, nil
	}
}

// Observe judges one poll of the miner on the GPU and reports whether to
// restart it, and why.
func (w *Watchdog) Observe(uuid string, o Observation) (restart bool, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.gpus[uuid]
	if g == nil || !g.running {
		return false, ""
	}
	now := w.clock.Now()
	c := w.cfg
	inGrace := now.Sub(g.started) < c.Grace
	since := func(t *time.Time, on bool) time.Duration {
		if !on {
			*t = time.Time{}
			return 0
		}
		if t.IsZero() {
			*t = now
		}
		return now.Sub(*t)
	}
	fault := false
	// An API that does not answer, judged after the grace.
	if d := since(&g.unreachable, o.Err != nil && !inGrace); o.Err != nil && !inGrace {
		fault = true
		if d >= c.Unreachable {
			return true, fmt.Sprintf("miner API failing for %v: %v", roundDur(d), o.Err)
		}
	}
	if o.Err == nil {
		// A GPU gone from the miner's stats.
		if d := since(&g.missing, o.Missing); o.Missing {
			fault = true
			if d >= c.For {
				return true, fmt.Sprintf("GPU missing from the miner's stats for %v", roundDur(d))
			}
		}
		if o.Rate.Valid && !inGrace {
			rate := o.Rate.Value
			median, n := w.median(g, now)
			lowAbs := c.MinRate > 0 && rate < c.MinRate
			lowRel := c.MinShareOfMedian > 0 && n >= 3 && rate < c.MinShareOfMedian*median
			d := since(&g.low, lowAbs || lowRel)
			if lowAbs || lowRel {
				fault = true
				if d >= c.For {
					if lowAbs {
						return true, fmt.Sprintf("rate %s below the minimum %s for %v",
							rateText(rate, o.Unit), rateText(c.MinRate, o.Unit), roundDur(d))
					}
					return true, fmt.Sprintf("rate %s below %.0f %% of its median %s for %v",
						rateText(rate, o.Unit), c.MinShareOfMedian*100, rateText(median, o.Unit), roundDur(d))
				}
			} else {
				g.samples = append(g.samples, rateSample{now, rate})
			}
		}
	}
	if fault {
		g.healthySince = time.Time{}
	} else if g.healthySince.IsZero() {
		g.healthySince = now
	} else if now.Sub(g.healthySince) >= c.ResetAfter {
		g.restarts = 0
	}
	return false, ""
}

// median is the median of the GPU's rates within the window, and how many
// there are; samples older than the window are dropped.
func (w *Watchdog) median(g *watch, now time.Time) (float64, int) {
	cut := now.Add(-w.cfg.MedianWindow)
	i := 0
	for i < len(g.samples) && g.samples[i].at.Before(cut) {
		i++
	}
	g.samples = g.samples[i:]
	n := len(g.samples)
	if n == 0 {
		return 0, 0
	}
	rates := make([]float64, n)
	for i, s := range g.samples {
		rates[i] = s.rate
	}
	slices.Sort(rates)
	if n%2 == 1 {
		return rates[n/2], n
	}
	return (rates[n/2-1] + rates[n/2]) / 2, n
}

// Restarted records a restart of the GPU's miner and returns when the GPU
// may get a miner again.
func (w *Watchdog) Restarted(uuid string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.get(uuid)
	back := w.cfg.Backoff
	for range g.restarts {
		if back *= 2; back >= w.cfg.MaxBackoff {
			back = w.cfg.MaxBackoff
			break
		}
	}
	g.restarts++
	g.running, g.samples = false, nil
	g.until = w.clock.Now().Add(back)
	return g.until
}

// Allowed reports whether a miner may start on the GPU now, and when it
// may if not.
func (w *Watchdog) Allowed(uuid string) (bool, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.gpus[uuid]
	if g == nil || !w.clock.Now().Before(g.until) {
		return true, time.Time{}
	}
	return false, g.until
}

// Restarts returns how many times the GPU's miner was restarted since it
// last ran well for ResetAfter.
func (w *Watchdog) Restarts(uuid string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if g := w.gpus[uuid]; g != nil {
		return g.restarts
	}
	return 0
}

// rateText prints a rate with an SI prefix: "95.50 MH/s".
func rateText(v float64, u Unit) string {
	if u == "" {
		u = UnitHashes
	}
	prefixes := []string{"", "k", "M", "G", "T", "P"}
	i := 0
	for v >= 1000 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	unit := string(u)
	return fmt.Sprintf("%.2f %s%s", v, prefixes[i], unit)
}

// roundDur rounds a duration for a message: to 100 ms under 10 s, else to
// the second.
func roundDur(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
