package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/mining"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// printed is what a reader takes from the program's output.
type printed struct {
	decisions []printedDecision
	rows      map[string]printedRow // by strategy, "switching" for the first
	stayCoin  string
	vsStay    float64 // "switching made X USD against always mine ..."
	gainsSum  float64 // "... the decisions' gains above add up to X"
	vsRent    float64
}

type printedDecision struct {
	at         string
	gpus       []int
	from, to   string // from is "" for the day's start
	made, gain float64
}

type printedRow struct {
	revenue, cost, margin   float64
	miningH, rentedH, idleH float64
	changes                 int
}

var (
	decisionRe = regexp.MustCompile(`^(\d\d:\d\d)  GPU (\S+)\s+(?:start: (.+)|(.+) -> (.+))$`)
	madeRe     = regexp.MustCompile(`^\s+made (-?\d+\.\d+) until \d\d:\d\d, ([+-]\d+\.\d+) vs staying put$`)
	rowRe      = regexp.MustCompile(`^\s*(switching \(.*\)|always .+?)\s{2,}(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+)$`)
	vsStayRe   = regexp.MustCompile(`(?m)^switching made ([+-]\d+\.\d+) USD against always mine (\w+); the decisions' gains above add up to ([+-]\d+\.\d+)$`)
	vsRentRe   = regexp.MustCompile(`(?m)^switching made ([+-]\d+\.\d+) USD against always rent when offered$`)
)

func parse(t *testing.T, out string) printed {
	t.Helper()
	p := printed{rows: map[string]printedRow{}}
	for _, line := range strings.Split(out, "\n") {
		if m := decisionRe.FindStringSubmatch(line); m != nil {
			d := printedDecision{at: m[1], gpus: expand(t, m[2]), to: m[3]}
			if d.to == "" {
				d.from, d.to = m[4], m[5]
			}
			p.decisions = append(p.decisions, d)
		}
		if m := madeRe.FindStringSubmatch(line); m != nil {
			require.NotEmpty(t, p.decisions, "a made line before any decision: %s", line)
			d := &p.decisions[len(p.decisions)-1]
			d.made, d.gain = num(t, m[1]), num(t, m[2])
		}
		if m := rowRe.FindStringSubmatch(line); m != nil {
			key := m[1]
			if strings.HasPrefix(key, "switching") {
				key = "switching"
			}
			changes, err := strconv.Atoi(m[8])
			require.NoError(t, err)
			p.rows[key] = printedRow{num(t, m[2]), num(t, m[3]), num(t, m[4]), num(t, m[5]), num(t, m[6]), num(t, m[7]), changes}
		}
	}
	m := vsStayRe.FindStringSubmatch(out)
	require.NotNil(t, m, "the summary against staying put")
	p.vsStay, p.stayCoin, p.gainsSum = num(t, m[1]), m[2], num(t, m[3])
	m = vsRentRe.FindStringSubmatch(out)
	require.NotNil(t, m, "the summary against renting")
	p.vsRent = num(t, m[1])
	return p
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return v
}

