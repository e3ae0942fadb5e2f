package main

import (
	"fmt"
	"strings"

	"github.com/gpufarm/gpufarm/mining"
)

// poolFee is a PPLNS pool's usual 1 %.
const poolFee = 0.01

// rigModel is what the farm knows about one GPU model: its mining
// benchmark and tune, and what it draws idle and rented.
type rigModel struct {
	bench mining.Benchmark
	tune  mining.Profile
	idleW float64
	// rentW is what a rented GPU draws (the operator knows it from past
	// rentals); rentUtil is the load the simulator gets for it.
	rentW, rentUtil float64
	// offerPerGPUHour is what an AI customer pays for one, before the
	// time of day's demand.
	offerPerGPUHour float64
}

// models are the GPU models the example can price.
func models() []rigModel {
	return []rigModel{{
		// lolMiner 1.26 on an RTX 3080: 91.55 MH/s at 219.857 W
		// (mining/testdata/miners/lolminer/summary_1.26_1gpu_ethash_rtx3080.json);
		// the tune caps the board at that draw. Idle: the nvidia-smi dump
		// the simulator's card comes from.
		bench: mining.Benchmark{Model: "RTX 3080", Algorithm: "ethash", Rate: 91.55e6, PowerW: 219.857},
		tune:  mining.Profile{Model: "RTX 3080", Algorithm: "ethash", PowerLimitW: 220},
		idleW: 22.78, rentW: 275, rentUtil: 0.85,
		// A 10 GB card on an x1 riser serves inference, not training:
		// a low price (SaladCloud lists an RTX 3060 at 0.047 an hour).
		offerPerGPUHour: 0.10,
	}, {
		// No miner reply of a 3090 is among the fixtures: 120 MH/s at
		// 290 W is the usual tuned figure miners reported.
		bench: mining.Benchmark{Model: "RTX 3090", Algorithm: "ethash", Rate: 120e6, PowerW: 290},
		tune:  mining.Profile{Model: "RTX 3090", Algorithm: "ethash", PowerLimitW: 290},
		idleW: 30.10, rentW: 302, rentUtil: 0.85,
		// 24 GB in an x16 slot: it trains, and rents for more.
		offerPerGPUHour: 0.22,
	}}
}

// modelOf finds the model of a GPU name ("NVIDIA GeForce RTX 3080").
func modelOf(name string) (rigModel, bool) {
	for _, m := range models() {
		if strings.HasSuffix(strings.ToLower(name), strings.ToLower(m.bench.Model)) {
			return m, true
		}
	}
	return rigModel{}, false
}

// action is what a GPU does.
type action int

const (
	actIdle action = iota
	actMine
	actRent
)

// choice is one thing a GPU can do: mine a coin, rent to a tenant, or
// stand idle.
type choice struct {
	act    action
	coin   string // tag, when mining
	tenant string // when renting
}

func (c choice) String() string {
	switch c.act {
	case actMine:
		return "mine " + c.coin
	case actRent:
		return "rent to " + c.tenant
	}
	return "idle"
}

// option is a choice priced at one step, as the SDK's Estimate: what it
// earns and costs per hour on one GPU.
type option struct {
	choice
	est mining.Estimate
}

// options prices every choice a GPU of model m has at step st; rent is
// among them when the customer's offer has room for this GPU.
func (m rigModel) options(st step, rentOK bool) []option {
	var opts []option
	for _, c := range st.Coins {
		if !strings.EqualFold(c.Algorithm, m.bench.Algorithm) {
			continue
		}
		e := mining.Estimate{Miner: "mine", Algorithm: m.bench.Algorithm, Coin: c.Tag, Rate: m.bench.Rate, Unit: mining.UnitHashes, PowerW: m.bench.PowerW}
		// WhatToMine's revenue formula, as the SDK has it, in BTC a day.
		e.RevenuePerHour = c.RevenuePerDay(m.bench.Rate, poolFee) * st.BTCUSD / 24
		e.CostPerHour = m.bench.PowerW / 1000 * st.PerKWh
		e.ProfitPerHour = e.RevenuePerHour - e.CostPerHour
		opts = append(opts, option{choice{act: actMine, coin: c.Tag}, e})
	}
	if rentOK && st.Offer.GPUs > 0 {
		// The Switcher compares Estimates by key and profit: a rental is
		// one more configuration to it.
		e := mining.Estimate{Miner: "rent", Algorithm: "ai", Coin: st.Offer.Tenant, PowerW: m.rentW,
			RevenuePerHour: st.Offer.PerGPUHour, CostPerHour: m.rentW / 1000 * st.PerKWh}
		e.ProfitPerHour = e.RevenuePerHour - e.CostPerHour
		opts = append(opts, option{choice{act: actRent, tenant: st.Offer.Tenant}, e})
	}
	idle := mining.Estimate{Miner: "idle", PowerW: m.idleW, CostPerHour: m.idleW / 1000 * st.PerKWh}
	idle.ProfitPerHour = -idle.CostPerHour
	return append(opts, option{choice{act: actIdle}, idle})
}

