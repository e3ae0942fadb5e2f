package accounting_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// feed observes hand-made samples of GPU 0 of r: one per (seconds,
// counter mJ, power W) triple; a negative counter or power is absent.
func feed(t *testing.T, m *accounting.Meter, r *rig, readings ...[3]float64) error {
	t.Helper()
	var errs []error
	for _, rd := range readings {
		s := gpu.Sample{Index: 0, UUID: r.devs[0].UUID, Time: t0.Add(time.Duration(rd[0] * float64(time.Second)))}
		if rd[1] >= 0 {
			s.EnergyMJ = gpu.Some(uint64(rd[1]))
		}
		if rd[2] >= 0 {
			s.PowerW = gpu.Some(rd[2])
		}
		errs = append(errs, m.Observe(context.Background(), []gpu.Sample{s}))
	}
	return errors.Join(errs...)
}

func onlyGPU(rs []accounting.Record, uuid string) []accounting.Record {
	var out []accounting.Record
	for _, r := range rs {
		if r.GPU == uuid {
			out = append(out, r)
		}
	}
	return out
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	a40 := preset(t, sim.PresetA40)
	train := workload.Allocation{Workload: "train", Attempt: 1, Tenant: "acme", Kind: workload.KindTraining, PricePerGPUHour: 3.6}

	t.Run("counter going backwards is a driver reload, integrated from power", func(t *testing.T) {
		r := newRig(t, a40)
		l := accounting.NewMemoryLedger()
		m := newMeter(t, r, newTimeline(), l)
		require.NoError(t, feed(t, m, r, [3]float64{0, 5000, 100}, [3]float64{1, 105000, 100}, [3]float64{2, 300, 100}, [3]float64{3, 100300, 100}))
		require.NoError(t, m.Flush(ctx))
		rs := records(t, l, accounting.Query{GPU: r.devs[0].UUID})
		require.Len(t, rs, 1)
		assert.Equal(t, int64(100000+100000+100000), rs[0].EnergyMJ, "the reset second is integrated: 100 W for 1 s")
		assert.Equal(t, accounting.FlagCounterReset|accounting.FlagIntegrated, rs[0].Flags&(accounting.FlagCounterReset|accounting.FlagIntegrated|accounting.FlagCounter))
		assert.Equal(t, 1, m.Stats().GPUs[0].CounterResets)
	})

	t.Run("counter reset without power counts from zero and says the energy is a lower bound", func(t *testing.T) {
		r := newRig(t, a40)
		l := accounting.NewMemoryLedger()
		m := newMeter(t, r, newTimeline(), l)
		require.NoError(t, feed(t, m, r, [3]float64{0, 5000, -1}, [3]float64{1, 800, -1}))
		require.NoError(t, m.Flush(ctx))
		rs := records(t, l, accounting.Query{GPU: r.devs[0].UUID})
		require.Len(t, rs, 1)
		assert.Equal(t, int64(800), rs[0].EnergyMJ)
		assert.NotZero(t, rs[0].Flags&accounting.FlagEnergyUnknown)
	})

	t.Run("a sample of an unknown GPU is refused and the others are booked", func(t *testing.T) {
		r := newRig(t, a40)
		m := newMeter(t, r, newTimeline(), accounting.NewMemoryLedger())
		err := m.Observe(ctx, []gpu.Sample{
			{Index: 0, UUID: r.devs[0].UUID, Time: t0, EnergyMJ: gpu.Some[uint64](0)},
			{Index: 9, UUID: "GPU-not-on-this-node", Time: t0},
		})
		require.ErrorIs(t, err, accounting.ErrNotFound)
		require.ErrorIs(t, err, gpu.ErrNotFound, "it matches the gpu category too")
		assert.Contains(t, err.Error(), "GPU-not-on-this-node")
		require.NoError(t, feed(t, m, r, [3]float64{1, 1000, -1}))
		assert.Equal(t, int64(1000), m.Stats().GPUs[0].MeteredMJ)
	})

	t.Run("a sample from the past is refused", func(t *testing.T) {
		r := newRig(t, a40)
		m := newMeter(t, r, newTimeline(), accounting.NewMemoryLedger())
		require.NoError(t, feed(t, m, r, [3]float64{5, 0, 10}))
		err := feed(t, m, r, [3]float64{4, 0, 10})
		require.ErrorIs(t, err, accounting.ErrInvalid)
		assert.Contains(t, err.Error(), "before its previous one")
		require.NoError(t, feed(t, m, r, [3]float64{5, 0, 20}), "the same instant again only updates the power")
	})

	t.Run("a gap in samples is its own record, never the holder's", func(t *testing.T) {
		r := newRig(t, a40)
		tl := newTimeline()
		tl.hand(r.devs[0].UUID, t0, train)
		l := accounting.NewMemoryLedger()
		m := newMeter(t, r, tl, l, accounting.WithTariff(accounting.Flat(0.5)))
		require.NoError(t, feed(t, m, r, [3]float64{0, 0, 100}, [3]float64{10, 1000000, 100},
			[3]float64{250, 30000000, 100}, [3]float64{260, 31000000, 100}))
		require.NoError(t, m.Flush(ctx))
		rs := records(t, l, accounting.Query{GPU: r.devs[0].UUID})
		var gapMJ, trainMJ int64
		for _, rec := range rs {
			switch rec.Kind {
			case accounting.KindGap:
				gapMJ += rec.EnergyMJ
				assert.Empty(t, rec.Workload)
				assert.Zero(t, rec.Revenue)
				assert.NotZero(t, rec.Flags&accounting.FlagNoSamples)
				assert.Positive(t, rec.Cost, "the gap's energy was paid for")
			case workload.KindTraining:
				trainMJ += rec.EnergyMJ
			}
		}
		assert.Equal(t, int64(29000000), gapMJ, "the counter tells the gap's energy")
		assert.Equal(t, int64(2000000), trainMJ)
		assert.Equal(t, 1, m.Stats().GPUs[0].Gaps)
		checkStreams(t, rs, nil, time.Minute)
	})

	t.Run("a lost GPU's empty samples are booked as unknown energy", func(t *testing.T) {
		r := newRig(t, a40)
		l := accounting.NewMemoryLedger()
		m := newMeter(t, r, newTimeline(), l)
		require.NoError(t, feed(t, m, r, [3]float64{0, 0, 100}, [3]float64{1, -1, -1}, [3]float64{2, -1, -1}))
		require.NoError(t, m.Flush(ctx))
		rs := records(t, l, accounting.Query{GPU: r.devs[0].UUID})
		require.Len(t, rs, 1)
		assert.NotZero(t, rs[0].Flags&accounting.FlagEnergyUnknown)
	})

	t.Run("an unreadable timeline books a gap and says why", func(t *testing.T) {
		r := newRig(t, a40)
		tl := newTimeline()
		tl.fail = errors.New("timeline down")
		l := accounting.NewMemoryLedger()
		m := newMeter(t, r, tl, l)
		require.NoError(t, feed(t, m, r, [3]float64{0, 0, 100}, [3]float64{30, 3000000, 100}))
		err := m.Flush(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "timeline down")
		rs := records(t, l, accounting.Query{GPU: r.devs[0].UUID})
		require.Len(t, rs, 1)
		assert.Equal(t, accounting.KindGap, rs[0].Kind)
		assert.NotZero(t, rs[0].Flags&accounting.FlagNoTimeline)
	})

	t.Run("bad options are all named", func(t *testing.T) {
		r := newRig(t, a40)
		_, err := accounting.New(ctx, r.gpus, nil, nil, accounting.WithPUE(0.5), accounting.WithRecordInterval(7*time.Second), accounting.WithTariff(nil))
		require.ErrorIs(t, err, accounting.ErrInvalid)
		for _, want := range []string{"nil Timeline", "nil Ledger", "WithPUE(0.5)", "WithRecordInterval(7s)", "WithTariff(nil)"} {
			assert.Contains(t, err.Error(), want)
		}
	})
}

