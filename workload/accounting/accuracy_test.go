package accounting_test

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// holders the scenario hands GPUs to; the zero one is idle.
var holders = []workload.Allocation{
	{},
	{Workload: "mine", Attempt: 1, Tenant: "mining", Kind: workload.KindMining},
	{Workload: "train-a", Attempt: 1, Tenant: "acme", Kind: workload.KindTraining, PricePerGPUHour: 1.20},
	{Workload: "train-a", Attempt: 2, Tenant: "acme", Kind: workload.KindTraining, PricePerGPUHour: 1.20},
	{Workload: "infer-b", Attempt: 1, Tenant: "beta", Kind: workload.KindInference, PricePerGPUHour: 0.80},
}

type event struct {
	at    time.Time
	gpu   int
	what  int // 0 sample, 1 load change, 2 handover
	value float64
	to    int // holder index for a handover
}

// scenario drives a rig for dur: each GPU's load changes every 2 to 7 s
// (at any millisecond), it changes hands every 1 to 10 minutes, and the
// meter polls once a second and at every handover, as Run does. It
// returns the simulator's ground truth per holder (workload and attempt;
// "" for idle) from truth's counters read at the handovers.
func scenario(t *testing.T, r *rig, truth *sim.Rig, tl *timeline, m *accounting.Meter, dur time.Duration, seed uint64, pollAtHandover bool) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(seed, seed))
	var evs []event
	for s := time.Duration(0); s <= dur; s += time.Second {
		evs = append(evs, event{at: t0.Add(s), gpu: -1})
	}
	jitter := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rnd.Int64N(int64(hi-lo)/int64(time.Millisecond)))*time.Millisecond
	}
	for g := range r.devs {
		for at := jitter(2*time.Second, 7*time.Second); at < dur; at += jitter(2*time.Second, 7*time.Second) {
			evs = append(evs, event{at: t0.Add(at), gpu: g, what: 1, value: rnd.Float64()})
		}
		for at := jitter(time.Minute, 10*time.Minute); at < dur; at += jitter(time.Minute, 10*time.Minute) {
			evs = append(evs, event{at: t0.Add(at), gpu: g, what: 2, to: rnd.IntN(len(holders))})
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })

	n := len(r.devs)
	holder := make([]int, n)
	util := make([]float64, n)
	start := make([]uint64, n)
	for g := range start {
		start[g] = counter(t, truth, g)
	}
	got := map[string]int64{}
	key := func(h int) string {
		if holders[h].Workload == "" {
			return ""
		}
		return holders[h].Workload + "#" + string(rune('0'+holders[h].Attempt))
	}
	setLoad := func(g int) {
		u := util[g]
		if holder[g] == 0 {
			u = 0
		}
		require.NoError(t, r.sim.SetLoad(g, sim.Load{Util: u}))
		if truth != r.sim {
			require.NoError(t, truth.SetLoad(g, sim.Load{Util: u}))
		}
	}
	for _, ev := range evs {
		r.clk.Set(ev.at)
		switch ev.what {
		case 0:
			require.NoError(t, m.Poll(ctx))
		case 1:
			util[ev.gpu] = ev.value
			if holder[ev.gpu] != 0 {
				setLoad(ev.gpu)
			}
		case 2:
			if ev.to == holder[ev.gpu] {
				continue
			}
			c := counter(t, truth, ev.gpu)
			got[key(holder[ev.gpu])] += int64(c - start[ev.gpu])
			start[ev.gpu] = c
			holder[ev.gpu] = ev.to
			tl.hand(r.devs[ev.gpu].UUID, ev.at, holders[ev.to])
			setLoad(ev.gpu)
			if pollAtHandover {
				require.NoError(t, m.Poll(ctx))
			}
		}
	}
	for g := range holder {
		got[key(holder[g])] += int64(counter(t, truth, g) - start[g])
	}
	require.NoError(t, m.Flush(ctx))
	return got
}

func byHolder(rs []accounting.Record) map[string]int64 {
	out := map[string]int64{}
	for _, r := range rs {
		k := ""
		if r.Workload != "" {
			k = r.Workload + "#" + string(rune('0'+r.Attempt))
		}
		out[k] += r.EnergyMJ
	}
	return out
}

// TestAccuracyWithCounter: on A40s, which have the energy counter, every
// workload attempt's energy and the idle energy equal the simulator's
// ground truth to the millijoule, with a load that changes every few
// seconds and 1 Hz sampling.
func TestAccuracyWithCounter(t *testing.T) {
	r := newRig(t, preset(t, sim.PresetA40))
	tl := newTimeline()
	l := accounting.NewMemoryLedger()
	m := newMeter(t, r, tl, l, accounting.WithTariff(accounting.Flat(0.2)))
	truth := scenario(t, r, r.sim, tl, m, time.Hour, 1, true)

	rs := records(t, l, accounting.Query{})
	sums := checkStreams(t, rs, m, time.Minute)
	assert.Equal(t, truth, byHolder(rs), "attributed and idle energy equal the ground truth exactly")
	for g, d := range r.devs {
		assert.Equal(t, int64(counter(t, r.sim, g)), sums[d.UUID], "GPU %d: records add up to its counter", g)
	}
	assert.Len(t, truth, len(holders), "every holder got some time")
	for _, rec := range rs {
		assert.NotZero(t, rec.Flags&accounting.FlagCounter, "every record comes from the counter")
		assert.Zero(t, rec.Flags&(accounting.FlagIntegrated|accounting.FlagSplit|accounting.FlagNoSamples))
	}
}

// TestAccuracyIntegrated: the RTX 3080 riser rig has no energy counter, so
// power is integrated; per workload and in total it is within 0.5% of the
// simulator's ground truth (a twin rig with counters, driven alike).
func TestAccuracyIntegrated(t *testing.T) {
	p := preset(t, sim.PresetRTX3080Riser)
	r := newRig(t, p)
	twin, err := sim.New(withCounters(p), sim.WithClock(r.clk))
	require.NoError(t, err)
	tl := newTimeline()
	l := accounting.NewMemoryLedger()
	m := newMeter(t, r, tl, l)
	truth := scenario(t, r, twin, tl, m, time.Hour, 2, false)

	rs := records(t, l, accounting.Query{})
	checkStreams(t, rs, m, time.Minute)
	got := byHolder(rs)
	var sumGot, sumTruth int64
	for k, want := range truth {
		rel := math.Abs(float64(got[k]-want)) / float64(want)
		t.Logf("%-10q truth %12d mJ, integrated %12d mJ, error %.4f%%", k, want, got[k], rel*100)
		assert.Less(t, rel, 0.005, "holder %q within 0.5%%", k)
		sumGot += got[k]
		sumTruth += want
	}
	rel := math.Abs(float64(sumGot-sumTruth)) / float64(sumTruth)
	t.Logf("total: truth %d mJ, integrated %d mJ, error %.4f%%", sumTruth, sumGot, rel*100)
	assert.Less(t, rel, 0.005)
	for _, rec := range rs {
		assert.NotZero(t, rec.Flags&accounting.FlagIntegrated, "the records say the energy was integrated")
		assert.Zero(t, rec.Flags&accounting.FlagCounter)
	}
}