// expand reads a GPU list such as 0-3,6.
func expand(t *testing.T, s string) []int {
	t.Helper()
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		require.NoError(t, err, s)
		b := a
		if isRange {
			b, err = strconv.Atoi(hi)
			require.NoError(t, err, s)
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out
}

// TestDay runs the command and checks what an operator reads off it: it
// decides, every GPU's decisions follow on from each other, every
// GPU-hour is booked, the per-decision money adds up to the summary, and
// on the default seed switching earns at least what each fixed strategy
// does.
func TestDay(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		gpus      int
		hours     float64
		beatFixed bool // the default day: switching earns at least as much
	}{
		{"short", []string{"-short"}, 8, 12, true},
		{"whole day", nil, 8, 24, true},
		{"rtx3090", []string{"-short", "-preset", "rtx3090"}, 6, 12, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.args == nil && testing.Short() {
				t.Skip("the whole day in -short")
			}
			var out bytes.Buffer
			err := run(context.Background(), &out, tt.args)
			t.Logf("go run ./examples/switcher %s\n%s", strings.Join(tt.args, " "), out.String())
			require.NoError(t, err)
			p := parse(t, out.String())

			require.Len(t, p.rows, 3, "a row per strategy")
			var toRent, coinSwitch int
			state := map[int]string{}
			for _, d := range p.decisions {
				for _, g := range d.gpus {
					assert.Equal(t, state[g], d.from, "GPU %d at %s leaves what it ran", g, d.at)
					state[g] = d.to
				}
				if strings.HasPrefix(d.to, "rent to ") && d.from != "" {
					toRent++
				}
				if strings.HasPrefix(d.from, "mine ") && strings.HasPrefix(d.to, "mine ") {
					coinSwitch++
				}
			}
			assert.Len(t, state, tt.gpus, "every GPU starts somewhere")
			assert.Positive(t, toRent, "some GPUs are rented out")
			if tt.beatFixed {
				assert.Positive(t, coinSwitch, "the default day has a coin worth switching to")
			}

			// Every GPU-hour is booked once, whatever the strategy.
			for name, r := range p.rows {
				assert.InDelta(t, float64(tt.gpus)*tt.hours, r.miningH+r.rentedH+r.idleH, 0.02, name)
				assert.InDelta(t, r.revenue-r.cost, r.margin, 0.00015, name)
			}
			sw, stay, rent := p.rows["switching"], p.rows["always mine "+p.stayCoin], p.rows["always rent when offered"]
			assert.Zero(t, stay.changes, "staying put never changes")
			assert.Zero(t, stay.rentedH)
			changes := 0
			for _, d := range p.decisions {
				if d.from != "" {
					changes += len(d.gpus)
				}
			}
			assert.Equal(t, sw.changes, changes, "the table counts the decisions printed")

			// The money adds up: the decisions' made partition the
			// switching day, their gains the difference to staying put.
			// Each printed figure is rounded to 0.00005.
			var made, gains float64
			for _, d := range p.decisions {
				made += d.made
				gains += d.gain
			}
			tol := 0.00005*float64(len(p.decisions)+2) + 1e-9
			assert.InDelta(t, sw.margin, made, tol, "the decisions' margins add up to the day's")
			assert.InDelta(t, p.vsStay, gains, tol, "the decisions' gains add up to the difference")
			assert.InDelta(t, p.vsStay, p.gainsSum, tol)
			assert.InDelta(t, sw.margin-stay.margin, p.vsStay, 0.00015)
			assert.InDelta(t, sw.margin-rent.margin, p.vsRent, 0.00015)

			if tt.beatFixed {
				assert.GreaterOrEqual(t, sw.margin, stay.margin, "switching earns at least what staying put does")
				assert.GreaterOrEqual(t, sw.margin, rent.margin, "switching earns at least what always renting does")
			}
		})
	}
}

// TestMoneyExact checks the same sums on the amounts themselves, to the
// millionth: the decisions' margins are the switching day's, their gains
// the difference to staying put.
func TestMoneyExact(t *testing.T) {
	cfg := shortConfig(t, defaultSeed)
	o, err := simulate(context.Background(), cfg)
	require.NoError(t, err)
	sw, err := summarize(context.Background(), o.switching)
	require.NoError(t, err)
	stay, err := summarize(context.Background(), o.stay)
	require.NoError(t, err)
	var made, gain accounting.Amount
	for _, d := range o.switching.decisions {
		require.True(t, d.End.After(d.At), "decision of GPU %d at %s ends after it starts", d.GPU, d.At)
		made += d.Made
		gain += d.Gain
	}
	assert.Equal(t, sw.revenue-sw.cost, made)
	assert.Equal(t, sw.revenue-sw.cost-(stay.revenue-stay.cost), gain)
	assert.NotZero(t, gain, "switching changed something")
}