// TestHandoverBetweenSamples: a handover that falls between two samples
// shares that second by the power before and after it; on the simulator,
// where power steps at the handover, each side is within a millijoule of
// the truth.
func TestHandoverBetweenSamples(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, preset(t, sim.PresetA40))
	tl := newTimeline()
	l := accounting.NewMemoryLedger()
	m := newMeter(t, r, tl, l)
	u := r.devs[0].UUID
	tl.hand(u, t0, workload.Allocation{Workload: "mine", Attempt: 1, Tenant: "mining", Kind: workload.KindMining})
	require.NoError(t, r.sim.SetLoad(0, sim.Load{Util: 1}))
	c0 := counter(t, r.sim, 0)
	require.NoError(t, m.Poll(ctx))
	for s := 1; s <= 12; s++ {
		if s == 10 {
			// At 9.3 s the miner yields to training at a third of the load.
			r.clk.Set(t0.Add(9300 * time.Millisecond))
			tl.hand(u, r.clk.Now(), workload.Allocation{Workload: "train", Attempt: 1, Tenant: "acme", Kind: workload.KindTraining})
			require.NoError(t, r.sim.SetLoad(0, sim.Load{Util: 0.3}))
		}
		r.clk.Set(t0.Add(time.Duration(s) * time.Second))
		require.NoError(t, m.Poll(ctx))
	}
	require.NoError(t, m.Flush(ctx))
	c12 := counter(t, r.sim, 0)
	got := map[string]int64{}
	split := 0
	for _, rec := range records(t, l, accounting.Query{GPU: u}) {
		got[rec.Workload] += rec.EnergyMJ
		if rec.Flags&accounting.FlagSplit != 0 {
			split++
		}
	}
	// The truth: full-load power for 9.3 s, then a third of the load.
	tclk := sim.NewClock(t0)
	twin, err := sim.New(preset(t, sim.PresetA40), sim.WithClock(tclk))
	require.NoError(t, err)
	require.NoError(t, twin.SetLoad(0, sim.Load{Util: 1}))
	tclk.Set(t0.Add(9300 * time.Millisecond))
	mine := int64(counter(t, twin, 0))
	assert.Equal(t, int64(c12-c0), got["mine"]+got["train"], "the GPU's energy is all booked")
	assert.InDelta(t, mine, got["mine"], 1, "the miner's share of the split second is its power times its time")
	assert.Equal(t, 2, split, "both records that share the second say so")
}

