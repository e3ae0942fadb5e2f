package accounting_test

import (
	"context"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the tests' time zones, whatever the machine has

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// homeTariff: cheap nights, dear weekday evenings, weekends and holidays
// flat.
func homeTariff(t *testing.T, loc *time.Location, holidays ...string) *accounting.TimeOfUse {
	t.Helper()
	tou, err := accounting.NewTimeOfUse(loc, []accounting.Band{
		{Name: "night", Days: accounting.Weekdays, Start: 0, End: 7 * time.Hour, PerKWh: 0.10},
		{Name: "day", Days: accounting.Weekdays, Start: 7 * time.Hour, End: 17 * time.Hour, PerKWh: 0.25},
		{Name: "peak", Days: accounting.Weekdays, Start: 17 * time.Hour, End: 24 * time.Hour, PerKWh: 0.40},
		{Name: "weekend", Days: accounting.Weekend | accounting.Holidays, Start: 0, End: 24 * time.Hour, PerKWh: 0.15},
	}, holidays...)
	require.NoError(t, err)
	return tou
}

func TestTimeOfUse(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	tou := homeTariff(t, berlin, "2026-12-25")
	for _, tc := range []struct {
		name  string
		at    time.Time
		price float64
		until time.Time
	}{
		{"weekday night", time.Date(2026, 12, 1, 3, 0, 0, 0, berlin), 0.10, time.Date(2026, 12, 1, 7, 0, 0, 0, berlin)},
		{"weekday peak runs to midnight", time.Date(2026, 12, 1, 20, 0, 0, 0, berlin), 0.40, time.Date(2026, 12, 2, 0, 0, 0, 0, berlin)},
		{"a band's start belongs to it", time.Date(2026, 12, 1, 7, 0, 0, 0, berlin), 0.25, time.Date(2026, 12, 1, 17, 0, 0, 0, berlin)},
		{"Saturday", time.Date(2026, 12, 5, 20, 0, 0, 0, berlin), 0.15, time.Date(2026, 12, 6, 0, 0, 0, 0, berlin)},
		{"Christmas on a Friday is a holiday", time.Date(2026, 12, 25, 20, 0, 0, 0, berlin), 0.15, time.Date(2026, 12, 26, 0, 0, 0, 0, berlin)},
		{"the time zone, not UTC, decides", time.Date(2026, 12, 1, 6, 30, 0, 0, time.UTC), 0.25, time.Date(2026, 12, 1, 17, 0, 0, 0, berlin)},
		{"the night of the spring change is an hour shorter", time.Date(2026, 3, 30, 1, 0, 0, 0, time.UTC), 0.10, time.Date(2026, 3, 30, 7, 0, 0, 0, berlin)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, until, err := tou.PriceAt(tc.at)
			require.NoError(t, err)
			assert.Equal(t, tc.price, p)
			assert.True(t, until.Equal(tc.until), "until %s, want %s", until, tc.until)
		})
	}
	// Across the autumn change (25 October 2026, 03:00 CEST becomes 02:00
	// CET) every hour still has one price and the next boundary is ahead.
	for at := time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC); at.Before(time.Date(2026, 10, 25, 6, 0, 0, 0, time.UTC)); at = at.Add(10 * time.Minute) {
		p, until, err := tou.PriceAt(at)
		require.NoError(t, err)
		assert.Equal(t, 0.15, p, "a Sunday")
		assert.True(t, until.After(at))
	}
}

