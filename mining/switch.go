package mining

import (
	"fmt"
	"math"
	"sync"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

// Estimate is what one miner configuration earns on one GPU, per hour, in
// the operator's currency.
type Estimate struct {
	Miner     string // adapter name
	Algorithm string // the SDK's name
	Coin      string // tag at the coin source
	Rate      float64
	Unit      Unit
	// RateMeasured: Rate is the miner's reported rate; otherwise it is
	// the benchmark for the GPU model.
	RateMeasured bool
	PowerW       float64
	// PowerMeasured: PowerW is the GPU's measured draw while it mined this;
	// otherwise it is the benchmark.
	PowerMeasured  bool
	RevenuePerHour float64 // after the pool fee
	CostPerHour    float64 // PowerW at the tariff
	ProfitPerHour  float64 // RevenuePerHour - CostPerHour
}

// key names the configuration an Estimate is of.
func (e Estimate) key() string { return e.Miner + "/" + e.Algorithm + "/" + e.Coin }

func (e Estimate) String() string {
	return fmt.Sprintf("%s %s (%s) %.4f/h (revenue %.4f, power %.0f W costs %.4f)",
		e.Miner, e.Algorithm, e.Coin, e.ProfitPerHour, e.RevenuePerHour, e.PowerW, e.CostPerHour)
}

// estimate prices rate and power on coin: revenue per day in BTC, times
// the BTC price, over 24 hours, less the power at the tariff (currency per
// kWh).
func estimate(c Coin, btcPrice, rate, powerW, tariff, poolFee float64) (revenue, cost float64) {
	revenue = c.RevenuePerDay(rate, poolFee) * btcPrice / 24
	cost = powerW / 1000 * tariff
	return revenue, cost
}

// Switcher decides, GPU by GPU, when another miner configuration is worth
// a switch: its profit must beat the current one's by at least GainPct
// percent at Ticks consecutive decisions, the same challenger each time,
// so a coin price that flickers does not restart miners. Safe for
// concurrent use.
type Switcher struct {
	gainPct float64
	ticks   int

	mu   sync.Mutex
	held map[string]holding // by GPU UUID
}

type holding struct {
	challenger string
	count      int
}

// NewSwitcher returns a switcher; gainPct must be 0 or more and ticks 1
// or more.
func NewSwitcher(gainPct float64, ticks int) (*Switcher, error) {
	if gainPct < 0 || math.IsNaN(gainPct) || ticks < 1 {
		return nil, fmt.Errorf("%w: NewSwitcher(%v, %d): want a gain of 0 %% or more held for 1 tick or more", ErrInvalid, gainPct, ticks)
	}
	return &Switcher{gainPct: gainPct, ticks: ticks, held: map[string]holding{}}, nil
}

// Decide compares the current configuration of a GPU with the best one and
// reports whether to switch now, and why (or why not yet).
func (s *Switcher) Decide(gpuUUID string, current, best Estimate) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if best.key() == current.key() {
		delete(s.held, gpuUUID)
		return false, "already on the most profitable configuration"
	}
	gain := math.Inf(1)
	if current.ProfitPerHour > 0 {
		gain = (best.ProfitPerHour - current.ProfitPerHour) / current.ProfitPerHour * 100
	} else if best.ProfitPerHour <= current.ProfitPerHour {
		gain = 0
	}
	if gain < s.gainPct {
		delete(s.held, gpuUUID)
		return false, fmt.Sprintf("%s gains %.1f %% over %s, less than %.1f %%", best.key(), gain, current.key(), s.gainPct)
	}
	h := s.held[gpuUUID]
	if h.challenger != best.key() {
		h = holding{challenger: best.key()}
	}
	h.count++
	if h.count < s.ticks {
		s.held[gpuUUID] = h
		return false, fmt.Sprintf("%s gains %.1f %% over %s, held %d of %d ticks", best.key(), gain, current.key(), h.count, s.ticks)
	}
	delete(s.held, gpuUUID)
	return true, fmt.Sprintf("%s gains %.1f %% over %s for %d ticks", best.key(), gain, current.key(), s.ticks)
}

// Forget drops what the switcher held for a GPU (its miner stopped).
func (s *Switcher) Forget(gpuUUID string) {
	s.mu.Lock()
	delete(s.held, gpuUUID)
	s.mu.Unlock()
}

// NewPolicy returns the economic workload.Policy: paid work takes GPUs
// that mine only when its price per GPU-hour beats what each of them earns
// mining by at least marginPct percent, and it says why when it does not.
// profit reports a GPU's current mining estimate (Filler.Estimate); a GPU
// without one is rented. It holds no lock of the manager and calls no
// method of it.
func NewPolicy(profit func(uuid string) (Estimate, bool), marginPct float64) (workload.Policy, error) {
	if profit == nil || marginPct < 0 || math.IsNaN(marginPct) {
		return nil, fmt.Errorf("%w: NewPolicy: want a profit func and a margin of 0 %% or more", ErrInvalid)
	}
	return workload.PolicyFunc(func(spec workload.Spec, mining []gpu.Device) (bool, string) {
		for _, d := range mining {
			e, ok := profit(d.UUID)
			if !ok || e.ProfitPerHour <= 0 {
				continue
			}
			need := e.ProfitPerHour * (1 + marginPct/100)
			if spec.PricePerGPUHour < need {
				return false, fmt.Sprintf("offer %.4f per GPU-hour does not beat mining on GPU %d (%s): %s earns %.4f per hour, %.4f with the %.0f %% margin",
					spec.PricePerGPUHour, d.Index, d.Name, e.Miner+" "+e.Algorithm, e.ProfitPerHour, need, marginPct)
			}
		}
		return true, ""
	}), nil
}