// TestRestartCarriesOn: a meter made over a ledger that an earlier one
// wrote carries on where its records end: the time it was down is a gap,
// never its holder's or idle (a restarted workload manager knows its holds
// only from its start), and the GPU's records add up to its counter across
// both restarts.
func TestRestartCarriesOn(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, preset(t, sim.PresetA40))
	tl := newTimeline()
	tl.hand(r.devs[0].UUID, t0, workload.Allocation{Workload: "mine", Attempt: 1, Tenant: "mining", Kind: workload.KindMining})
	require.NoError(t, r.sim.SetLoad(0, sim.Load{Util: 0.7}))
	l := accounting.NewMemoryLedger()
	c0 := counter(t, r.sim, 0)
	run := func(from, to int) {
		m, err := accounting.New(ctx, r.gpus, tl, l)
		require.NoError(t, err)
		for s := from; s <= to; s++ {
			r.clk.Set(t0.Add(time.Duration(s) * time.Second))
			require.NoError(t, m.Poll(ctx))
		}
		require.NoError(t, m.Close())
		require.NoError(t, m.Close(), "Close is idempotent")
		assert.ErrorIs(t, m.Poll(ctx), accounting.ErrClosed)
	}
	run(0, 90)
	run(100, 200) // 10 s down
	run(500, 600) // 5 minutes down
	rs := records(t, l, accounting.Query{GPU: r.devs[0].UUID})
	sums := checkStreams(t, rs, nil, time.Minute)
	assert.Equal(t, int64(counter(t, r.sim, 0)-c0), sums[r.devs[0].UUID], "the records add up to the counter across restarts")
	var gap time.Duration
	for _, rec := range rs {
		if rec.Kind == accounting.KindGap {
			gap += rec.Duration()
		} else {
			assert.Equal(t, "mine", rec.Workload)
		}
	}
	assert.Equal(t, 310*time.Second, gap, "both pauses are gaps")
}

// TestRun samples on the wall clock until its context ends, then books
// what is pending.
func TestRun(t *testing.T) {
	p := preset(t, sim.PresetA40)
	rg, err := sim.New(p)
	require.NoError(t, err)
	g, err := gpu.New(context.Background(), rg)
	require.NoError(t, err)
	defer g.Close()
	l := accounting.NewMemoryLedger()
	m, err := accounting.New(context.Background(), g, newTimeline(), l)
	require.NoError(t, err)
	defer m.Close()
	require.ErrorIs(t, m.Run(context.Background(), time.Minute), accounting.ErrInvalid, "sampling slower than the maximum gap is refused")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, m.Run(ctx, 20*time.Millisecond), context.DeadlineExceeded)
	rs := records(t, l, accounting.Query{})
	require.NotEmpty(t, rs, "what was sampled is booked when Run ends")
	checkStreams(t, rs, m, time.Minute)
	for _, s := range m.Latest(nil) {
		assert.False(t, s.Time.IsZero(), "every GPU was sampled")
	}
}