// best is the option with the highest profit; the first of equals.
func best(opts []option) option {
	b := opts[0]
	for _, o := range opts[1:] {
		if o.est.ProfitPerHour > b.est.ProfitPerHour {
			b = o
		}
	}
	return b
}

func find(opts []option, c choice) (option, bool) {
	for _, o := range opts {
		if o.choice == c {
			return o, true
		}
	}
	return option{}, false
}

// strategy decides what each GPU does at each step.
type strategy interface {
	name() string
	// choose returns what GPU uuid runs from this step on, and why when
	// that changes. cur is what it runs; first is true at the first step,
	// when it runs nothing yet. opts holds cur unless it is no longer
	// available (the customer's offer shrank).
	choose(uuid string, cur choice, first bool, opts []option) (option, string)
	// note is the switcher's word on the last choice, for -v.
	note() string
}

// switching moves a GPU to its most profitable option once the SDK's
// Switcher says the gain has held long enough.
type switching struct {
	sw      *mining.Switcher
	gainPct float64
	ticks   int
	lastWhy string
}

func newSwitching(gainPct float64, ticks int) (*switching, error) {
	sw, err := mining.NewSwitcher(gainPct, ticks)
	if err != nil {
		return nil, err
	}
	return &switching{sw: sw, gainPct: gainPct, ticks: ticks}, nil
}

func (s *switching) name() string {
	return fmt.Sprintf("switching (%g %% for %d steps)", s.gainPct, s.ticks)
}

func (s *switching) note() string { return s.lastWhy }

func (s *switching) choose(uuid string, cur choice, first bool, opts []option) (option, string) {
	b := best(opts)
	if first {
		s.lastWhy = "first step"
		return b, "the best of " + list(opts)
	}
	now, ok := find(opts, cur)
	if !ok {
		// Gone, not beaten: no hysteresis to wait for.
		s.sw.Forget(uuid)
		s.lastWhy = cur.String() + " is gone"
		return b, "the best left: " + list(opts)
	}
	var sw bool
	sw, s.lastWhy = s.sw.Decide(uuid, now.est, b.est)
	if !sw {
		return now, ""
	}
	return b, fmt.Sprintf("%s nets %s an hour against %s for %s (%s), ahead %d steps in a row",
		b.choice, usd(b.est.ProfitPerHour), usd(now.est.ProfitPerHour), now.choice, gain(now.est.ProfitPerHour, b.est.ProfitPerHour), s.ticks)
}

// stayPut mines the coin that pays best at the first step, all day.
type stayPut struct{ coin string }

func (s *stayPut) name() string {
	if s.coin == "" {
		return "always mine the first coin"
	}
	return "always mine " + s.coin
}

func (s *stayPut) note() string { return "" }

func (s *stayPut) choose(_ string, cur choice, first bool, opts []option) (option, string) {
	if first {
		o, _ := bestMining(opts)
		s.coin = o.coin
		return o, "the best coin at the start"
	}
	o, _ := find(opts, cur)
	return o, ""
}

// rentWhenOffered rents whenever the customer asks and mines the first
// coin otherwise.
type rentWhenOffered struct{ coin string }

func (r *rentWhenOffered) name() string { return "always rent when offered" }

func (r *rentWhenOffered) note() string { return "" }

func (r *rentWhenOffered) choose(_ string, cur choice, first bool, opts []option) (option, string) {
	if first {
		o, _ := bestMining(opts)
		r.coin = o.coin
	}
	for _, o := range opts {
		if o.act == actRent {
			return o, "rented"
		}
	}
	o, _ := find(opts, choice{act: actMine, coin: r.coin})
	return o, "not rented"
}

// bestMining is the most profitable coin among opts.
func bestMining(opts []option) (option, bool) {
	var mine []option
	for _, o := range opts {
		if o.act == actMine {
			mine = append(mine, o)
		}
	}
	if len(mine) == 0 {
		return option{}, false
	}
	return best(mine), true
}

// list prints options with their profit per hour.
func list(opts []option) string {
	parts := make([]string, len(opts))
	for i, o := range opts {
		parts[i] = o.choice.String() + " " + usd(o.est.ProfitPerHour)
	}
	return strings.Join(parts, ", ")
}

// gain is how much more to earns than from, in percent, as the Switcher
// counts it (any gain over a loss is infinite).
func gain(from, to float64) string {
	if from <= 0 {
		return "from a loss"
	}
	return fmt.Sprintf("%+.1f %%", (to-from)/from*100)
}

func usd(v float64) string { return fmt.Sprintf("%.4f", v) }
