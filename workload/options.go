package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Filler chooses the miner for an idle GPU. The mining package provides one
// that picks the miner and algorithm by GPU model.
type Filler interface {
	// Fill returns the spec of a miner for the idle GPU d, or false to
	// leave it idle. The manager sets the ID, Kind and GPUs of the spec.
	Fill(ctx context.Context, d gpu.Device) (Spec, bool)
}

// FillerFunc adapts a function to Filler.
type FillerFunc func(ctx context.Context, d gpu.Device) (Spec, bool)

func (f FillerFunc) Fill(ctx context.Context, d gpu.Device) (Spec, bool) { return f(ctx, d) }

// Policy is the economic policy: whether paid work is worth displacing the
// mining on its GPUs. The accounting and mining packages provide ones that
// compare the rental price with what each GPU earns mining. The manager
// calls it while it holds its lock: it must be quick and must not call
// back into the Manager.
type Policy interface {
	// Displace reports whether spec should take GPUs that now mine, and why
	// not when it should not. A paid workload that is not worth it waits
	// for GPUs that are idle.
	Displace(spec Spec, mining []gpu.Device) (bool, string)
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(spec Spec, mining []gpu.Device) (bool, string)

func (f PolicyFunc) Displace(spec Spec, mining []gpu.Device) (bool, string) { return f(spec, mining) }

// AlwaysRent returns the default Policy: paid work always displaces mining.
func AlwaysRent() Policy {
	return PolicyFunc(func(Spec, []gpu.Device) (bool, string) { return true, "" })
}

// LoadFunc is told the load each GPU carries as workloads start and stop
// (under the manager's lock: it must be quick and must not call back):
// the utilisation and the PIDs of the workload's processes. Wire it to the
// simulator (sim.Rig.SetGPULoad) so simulated power follows what runs; real
// GPUs need nothing.
type LoadFunc func(uuid string, util float64, pids []int)

// Option configures a Manager.
type Option func(*options)

type options struct {
	log            *slog.Logger
	clock          gpu.Clock
	store          Store
	filler         Filler
	policy         Policy
	load           LoadFunc
	hygieneTimeout time.Duration
	hygienePoll    time.Duration
	tick           time.Duration
	budgetW        float64
	powerSettle    time.Duration
	eventLog       int
}

func defaultOptions() options {
	return options{
		log:            slog.New(slog.DiscardHandler),
		clock:          gpu.SystemClock{},
		policy:         AlwaysRent(),
		hygieneTimeout: 10 * time.Second,
		hygienePoll:    50 * time.Millisecond,
		tick:           time.Second,
		powerSettle:    2 * time.Second,
		eventLog:       4096,
	}
}

// WithLogger sets the logger; the default (and nil) discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithClock sets the clock that stamps records and events and measures
// minimum runtimes; the default (and nil) is the system clock. Waiting
// (stop grace, hygiene polls) uses real time.
func WithClock(c gpu.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithStore keeps records in s; the default is a MemoryStore, which does
// not survive a restart. The manager closes the store in Close.
func WithStore(s Store) Option { return func(o *options) { o.store = s } }

// WithFiller fills idle GPUs with miners; without one idle GPUs stay idle.
func WithFiller(f Filler) Option { return func(o *options) { o.filler = f } }

// WithPolicy sets the economic policy; the default is AlwaysRent.
func WithPolicy(p Policy) Option { return func(o *options) { o.policy = p } }

// WithLoad reports each GPU's load as workloads start and stop.
func WithLoad(f LoadFunc) Option { return func(o *options) { o.load = f } }

// WithHygieneTimeout bounds the wait for a handed-over GPU to have no
// compute process left (default 10 s). Past it the GPU is quarantined.
func WithHygieneTimeout(d time.Duration) Option { return func(o *options) { o.hygieneTimeout = d } }

// WithTick sets how often Run samples power against the budget and
// retries placement (default 1 s).
func WithTick(d time.Duration) Option { return func(o *options) { o.tick = d } }

// WithPowerBudget sets a standing site power budget in watts for the GPUs
// (0, the default, is none). Run enforces it as Curtail does.
func WithPowerBudget(watts float64) Option { return func(o *options) { o.budgetW = watts } }

// validate reports every bad option at once.
func (o options) validate() error {
	var errs []error
	if o.tick <= 0 {
		errs = append(errs, fmt.Errorf("WithTick(%v): want a positive interval", o.tick))
	}
	if o.hygieneTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WithHygieneTimeout(%v): want a positive timeout", o.hygieneTimeout))
	}
	if o.budgetW < 0 {
		errs = append(errs, fmt.Errorf("WithPowerBudget(%v): want watts, or 0 for none", o.budgetW))
	}
	if o.powerSettle < 0 {
		errs = append(errs, fmt.Errorf("WithPowerSettle(%v): want 0 or more", o.powerSettle))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

// WithPowerSettle sets how long a curtailment waits after each action
// before it measures the draw (default 2 s: Ampere and newer report power
// averaged over 1 s). A simulator needs none.
func WithPowerSettle(d time.Duration) Option { return func(o *options) { o.powerSettle = d } }