func TestTimeOfUseRefusesOverlapsAndHoles(t *testing.T) {
	_, err := accounting.NewTimeOfUse(time.UTC, []accounting.Band{
		{Name: "night", Days: accounting.Weekdays, Start: 0, End: 8 * time.Hour, PerKWh: 0.1},
		{Name: "day", Days: accounting.Weekdays, Start: 7 * time.Hour, End: 18 * time.Hour, PerKWh: 0.2},
		{Name: "weekend", Days: accounting.Saturday, Start: 0, End: 24 * time.Hour, PerKWh: 0.1},
		{Name: "bad", Days: accounting.Sunday, Start: 5 * time.Hour, End: 2 * time.Hour},
	}, "25 December", "2026-12-24")
	require.ErrorIs(t, err, accounting.ErrInvalid)
	for _, want := range []string{
		`Monday: "night" and "day" overlap from 07:00 to 08:00`,
		"Friday: no band from 18:00 to 24:00",
		"Sunday: no band from 00:00 to 24:00",
		"band 3 (bad): 5h0m0s to 2h0m0s",
		`holiday "25 December"`,
		"holidays: no band from 00:00 to 24:00",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestPriceSeries(t *testing.T) {
	csv := "start,price_per_mwh\n" +
		"2026-11-30T00:00:00Z,80\n2026-11-30T00:15:00Z,120\n2026-11-30T00:30:00Z,-5\n2026-11-30T00:45:00Z,60\n"
	ps, err := accounting.ReadPriceCSV(strings.NewReader(csv), 15*time.Minute)
	require.NoError(t, err)
	p, until, err := ps.PriceAt(t0.Add(20 * time.Minute))
	require.NoError(t, err)
	assert.InDelta(t, 0.12, p, 1e-12)
	assert.Equal(t, t0.Add(30*time.Minute), until)
	p, _, err = ps.PriceAt(t0.Add(31 * time.Minute))
	require.NoError(t, err)
	assert.InDelta(t, -0.005, p, 1e-12, "negative market prices are prices")

	_, _, err = ps.PriceAt(t0.Add(time.Hour))
	require.ErrorIs(t, err, accounting.ErrNoPrice)
	assert.Contains(t, err.Error(), "add prices for that time")

	// An hour straddling two prices costs each quarter at its own price.
	c, err := accounting.Cost(ps, t0.Add(10*time.Minute), t0.Add(20*time.Minute), 3_600_000_000)
	require.NoError(t, err)
	assert.InDelta(t, 0.5*0.08+0.5*0.12, c, 1e-12)
	c, err = accounting.Cost(ps, t0.Add(50*time.Minute), t0.Add(70*time.Minute), 3_600_000_000)
	require.ErrorIs(t, err, accounting.ErrNoPrice, "the unpriced part is reported")
	assert.InDelta(t, 0.5*0.06, c, 1e-12, "and the priced part is still counted")
}

func TestPriceSeriesRefusesHolesAndBadLines(t *testing.T) {
	csv := "start,end,price_per_kwh\n" +
		"2026-11-30T00:00:00Z,2026-11-30T00:15:00Z,0.1\n" +
		"2026-11-30T00:30:00Z,2026-11-30T00:45:00Z,0.1\n" +
		"2026-11-30T00:40:00Z,2026-11-30T01:00:00Z,0.1\n"
	_, err := accounting.ReadPriceCSV(strings.NewReader(csv), 0)
	require.ErrorIs(t, err, accounting.ErrInvalid)
	assert.Contains(t, err.Error(), "hole: no price from 2026-11-30T00:15:00Z to 2026-11-30T00:30:00Z")
	assert.Contains(t, err.Error(), "overlap")

	_, err = accounting.ReadPriceCSV(strings.NewReader("start,price_per_kwh\nyesterday,0.1\n2026-11-30T00:00:00Z,cheap\n"), time.Hour)
	require.ErrorIs(t, err, accounting.ErrInvalid)
	assert.Contains(t, err.Error(), `line 2: start "yesterday"`)
	assert.Contains(t, err.Error(), `line 3: price "cheap"`)

	_, err = accounting.ReadPriceCSV(strings.NewReader("when,eur\n"), time.Hour)
	assert.ErrorIs(t, err, accounting.ErrInvalid)
	_, err = accounting.ReadPriceCSV(strings.NewReader("start,price_per_kwh\n"), 0)
	assert.ErrorContains(t, err, "give the step")
}

// TestCostMatchesHandComputation: a day on the simulator under the
// time-of-use tariff, with a PUE and a wall factor: every record costs
// its facility energy at the price a hand-written rule gives for its
// time, and the day's cost is the sum.
func TestCostMatchesHandComputation(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, preset(t, sim.PresetA40))
	tl := newTimeline()
	l := accounting.NewMemoryLedger()
	m := newMeter(t, r, tl, l, accounting.WithTariff(homeTariff(t, time.UTC)), accounting.WithPUE(1.3), accounting.WithWallFactor(1.1),
		accounting.WithRecordInterval(15*time.Minute))
	train := workload.Allocation{Workload: "train", Attempt: 1, Tenant: "acme", Kind: workload.KindTraining, PricePerGPUHour: 2}
	for g, d := range r.devs {
		if g < 4 {
			tl.hand(d.UUID, t0, train)
			require.NoError(t, r.sim.SetLoad(g, sim.Load{Util: 0.2 + 0.1*float64(g)}))
		}
	}
	for s := 0; s <= 24*3600; s += 5 {
		r.clk.Set(t0.Add(time.Duration(s) * time.Second))
		require.NoError(t, m.Poll(ctx))
	}
	require.NoError(t, m.Flush(ctx))

	hand := func(at time.Time) float64 { // Monday, UTC
		switch h := at.Hour(); {
		case h < 7:
			return 0.10
		case h < 17:
			return 0.25
		default:
			return 0.40
		}
	}
	var day, want float64
	rs := records(t, l, accounting.Query{})
	for _, rec := range rs {
		assert.InDelta(t, float64(rec.EnergyMJ)*1.3*1.1, float64(rec.FacilityEnergyMJ), 2, "facility energy is metered times PUE and wall factor")
		c := float64(rec.FacilityEnergyMJ) / 3.6e9 * hand(rec.Start)
		assert.InDelta(t, c, rec.Cost.Float(), 1e-6, "record %s-%s", rec.Start, rec.End)
		want += c
		day += rec.Cost.Float()
		if rec.Kind == workload.KindTraining {
			assert.InDelta(t, 2*rec.Duration().Hours(), rec.Revenue.Float(), 1e-6, "rental revenue is the price times the time held")
		}
	}
	assert.InDelta(t, want, day, 1e-6*float64(len(rs)))
	assert.Len(t, rs, 8*24*4, "one record per GPU and quarter hour")
}

func TestMiningRevenue(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, preset(t, sim.PresetA40))
	tl := newTimeline()
	mine := workload.Allocation{Workload: "mine-0", Attempt: 1, Tenant: "mining", Kind: workload.KindMining}
	tl.hand(r.devs[0].UUID, t0, mine)
	tl.hand(r.devs[1].UUID, t0, mine)
	l := accounting.NewMemoryLedger()
	m := newMeter(t, r, tl, l, accounting.WithMiningRevenue(accounting.MiningRevenueFunc(
		func(_ context.Context, gpu, _ string, from, to time.Time) (float64, error) {
			if gpu == r.devs[1].UUID {
				return 0, assert.AnError
			}
			return 0.09 * to.Sub(from).Hours(), nil
		})))
	for s := 0; s <= 120; s++ {
		r.clk.Set(t0.Add(time.Duration(s) * time.Second))
		err := m.Poll(ctx)
		if s%60 == 0 && s > 0 {
			require.ErrorIs(t, err, assert.AnError, "a failing source is reported")
		}
	}
	rows, err := accounting.Summarize(l.Query(ctx, accounting.Query{Kind: workload.KindMining}), accounting.ByGPU)
	require.NoError(t, err)
	require.Len(t, rows, 2)
	for _, row := range rows {
		if row.Key == r.devs[0].UUID {
			assert.InDelta(t, 0.09*2/60, row.Revenue.Float(), 1e-6)
			assert.Zero(t, row.Flags&accounting.FlagRevenueUnknown)
		} else {
			assert.Zero(t, row.Revenue)
			assert.NotZero(t, row.Flags&accounting.FlagRevenueUnknown, "unknown revenue is flagged, not zero in silence")
		}
	}
}
