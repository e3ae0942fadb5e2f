package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"sync"
	"time"
)

// config is what the flags set.
type config struct {
	name        string  // miner name reported by /summary, e.g. "t-rex"
	algo        string  // algorithm, e.g. "ethash"
	gpus        int     // number of GPUs mining
	gpuName     string  // model name of every GPU, e.g. "RTX 3080"
	hashrateHs  float64 // initial total hashrate, H/s
	difficulty  float64 // hashes per share
	rejectEvery int     // every Nth share is rejected; 0 = none
	warmup      bool    // emulate a fresh start: averaging windows fill over time
	api         string  // the miner whose API is served; "" serves T-Rex's and XMRig's summaries
	token       string  // the API token the real miner's arguments set
	// window is the averaging window of the reported rate (T-Rex's
	// --hashrate-avr, XMRig's 60 s); default a minute.
	window time.Duration
}

// segment is a stretch of constant hashrate starting at start.
type segment struct {
	start  time.Time
	rateHs float64
}

// history keeps at most this long of rate history: the longest window
// (T-Rex hashrate_day).
const historyKeep = 24 * time.Hour

// miner is the fake miner's state: a piecewise-constant hashrate over time.
// Hashes, shares and window averages are integrals of it, so every number is
// a deterministic function of the rate history and the clock.
type miner struct {
	cfg   config
	now   func() time.Time
	start time.Time

	mu      sync.Mutex
	segs    []segment // sorted by start; segs[0] covers at least the longest window
	pruned  float64   // hashes since start in segments dropped from segs
	highest float64   // highest rate since start, H/s
	fault   string    // the fault put on the API; "" or "none" for none
	shown   int       // GPUs the API lists

	// ctx ends when the miner stops: hung replies return then.
	ctx context.Context
}

func newMiner(cfg config, now func() time.Time) *miner {
	start := now()
	first := start
	if !cfg.warmup {
		// Pretend the miner has hashed at the initial rate for a day, so
		// every averaging window is full from the first request.
		first = start.Add(-historyKeep)
	}
	return &miner{cfg: cfg, now: now, start: start, highest: cfg.hashrateHs, shown: cfg.gpus, ctx: context.Background(),
		segs: []segment{{start: first, rateHs: cfg.hashrateHs}}}
}

// setHashrate changes the hashrate from now on.
func (m *miner) setHashrate(rateHs float64) {
	t := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	last := &m.segs[len(m.segs)-1]
	if !t.After(last.start) {
		last.rateHs = rateHs
	} else {
		m.segs = append(m.segs, segment{start: t, rateHs: rateHs})
	}
	m.highest = math.Max(m.highest, rateHs)
	// Drop segments that ended before the longest window, keeping their
	// share of the hashes since start, so memory stays bounded.
	cut := t.Add(-historyKeep)
	for len(m.segs) > 1 && !m.segs[1].start.After(cut) {
		from := m.segs[0].start
		if from.Before(m.start) {
			from = m.start
		}
		if end := m.segs[1].start; end.After(from) {
			m.pruned += m.segs[0].rateHs * end.Sub(from).Seconds()
		}
		m.segs = m.segs[1:]
	}
}

// hashes integrates the rate over [from, to]. Caller holds mu.
func (m *miner) hashes(from, to time.Time) float64 {
	var total float64
	for i, s := range m.segs {
		end := to
		if i+1 < len(m.segs) && m.segs[i+1].start.Before(to) {
			end = m.segs[i+1].start
		}
		begin := s.start
		if begin.Before(from) {
			begin = from
		}
		if end.After(begin) {
			total += s.rateHs * end.Sub(begin).Seconds()
		}
	}
	return total
}

// stats is one consistent reading of the miner.
type stats struct {
	at      time.Time
	uptime  time.Duration
	current float64 // instantaneous rate, H/s
	// Window averages in H/s; nil while the window is not yet full (only
	// with warmup).
	avg10s, avg60s, avg15m, avgHour, avgDay *float64 // avg60s: over -avg-window
	highest                                 float64
	hashesTotal                             float64
	shares, accepted, rejected              int64
}

