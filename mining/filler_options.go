package mining

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// FillerOption configures a Filler; a bad value is refused by NewFiller.
type FillerOption func(*fillerOptions) error

type fillerOptions struct {
	log           *slog.Logger
	clock         gpu.Clock
	tenant        string
	portBase      int
	poll          time.Duration
	clientTimeout time.Duration
	stopGrace     time.Duration
	coins         CoinSource
	priceEvery    time.Duration
	btcPrice      float64
	tariff        float64
	benchmarks    []Benchmark
	gainPct       float64
	ticks         int
	watchdog      WatchdogConfig
	profiles      []Profile
	events        func(Event)
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) FillerOption {
	return func(o *fillerOptions) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		o.log = l
		return nil
	}
}

// WithClock sets the clock of the watchdog and the events (default the
// system clock); polling intervals are real time.
func WithClock(c gpu.Clock) FillerOption {
	return func(o *fillerOptions) error {
		if c == nil {
			return errors.New("WithClock: nil clock")
		}
		o.clock = c
		return nil
	}
}

// WithTenant sets the miners' tenant (default "mining").
func WithTenant(t string) FillerOption {
	return func(o *fillerOptions) error {
		if err := isolation.ValidateTenant(t); err != nil {
			return fmt.Errorf("WithTenant: %w", err)
		}
		o.tenant = t
		return nil
	}
}

// WithAPIPorts sets the first API port: the miner of GPU i listens on
// 127.0.0.1:base+i (default 4100).
func WithAPIPorts(base int) FillerOption {
	return func(o *fillerOptions) error {
		if base < 1024 || base > 65000 {
			return fmt.Errorf("WithAPIPorts(%d): want 1024 to 65000", base)
		}
		o.portBase = base
		return nil
	}
}

// WithPollInterval sets how often the miners' APIs are read (default
// 10 s) and the timeout of one read (default 2 s).
func WithPollInterval(every, timeout time.Duration) FillerOption {
	return func(o *fillerOptions) error {
		if every <= 0 || timeout <= 0 || timeout > every {
			return fmt.Errorf("WithPollInterval(%v, %v): want 0 < timeout <= interval", every, timeout)
		}
		o.poll, o.clientTimeout = every, timeout
		return nil
	}
}

// WithStopGrace sets the miners' stop grace (default 5 s).
func WithStopGrace(d time.Duration) FillerOption {
	return func(o *fillerOptions) error {
		if d <= 0 {
			return fmt.Errorf("WithStopGrace(%v): want a positive duration", d)
		}
		o.stopGrace = d
		return nil
	}
}

// WithCoins prices the configurations from src, read again every interval
// (default none: the first configuration a GPU allows mines).
func WithCoins(src CoinSource, every time.Duration) FillerOption {
	return func(o *fillerOptions) error {
		if src == nil || every <= 0 {
			return fmt.Errorf("WithCoins: want a source and a positive interval")
		}
		o.coins, o.priceEvery = src, every
		return nil
	}
}

// WithBTCPrice sets the price of one BTC in the operator's currency
// (default: the source's, when it has one).
func WithBTCPrice(p float64) FillerOption {
	return func(o *fillerOptions) error {
		if p <= 0 || math.IsInf(p, 0) || math.IsNaN(p) {
			return fmt.Errorf("WithBTCPrice(%v): want a positive price", p)
		}
		o.btcPrice = p
		return nil
	}
}

// WithTariff sets the price of power, in the operator's currency per kWh
// (default 0: power costs nothing).
func WithTariff(perKWh float64) FillerOption {
	return func(o *fillerOptions) error {
		if perKWh < 0 || math.IsInf(perKWh, 0) || math.IsNaN(perKWh) {
			return fmt.Errorf("WithTariff(%v): want 0 or more per kWh", perKWh)
		}
		o.tariff = perKWh
		return nil
	}
}

// WithBenchmarks sets what each GPU model does per algorithm, for prices
// before measurements and for the simulator's load.
func WithBenchmarks(bs ...Benchmark) FillerOption {
	return func(o *fillerOptions) error {
		for i, b := range bs {
			if normModel(b.Model) == "" || b.Algorithm == "" || b.Rate <= 0 || b.PowerW < 0 {
				return fmt.Errorf("WithBenchmarks[%d]: want a model, an algorithm, a positive rate and a power of 0 W or more", i)
			}
		}
		o.benchmarks = append(o.benchmarks, bs...)
		return nil
	}
}

// WithSwitching sets the hysteresis of profit switching: a gain of at
// least gainPct percent held for ticks price readings (default 5 % for 3).
func WithSwitching(gainPct float64, ticks int) FillerOption {
	return func(o *fillerOptions) error {
		if _, err := NewSwitcher(gainPct, ticks); err != nil {
			return fmt.Errorf("WithSwitching: %w", err)
		}
		o.gainPct, o.ticks = gainPct, ticks
		return nil
	}
}

// WithWatchdog sets when miners are restarted.
func WithWatchdog(cfg WatchdogConfig) FillerOption {
	return func(o *fillerOptions) error {
		if err := cfg.validate(); err != nil {
			return err
		}
		o.watchdog = cfg
		return nil
	}
}

// WithProfiles sets the tuning profiles, applied after a miner starts and
// removed when it ends.
func WithProfiles(ps ...Profile) FillerOption {
	return func(o *fillerOptions) error {
		o.profiles = append(o.profiles, ps...)
		return nil
	}
}

// WithEvents calls fn with every decision, from the goroutine of Run; it
// must be quick. Every decision is also logged.
func WithEvents(fn func(Event)) FillerOption {
	return func(o *fillerOptions) error {
		o.events = fn
		return nil
	}
}