// TestHysteresis plays made-up hours in which Ethereum Classic's profit
// moves around Ethereum's, and counts the switches of a GPU with the
// default hysteresis (5 % for 3 steps) and without (any gain, at once).
func TestHysteresis(t *testing.T) {
	alternate := func(a, b float64, every int) func(int) float64 {
		return func(i int) float64 {
			if i/every%2 == 0 {
				return a
			}
			return b
		}
	}
	from := func(n int, before, after float64) func(int) float64 {
		return func(i int) float64 {
			if i < n {
				return before
			}
			return after
		}
	}
	tests := []struct {
		name string
		// lead is how much more ETC nets than ETH at step i, as a
		// fraction.
		lead func(i int) float64
		// wantWith and wantWithout are GPU 0's switches with and
		// without hysteresis; -1 means "more than a third of the steps".
		wantWith, wantWithout int
		// firstWith is the step of the first switch with hysteresis.
		firstWith int
		// withEarnsMore: flapping costs more DAG builds than it gains.
		withEarnsMore bool
	}{
		{name: "small wiggle", lead: alternate(-0.03, 0.03, 1), wantWith: 0, wantWithout: -1, withEarnsMore: true},
		{name: "short spikes over the gain", lead: alternate(-0.08, 0.08, 2), wantWith: 0, wantWithout: -1},
		{name: "a lasting lead", lead: from(4, -0.05, 0.08), wantWith: 1, wantWithout: 1, firstWith: 4 + 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			day := leadDay(t, 24, tt.lead)
			margins := map[bool]accounting.Amount{}
			for _, with := range []bool{true, false} {
				cfg := config{preset: rtx3080Riser(t), day: day, tariff: accounting.Flat(0.10), gainPct: 5, ticks: 3, log: quiet()}
				if !with {
					cfg.gainPct, cfg.ticks = 0, 1
				}
				o, err := simulate(context.Background(), cfg)
				require.NoError(t, err)
				var at []time.Time
				for _, d := range o.switching.decisions {
					if d.GPU == 0 && !d.First {
						at = append(at, d.At)
						assert.Equal(t, actMine, d.To.act, "only coins are on offer")
					}
				}
				want := tt.wantWith
				if !with {
					want = tt.wantWithout
				}
				if want < 0 {
					assert.Greater(t, len(at), len(day)/3, "without hysteresis it flaps: %v", at)
				} else {
					assert.Len(t, at, want, "with hysteresis %v: %v", with, at)
				}
				if with && tt.firstWith > 0 && len(at) > 0 {
					assert.Equal(t, day[tt.firstWith].At, at[0], "the switch waits for the third step of the lead")
				}
				s, err := summarize(context.Background(), o.switching)
				require.NoError(t, err)
				margins[with] = s.revenue - s.cost
			}
			if tt.withEarnsMore {
				assert.Greater(t, margins[true], margins[false], "flapping costs more than it gains")
			}
		})
	}
}

// leadDay is hours of constant prices, flat power and no offer, in which
// ETC nets lead(i) more than ETH on an RTX 3080 at step i.
func leadDay(t *testing.T, steps int, lead func(int) float64) []step {
	t.Helper()
	market, err := mining.ParseWhatToMine(coinsJSON)
	require.NoError(t, err)
	m, ok := modelOf("RTX 3080")
	require.True(t, ok)
	var day []step
	for i := range steps {
		st := step{At: dayStart.Add(time.Duration(i) * stepLen), BTCUSD: btcUSDOfTheDay, PerKWh: 0.10}
		for _, c := range market.Coins {
			if !c.Marketplace {
				st.Coins = append(st.Coins, c)
			}
		}
		opts := m.options(st, false)
		eth, ok1 := find(opts, choice{act: actMine, coin: "ETH"})
		etc, ok2 := find(opts, choice{act: actMine, coin: "ETC"})
		require.True(t, ok1 && ok2)
		want := eth.est.ProfitPerHour*(1+lead(i)) + etc.est.CostPerHour
		for j := range st.Coins {
			if st.Coins[j].Tag == "ETC" {
				st.Coins[j].PriceBTC *= want / etc.est.RevenuePerHour
			}
		}
		day = append(day, st)
	}
	return day
}

func rtx3080Riser(t *testing.T) sim.Preset {
	t.Helper()
	p, err := sim.PresetByName(sim.PresetRTX3080Riser)
	require.NoError(t, err)
	return p
}

// shortConfig is the day -short plays with that seed.
func shortConfig(t *testing.T, seed uint64) config {
	t.Helper()
	cfg, err := setup(context.Background(), settings{seed: seed, preset: sim.PresetRTX3080Riser, short: true,
		gainPct: 5, ticks: 3, btcUSD: btcUSDOfTheDay, log: quiet()})
	require.NoError(t, err)
	return cfg
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSameSeedSameDay: a seed is a day, another seed another day.
func TestSameSeedSameDay(t *testing.T) {
	outs := map[string]string{}
	for _, name := range []string{"a", "b", "other"} {
		args := []string{"-short"}
		if name == "other" {
			args = append(args, "-seed", "2")
		}
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), &out, args))
		outs[name] = out.String()
	}
	assert.Equal(t, outs["a"], outs["b"])
	assert.NotEqual(t, outs["a"], outs["other"])
}