func (m *miner) snapshot() stats {
	t := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := stats{at: t, uptime: t.Sub(m.start), current: m.segs[len(m.segs)-1].rateHs}
	first := m.segs[0].start
	avg := func(w time.Duration) *float64 {
		from := t.Add(-w)
		if from.Before(first) {
			return nil
		}
		v := m.hashes(from, t) / w.Seconds()
		return &v
	}
	window := m.cfg.window
	if window <= 0 {
		window = time.Minute
	}
	st.avg10s, st.avg60s, st.avg15m = avg(10*time.Second), avg(window), avg(15*time.Minute)
	st.avgHour, st.avgDay = avg(time.Hour), avg(24*time.Hour)
	st.highest = m.highest
	from := m.start
	if first.After(from) {
		from = first
	}
	if t.After(from) {
		st.hashesTotal = m.pruned + m.hashes(from, t)
	}
	if m.cfg.difficulty > 0 {
		st.shares = int64(math.Floor(st.hashesTotal / m.cfg.difficulty))
	}
	if m.cfg.rejectEvery > 0 {
		st.rejected = st.shares / int64(m.cfg.rejectEvery)
	}
	st.accepted = st.shares - st.rejected
	return st
}

// partialAvg is the average since start for a window not yet full; T-Rex
// shows such a value for its short windows right after start.
func (st stats) partialAvg(w *float64) float64 {
	if w != nil {
		return *w
	}
	if st.uptime <= 0 {
		return st.current
	}
	return st.hashesTotal / st.uptime.Seconds()
}

// orZero is T-Rex's way of reporting a window that is not full.
func orZero(w *float64) float64 {
	if w == nil {
		return 0
	}
	return *w
}

// split divides total over n parts as integers that add up to total.
func split(total int64, n, i int) int64 {
	if n <= 0 {
		return 0
	}
	part := total / int64(n)
	if int64(i) < total%int64(n) {
		part++
	}
	return part
}

// gpuModel is the fake electrical and thermal model of one GPU at a
// hashrate: roughly an RTX 3080 on ethash (95 MH/s at ~220 W).
type gpuModel struct {
	powerW, temperatureC, fanPct int
}

func modelAt(rateHs float64) gpuModel {
	p := 20 + 2.1*rateHs/1e6
	t := 35 + p*0.16
	return gpuModel{powerW: int(math.Round(p)), temperatureC: int(math.Round(t)), fanPct: int(math.Min(100, math.Round(t)))}
}

// efficiency formats hashes per watt like T-Rex ("175kH/W", "0.00H/W").
func efficiency(rateHs float64, powerW int) string {
	if powerW <= 0 {
		return "0.00H/W"
	}
	e := rateHs / float64(powerW)
	switch {
	case e >= 1e6:
		return fmt.Sprintf("%.0fMH/W", e/1e6)
	case e >= 1e3:
		return fmt.Sprintf("%.0fkH/W", e/1e3)
	default:
		return fmt.Sprintf("%.2fH/W", e)
	}
}

// siString formats a number like T-Rex's pool difficulty ("4.29 G").
func siString(v float64) string {
	units := []string{"", " K", " M", " G", " T", " P"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.2f%s", v, units[i])
}

// uuidOf is a stable 32-hex-char GPU UUID in T-Rex's form (no "GPU-", no dashes).
func uuidOf(name string, i int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("fakeminer/%s/%d", name, i)))
	return hex.EncodeToString(sum[:16])
}

// humanRate formats H/s for the log line ("95.50 MH/s").
func humanRate(rateHs float64) string {
	units := []string{"H/s", "kH/s", "MH/s", "GH/s", "TH/s"}
	i := 0
	for rateHs >= 1000 && i < len(units)-1 {
		rateHs /= 1000
		i++
	}
	return fmt.Sprintf("%.2f %s", rateHs, units[i])
}

// logLine is the line printed every log interval.
func (m *miner) logLine(st stats) string {
	return fmt.Sprintf("%s %s %s: %s, [A:%d, R:%d], uptime %s",
		st.at.UTC().Format("20060102 15:04:05"), m.cfg.name, m.cfg.algo, humanRate(st.current),
		st.accepted, st.rejected, st.uptime.Truncate(time.Second))
}
