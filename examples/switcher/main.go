package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "switcher:", err)
		os.Exit(1)
	}
}

// defaultSeed gives a day on which Ethereum Classic overtakes Ethereum
// for the morning; most seeds give days on which it never does.
const defaultSeed = 74

// config is one simulation: the rig, the day, and the switcher's
// hysteresis.
type config struct {
	preset  sim.Preset
	day     []step
	dc      dayConfig // what the day was made of
	tariff  accounting.Tariff
	gainPct float64
	ticks   int
	log     *slog.Logger
}

// settings are the command's flags that shape the simulation.
type settings struct {
	seed      uint64
	preset    string
	short     bool
	gainPct   float64
	ticks     int
	coinsPath string
	btcUSD    float64
	log       *slog.Logger
}

// run is the command without the process around it: flags in args, the
// report on out. -h prints the usage on out and succeeds.
func run(ctx context.Context, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("switcher", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: switcher [-seed n] [-preset name] [-short] [-gain pct] [-ticks n] [-coins file] [-btc usd] [-csv file] [-v]")
		fmt.Fprintln(fs.Output(), "Plays a simulated day of mining and renting GPUs with profit switching, and what it earned.")
		fs.PrintDefaults()
	}
	var s settings
	fs.Uint64Var(&s.seed, "seed", defaultSeed, "seed of the day's prices, difficulty and offers")
	fs.StringVar(&s.preset, "preset", sim.PresetRTX3080Riser, "simulated rig: "+supportedPresets())
	fs.BoolVar(&s.short, "short", false, "play 12 hours (10:00-22:00) instead of the whole day")
	fs.Float64Var(&s.gainPct, "gain", 5, "switch only for at least this gain, in percent of the current profit")
	fs.IntVar(&s.ticks, "ticks", 3, "... held for this many 15-minute steps in a row")
	fs.StringVar(&s.coinsPath, "coins", "", "a WhatToMine coins.json to start from (default: its reply of 19 February 2020)")
	fs.Float64Var(&s.btcUSD, "btc", btcUSDOfTheDay, "dollars per BTC at the start, unless the coins file prices Bitcoin")
	csvPath := fs.String("csv", "", "write every step (prices, tariff, offer, each GPU's choice) as CSV to this file")
	verbose := fs.Bool("v", false, "print GPU 0's options and the switcher's word at every step")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: all settings are flags (-h lists them)", fs.Args())
	}
	s.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg, err := setup(ctx, s)
	if err != nil {
		return err
	}
	res, err := simulate(ctx, cfg)
	if err != nil {
		return err
	}
	if err := report(ctx, out, cfg, res, *verbose); err != nil {
		return err
	}
	if *csvPath != "" {
		return writeSteps(*csvPath, cfg, res.switching)
	}
	return nil
}

// setup builds the rig and the day the settings ask for.
func setup(ctx context.Context, s settings) (config, error) {
	if s.btcUSD <= 0 {
		return config{}, fmt.Errorf("-btc %v: want a positive price", s.btcUSD)
	}
	p, err := sim.PresetByName(s.preset)
	if err != nil {
		return config{}, err
	}
	base, ok := offerBase(p)
	if !ok {
		return config{}, fmt.Errorf("preset %q has GPUs without a mining benchmark: use one of %s", p.Name, supportedPresets())
	}
	market, err := loadMarket(ctx, s.coinsPath)
	if err != nil {
		return config{}, err
	}
	if market.BTCPrice.Valid {
		s.btcUSD = market.BTCPrice.Value
	}
	tou, err := accounting.NewTimeOfUse(time.UTC, tariffBands())
	if err != nil {
		return config{}, err
	}
	dc := dayConfig{market: market, btcUSD: s.btcUSD, seed: s.seed, hours: 24, tariff: tou, tenant: "acme", basePrice: base, gpus: len(p.Cards)}
	if s.short {
		dc.from, dc.hours = 10*time.Hour, 12
	}
	day, err := newDay(dc)
	if err != nil {
		return config{}, err
	}
	if err := minable(p, day[0]); err != nil {
		return config{}, err
	}
	return config{preset: p, day: day, dc: dc, tariff: tou, gainPct: s.gainPct, ticks: s.ticks, log: s.log}, nil
}

// outcome is the day under each strategy.
type outcome struct {
	switching, stay, rent *dayResult
}

// simulate plays the day three times on identical rigs: switching, always
// mining the first coin, always renting when offered. It then prices each
// switching decision against staying put, from the two ledgers.
func simulate(ctx context.Context, cfg config) (*outcome, error) {
	if len(cfg.day) == 0 {
		return nil, errors.New("an empty day: give it at least one step")
	}
	sw, err := newSwitching(cfg.gainPct, cfg.ticks)
	if err != nil {
		return nil, fmt.Errorf("-gain %v -ticks %d: %w", cfg.gainPct, cfg.ticks, err)
	}
	var o outcome
	for _, r := range []struct {
		s   strategy
		out **dayResult
	}{{sw, &o.switching}, {&stayPut{}, &o.stay}, {&rentWhenOffered{}, &o.rent}} {
		if *r.out, err = runDay(ctx, cfg.preset, cfg.day, r.s, cfg.tariff, cfg.log); err != nil {
			return nil, fmt.Errorf("%s: %w", r.s.name(), err)
		}
	}
	for i := range o.switching.decisions {
		d := &o.switching.decisions[i]
		if d.Made, err = margin(ctx, o.switching.ledger, d.UUID, d.At, d.End); err != nil {
			return nil, err
		}
		stay, err := margin(ctx, o.stay.ledger, d.UUID, d.At, d.End)
		if err != nil {
			return nil, err
		}
		d.Gain = d.Made - stay
	}
	return &o, nil
}

// margin is what GPU uuid earned less its power over [from, to), by the
// ledger.
func margin(ctx context.Context, l accounting.Ledger, uuid string, from, to time.Time) (accounting.Amount, error) {
	rows, err := accounting.Summarize(l.Query(ctx, accounting.Query{GPU: uuid, From: from, To: to}), accounting.ByGPU)
	if err != nil {
		return 0, err
	}
	var m accounting.Amount
	for _, r := range rows {
		m += r.Margin()
	}
	return m, nil
}

// offerBase is what the customer pays for the rig's GPUs before demand:
// the lowest of its models' prices, for a rig is rented as one offer.
func offerBase(p sim.Preset) (float64, bool) {
	base := 0.0
	for i, c := range p.Cards {
		m, ok := modelOf(c.Name)
		if !ok {
			return 0, false
		}
		if i == 0 || m.offerPerGPUHour < base {
			base = m.offerPerGPUHour
		}
	}
	return base, len(p.Cards) > 0
}

// minable checks that every GPU of p has a coin to mine at st.
func minable(p sim.Preset, st step) error {
	for _, c := range p.Cards {
		m, _ := modelOf(c.Name)
		if _, ok := bestMining(m.options(st, false)); !ok {
			return fmt.Errorf("no coin of the market is mined with %s, the algorithm of the %s's benchmark: give -coins a WhatToMine coins.json with %s coins",
				m.bench.Algorithm, m.bench.Model, m.bench.Algorithm)
		}
	}
	return nil
}

// supportedPresets names the presets whose every GPU has a benchmark.
func supportedPresets() string {
	var names []string
	for _, p := range sim.Presets() {
		if _, ok := offerBase(p); ok {
			names = append(names, p.Name)
		}
	}
	return strings.Join(names, ", ")
}
