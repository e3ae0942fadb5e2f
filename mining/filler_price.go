package mining

import (
	"context"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

// reprice reads the coin source, estimates every configuration on every
// GPU, remembers the best for the next fill and switches a miner whose
// best has beaten it long enough.
func (f *Filler) reprice(ctx context.Context, m *workload.Manager) {
	market, err := f.o.coins.Market(ctx)
	if err != nil {
		f.o.log.Warn("coin prices not read; the last ones stay", "err", err)
		if len(market.Coins) == 0 {
			return
		}
	}
	btc := f.o.btcPrice
	if btc == 0 && market.BTCPrice.Valid {
		btc = market.BTCPrice.Value
	}
	if btc == 0 {
		f.o.log.Warn("no BTC price: configure WithBTCPrice, or a source that has one; mining is not priced")
		return
	}
	type switchTo struct {
		t   *tracked
		to  string
		why string
	}
	var switches []switchTo
	f.mu.Lock()
	byGPU := map[string]*tracked{}
	for _, t := range f.running {
		byGPU[t.dev.UUID] = t
	}
	for _, d := range f.gpus.Devices() {
		var best Estimate
		bestOK := false
		var current *Estimate
		t := byGPU[d.UUID]
		for i, mi := range f.miners {
			if !mi.allows(d.Name) {
				continue
			}
			e, ok := f.estimateOne(d, mi, market, btc)
			if !ok {
				continue
			}
			if t != nil && t.miner == i {
				current = &e
			}
			if !bestOK || e.ProfitPerHour > best.ProfitPerHour {
				best, bestOK = e, true
			}
		}
		if current != nil {
			f.estimates[d.UUID] = *current
		} else {
			delete(f.estimates, d.UUID)
		}
		if !bestOK {
			continue
		}
		if t == nil {
			f.choice[d.UUID] = best.Miner
			continue
		}
		if current == nil {
			continue
		}
		if sw, why := f.switcher.Decide(d.UUID, *current, best); sw {
			f.choice[d.UUID] = best.Miner
			switches = append(switches, switchTo{t, best.Miner, why})
		}
	}
	f.mu.Unlock()
	for _, s := range switches {
		if err := m.Cancel(ctx, s.t.id); err != nil {
			f.emit(Event{Type: EventError, GPU: s.t.dev.UUID, Workload: s.t.id, Reason: "switch: " + err.Error()})
			continue
		}
		f.emit(Event{Type: EventSwitch, GPU: s.t.dev.UUID, Workload: s.t.id, Miner: s.to, Reason: s.why})
	}
}

// estimateOne prices a configuration on a GPU: the measured rate and draw
// when the GPU ran it, else the model's benchmark. The caller holds f.mu.
func (f *Filler) estimateOne(d gpu.Device, mi Miner, market Market, btc float64) (Estimate, bool) {
	coin, ok := market.Coin(mi.Coin)
	if mi.Coin == "" || !ok || coin.Lagging {
		return Estimate{}, false
	}
	e := Estimate{Miner: mi.Name, Algorithm: mi.Algorithm, Coin: coin.Tag, Unit: unitOf(mi.Algorithm)}
	b, hasBench := f.benchmark(d.Name, mi.Algorithm)
	ms, hasMeasure := f.measured[d.UUID+"/"+mi.Name]
	switch {
	case hasMeasure:
		e.Rate, e.RateMeasured = ms.rate, true
	case hasBench:
		e.Rate = b.Rate
	default:
		return Estimate{}, false
	}
	switch {
	case hasMeasure && ms.power:
		e.PowerW, e.PowerMeasured = ms.powerW, true
	case hasBench:
		e.PowerW = b.PowerW
	}
	e.RevenuePerHour, e.CostPerHour = estimate(coin, btc, e.Rate, e.PowerW, f.o.tariff, mi.PoolFee)
	e.ProfitPerHour = e.RevenuePerHour - e.CostPerHour
	return e, true
}