// TestCSV checks that the CSV has a row per step and that each GPU's
// column changes exactly where the printed decisions say.
func TestCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "day.csv")
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, []string{"-short", "-csv", path}))
	p := parse(t, out.String())
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 1+12*4, "a header and a row per 15 minutes")
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, h := range []string{"time", "usd_per_kwh", "eth_net_usd_per_gpu_hour", "etc_net_usd_per_gpu_hour", "offer_gpus", "gpu0", "gpu7"} {
		require.Contains(t, col, h)
	}
	byTime := map[string]map[int]string{}
	for _, d := range p.decisions {
		if byTime[d.at] == nil {
			byTime[d.at] = map[int]string{}
		}
		for _, g := range d.gpus {
			byTime[d.at][g] = d.to
		}
	}
	prev := map[int]string{}
	for _, r := range rows[1:] {
		at, err := time.Parse(time.RFC3339, r[col["time"]])
		require.NoError(t, err)
		hhmm := at.Format("15:04")
		for g := range 8 {
			now := r[col["gpu"+strconv.Itoa(g)]]
			if want, ok := byTime[hhmm][g]; ok {
				assert.Equal(t, want, now, "GPU %d at %s", g, hhmm)
			} else {
				assert.Equal(t, prev[g], now, "GPU %d at %s changed without a printed decision", g, hhmm)
			}
			prev[g] = now
		}
		offered, err := strconv.Atoi(r[col["offer_gpus"]])
		require.NoError(t, err)
		rented := 0
		for g := range 8 {
			if strings.HasPrefix(r[col["gpu"+strconv.Itoa(g)]], "rent") {
				rented++
			}
		}
		assert.LessOrEqual(t, rented, offered, "no more GPUs rented than asked for at %s", hhmm)
	}
}

func TestBadInput(t *testing.T) {
	fixtures := "../../mining/testdata/miners/whattomine/"
	tests := []struct {
		name string
		args []string
		is   error
		want []string
	}{
		{"unknown preset", []string{"-preset", "rtx9090"}, gpu.ErrNotFound, []string{`"rtx9090"`}},
		{"preset without a benchmark", []string{"-preset", "a40"}, nil, []string{`"a40"`, "rtx3080-riser, rtx3090"}},
		{"negative gain", []string{"-gain", "-1"}, mining.ErrInvalid, []string{"-gain -1"}},
		{"no ticks", []string{"-ticks", "0"}, mining.ErrInvalid, []string{"-ticks 0"}},
		{"no BTC price", []string{"-btc", "0"}, nil, []string{"-btc 0"}},
		{"an argument", []string{"now"}, nil, []string{`"now"`, "flags"}},
		{"missing coins file", []string{"-coins", filepath.Join(t.TempDir(), "none.json")}, mining.ErrUnavailable, []string{"none.json"}},
		{"no Ethash coin", []string{"-coins", fixtures + "asic.json_TRIMMED_sha256_6coins.json"}, nil, []string{"ethash", "-coins"}},
		{"unknown flag", []string{"-days", "2"}, nil, []string{"-days"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), &out, tt.args)
			require.Error(t, err)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, []string{"-h"}))
	assert.Contains(t, out.String(), "-seed")
}

// TestOtherCoins starts from another WhatToMine reply: one coin, so the
// GPUs never switch coins, and the money still adds up.
func TestOtherCoins(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, []string{"-short", "-coins", "../../mining/testdata/miners/whattomine/coins.json_2018-05_single-entry_ETH.json"})
	require.NoError(t, err, out.String())
	p := parse(t, out.String())
	for _, d := range p.decisions {
		assert.False(t, strings.HasPrefix(d.from, "mine ") && strings.HasPrefix(d.to, "mine "), "one coin: nothing to switch to")
	}
	assert.Equal(t, "ETH", p.stayCoin)
}
