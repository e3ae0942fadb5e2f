package accounting

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Option configures a Meter. An option refuses a bad value: New then
// fails with ErrInvalid naming every refused option.
type Option func(*options) error

type options struct {
	log          *slog.Logger
	clock        gpu.Clock
	tariff       Tariff
	mining       MiningRevenue
	pue          float64
	wall         float64
	window       time.Duration
	maxGap       time.Duration
	maxWorkloads int
}

func defaultOptions() options {
	return options{
		log: slog.New(slog.DiscardHandler), clock: gpu.SystemClock{},
		pue: 1, wall: 1, window: time.Minute, maxGap: 30 * time.Second, maxWorkloads: 10_000,
	}
}

// WithLogger sets the logger; the default discards. Nil is refused.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("WithLogger(nil): pass a logger, or leave the option out to discard")
		}
		o.log = l
		return nil
	}
}

// WithClock sets the clock Run reads to tell the events of its own time
// from older ones; the default is the system clock. Samples carry their
// own time, stamped by the gpu.Manager's clock: give both the same clock.
func WithClock(c gpu.Clock) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("WithClock(nil): pass a clock, or leave the option out for the system clock")
		}
		o.clock = c
		return nil
	}
}

// WithTariff prices the facility energy. Without a tariff every record's
// Cost is 0 and carries FlagCostUnknown.
func WithTariff(t Tariff) Option {
	return func(o *options) error {
		if t == nil {
			return errors.New("WithTariff(nil): pass a tariff (accounting.Flat(0) for free power)")
		}
		o.tariff = t
		return nil
	}
}

// WithMiningRevenue tells the meter what mining earns. Without it, mining
// records have no revenue and carry FlagRevenueUnknown.
func WithMiningRevenue(r MiningRevenue) Option {
	return func(o *options) error {
		if r == nil {
			return errors.New("WithMiningRevenue(nil): pass a source, or leave the option out")
		}
		o.mining = r
		return nil
	}
}

// WithPUE sets the facility's power usage effectiveness (1 or more,
// default 1): cooling and distribution on top of the IT load.
func WithPUE(pue float64) Option {
	return func(o *options) error {
		if !(pue >= 1) || math.IsInf(pue, 0) {
			return fmt.Errorf("WithPUE(%v): want 1 or more", pue)
		}
		o.pue = pue
		return nil
	}
}

// WithWallFactor sets how much more a wall meter reads than the GPUs
// report (default 1): power supply losses, risers, fans and the host,
// which NVML does not see. WallFactor computes it from a wall meter's
// reading over a period.
func WithWallFactor(f float64) Option {
	return func(o *options) error {
		if !(f > 0) || math.IsInf(f, 0) {
			return fmt.Errorf("WithWallFactor(%v): want a positive factor", f)
		}
		o.wall = f
		return nil
	}
}

// WithRecordInterval sets the length of the windows records never cross
// (default 1 minute): a record ends at every window boundary and at every
// change of holder. It must divide a day, from 1 s to 24 h.
func WithRecordInterval(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Second || d > 24*time.Hour || (24*time.Hour)%d != 0 {
			return fmt.Errorf("WithRecordInterval(%v): want 1s to 24h, dividing a day", d)
		}
		o.window = d
		return nil
	}
}

// WithMaxSampleGap sets how long a GPU may go without samples before the
// time is booked as a gap (KindGap) rather than to its holder (default
// 30 s). Run's sampling interval must be shorter.
func WithMaxSampleGap(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithMaxSampleGap(%v): want a positive duration", d)
		}
		o.maxGap = d
		return nil
	}
}

// WithMaxWorkloads bounds how many workloads Stats reports totals for
// (default 10,000): the least recently booked ones are dropped first. The
// totals per tenant and kind are never dropped.
func WithMaxWorkloads(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("WithMaxWorkloads(%d): want at least 1", n)
		}
		o.maxWorkloads = n
		return nil
	}
}

// WallFactor returns the wall-meter reconciliation factor for a period: a
// wall meter's reading for the GPUs' circuit in kWh against the energy the
// GPUs reported for the same period (the sum of the records' EnergyMJ).
func WallFactor(wallKWh float64, meteredMJ int64) (float64, error) {
	if !(wallKWh > 0) || meteredMJ <= 0 {
		return 0, Errorf(ErrInvalid, "wall factor of %v kWh at the wall over %d mJ metered: want both positive", wallKWh, meteredMJ)
	}
	return wallKWh * mJPerKWh / float64(meteredMJ), nil
}
