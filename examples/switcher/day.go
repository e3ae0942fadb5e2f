package main

import (
	"context"
	_ "embed"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/mining"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// coinsJSON is three entries of WhatToMine's coins.json of 19 February
// 2020 (Ethereum, Ethereum Classic and NiceHash's Ethash marketplace), a
// real reply kept as mining/testdata/miners/whattomine/coins.json_2020-02_ethash-fragment_3coins.json.
// Its prices and difficulties start the day.
//
//go:embed coins-2020-02-19.json
var coinsJSON []byte

// dayStart is the Wednesday of the WhatToMine reply, in UTC.
var dayStart = time.Date(2020, 2, 19, 0, 0, 0, 0, time.UTC)

// btcUSDOfTheDay is about what one BTC was worth on 19 February 2020:
// coins.json prices coins in BTC only. The reply's market caps over its
// BTC prices agree, given the coins' supplies of that day.
const btcUSDOfTheDay = 10100

// stepLen is how often prices move and the switcher decides: WhatToMine
// refreshes its numbers every few minutes, and a switch costs minutes.
const stepLen = 15 * time.Minute

// step is what the farm knows at one decision time.
type step struct {
	At     time.Time
	Coins  []mining.Coin // minable coins, with this step's price and difficulty
	BTCUSD float64
	PerKWh float64 // the tariff's price at At
	Offer  offer
}

// coin returns the step's coin with that tag.
func (s step) coin(tag string) (mining.Coin, bool) {
	return mining.Market{Coins: s.Coins}.Coin(tag)
}

// offer is what the AI customer asks for at a step: GPUs at a price per
// GPU-hour; none when GPUs is 0.
type offer struct {
	Tenant     string
	GPUs       int
	PerGPUHour float64
}

// tariffBands are a time-of-use power tariff: cheap nights, a dear
// evening peak, as many European and US business tariffs have.
func tariffBands() []accounting.Band {
	return []accounting.Band{
		{Name: "night", Days: accounting.Weekdays, Start: 0, End: 7 * time.Hour, PerKWh: 0.10},
		{Name: "day", Days: accounting.Weekdays, Start: 7 * time.Hour, End: 17 * time.Hour, PerKWh: 0.18},
		{Name: "peak", Days: accounting.Weekdays, Start: 17 * time.Hour, End: 21 * time.Hour, PerKWh: 0.36},
		{Name: "evening", Days: accounting.Weekdays, Start: 21 * time.Hour, End: 24 * time.Hour, PerKWh: 0.18},
		{Name: "weekend", Days: accounting.Weekend, Start: 0, End: 24 * time.Hour, PerKWh: 0.12},
	}
}

// demand is when the AI customer wants how many GPUs, at what multiple of
// the model's base price: a cheap batch job in the morning, fine-tunes in
// the afternoon, inference at the evening peak, a little overnight batch.
var demand = []struct {
	from, to time.Duration
	gpus     int
	factor   float64
}{
	{8 * time.Hour, 12 * time.Hour, 4, 0.7},
	{12 * time.Hour, 18 * time.Hour, 6, 1.1},
	{18 * time.Hour, 22 * time.Hour, 8, 1.4},
	{22 * time.Hour, 24 * time.Hour, 2, 0.6},
}

// coinMotion is how one coin's numbers move, per hour: the log-volatility
// of its price in BTC and of its difficulty, and how fast difficulty
// follows the price (miners move their hashrate to the coin that pays
// more, which raises its difficulty within hours).
type coinMotion struct {
	priceVolH, diffVolH, followH float64
}

// motionOf gives Ethereum a deep, slow network and Ethereum Classic the
// jumpy price and hashrate it had in February 2020; other coins (from a
// -coins file) move in between.
func motionOf(tag string) coinMotion {
	switch strings.ToUpper(tag) {
	case "ETH":
		return coinMotion{priceVolH: 0.008, diffVolH: 0.002, followH: 0.03}
	case "ETC":
		return coinMotion{priceVolH: 0.025, diffVolH: 0.005, followH: 0.1}
	}
	return coinMotion{priceVolH: 0.015, diffVolH: 0.004, followH: 0.1}
}

// dayConfig is what a simulated day is made of.
type dayConfig struct {
	market    mining.Market
	btcUSD    float64
	seed      uint64
	from      time.Duration // after dayStart
	hours     int
	tariff    accounting.Tariff
	tenant    string
	basePrice float64 // per GPU-hour
	gpus      int     // on the rig: the offer never asks for more
}

// newDay builds the steps of a day: every coin's price and difficulty
// walk from the market's numbers, Bitcoin's dollar price walks, and the
// customer's offer follows demand with some noise. The same seed gives
// the same day.
func newDay(cfg dayConfig) ([]step, error) {
	if cfg.hours <= 0 || cfg.from < 0 || cfg.from+time.Duration(cfg.hours)*time.Hour > 24*time.Hour {
		return nil, fmt.Errorf("hours %d from %v: want a span inside one day", cfg.hours, cfg.from)
	}
	var coins []mining.Coin
	for _, c := range cfg.market.Coins {
		if !c.Marketplace && !c.Lagging && c.Difficulty > 0 && c.PriceBTC > 0 {
			coins = append(coins, c)
		}
	}
	if len(coins) == 0 {
		return nil, fmt.Errorf("the market has no coin with a price and a difficulty: give -coins a WhatToMine coins.json")
	}
	slices.SortFunc(coins, func(a, b mining.Coin) int { return strings.Compare(a.Name, b.Name) })
	rng := rand.New(rand.NewPCG(cfg.seed, 0x5317c4e5))
	dt := stepLen.Hours()
	sq := math.Sqrt(dt)
	start := dayStart.Add(cfg.from)
	n := cfg.hours * int(time.Hour/stepLen)
	// Logs of each coin's price and difficulty relative to the start.
	lp, ld := make([]float64, len(coins)), make([]float64, len(coins))
	lbtc, noise := 0.0, 0.0
	steps := make([]step, 0, n)
	for i := range n {
		at := start.Add(time.Duration(i) * stepLen)
		if i > 0 {
			// Coins priced in BTC move partly together (half the
			// variance is common), and each difficulty drifts towards
			// its price.
			common := rng.NormFloat64()
			for j, c := range coins {
				m := motionOf(c.Tag)
				z := math.Sqrt(0.5)*common + math.Sqrt(0.5)*rng.NormFloat64()
				ld[j] += m.followH*dt*(lp[j]-ld[j]) + m.diffVolH*sq*rng.NormFloat64()
				lp[j] += m.priceVolH * sq * z
			}
			lbtc += 0.008 * sq * rng.NormFloat64()
			noise = 0.7*noise + 0.03*rng.NormFloat64()
		}
		st := step{At: at, BTCUSD: cfg.btcUSD * math.Exp(lbtc)}
		for j, c := range coins {
			c.PriceBTC *= math.Exp(lp[j])
			c.Difficulty *= math.Exp(ld[j])
			c.Time = at
			st.Coins = append(st.Coins, c)
		}
		price, _, err := cfg.tariff.PriceAt(at)
		if err != nil {
			return nil, fmt.Errorf("the tariff has no price at %s: %w", at.Format(time.RFC3339), err)
		}
		st.PerKWh = price
		offset := at.Sub(dayStart)
		for _, d := range demand {
			if offset >= d.from && offset < d.to {
				st.Offer = offer{Tenant: cfg.tenant, GPUs: min(d.gpus, cfg.gpus), PerGPUHour: cfg.basePrice * d.factor * math.Exp(noise)}
			}
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// loadMarket reads the starting market: a WhatToMine file through the
// SDK's coin source, or the reply of 19 February 2020.
func loadMarket(ctx context.Context, path string) (mining.Market, error) {
	if path == "" {
		return mining.ParseWhatToMine(coinsJSON)
	}
	src, err := mining.NewWhatToMine(path)
	if err != nil {
		return mining.Market{}, err
	}
	m, err := src.Market(ctx)
	if err != nil {
		return mining.Market{}, fmt.Errorf("read the coins of %s: %w", path, err)
	}
	return m, nil
}
