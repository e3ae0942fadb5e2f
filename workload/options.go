package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
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
// mining on its GPUs. The mining package provides one (Filler.Policy,
// NewPolicy) that compares the rental price with what each GPU earns
// mining. The manager
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

// ExitReporter looks at what a workload left behind when its container
// ended, before the end is recorded, and says it in a note that goes on
// the record (Workload.ExitNote) and on the event that tells the end: the
// training package reports from its checkpoint directory whether a
// checkpoint landed during the stop grace. It runs without the manager's
// lock, within the runtime deadline; an empty note adds nothing.
type ExitReporter interface {
	ExitReport(ctx context.Context, w Workload, exit *isolation.ExitStatus) string
}

// ExitReporterFunc adapts a function to ExitReporter.
type ExitReporterFunc func(ctx context.Context, w Workload, exit *isolation.ExitStatus) string

func (f ExitReporterFunc) ExitReport(ctx context.Context, w Workload, exit *isolation.ExitStatus) string {
	return f(ctx, w, exit)
}

// WithExitReporter sets the ExitReporter; without one, ends carry no note.
func WithExitReporter(r ExitReporter) Option { return func(o *options) { o.exitReporter = r } }

// AttemptHook adjusts a workload's container for each attempt, before
// it is created: the training package adds the resume arguments of the
// newest complete checkpoint to a requeued job. It gets the record (with
// Attempt already counting this one) and returns the command, environment
// and mounts to run; the rest of the spec stays as submitted. It runs
// without the manager's lock, within the runtime deadline. An error
// wrapping ErrInvalid fails the workload; any other requeues it with
// backoff.
type AttemptHook interface {
	PrepareAttempt(ctx context.Context, w Workload) (Attempt, error)
}

// Attempt is what an AttemptHook sets for one attempt's container.
type Attempt struct {
	Command []string
	Env     []string
	Mounts  []isolation.Mount
}

// AttemptHookFunc adapts a function to AttemptHook.
type AttemptHookFunc func(ctx context.Context, w Workload) (Attempt, error)

func (f AttemptHookFunc) PrepareAttempt(ctx context.Context, w Workload) (Attempt, error) {
	return f(ctx, w)
}

// WithAttemptHook sets the AttemptHook; without one every attempt runs
// the spec as submitted.
func WithAttemptHook(h AttemptHook) Option { return func(o *options) { o.attemptHook = h } }

// StartHook runs in a launch after the handover hygiene (the GPUs are
// clean and back at their default power limit and clocks) and just
// before the container starts, while the workload holds its GPUs: the
// mining package applies a miner's tuning profile there, so no other
// workload can ever start under it. It runs without the manager's lock,
// within the device deadline; an error abandons the launch as a failed
// create would: one wrapping ErrInvalid fails the workload, another
// requeues it with backoff (a miner is replaced).
type StartHook interface {
	BeforeStart(ctx context.Context, w Workload) error
}

// WithStartHook sets the StartHook.
func WithStartHook(h StartHook) Option { return func(o *options) { o.startHook = h } }

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
	exitReporter   ExitReporter
	attemptHook    AttemptHook
	startHook      StartHook
	tenancy        isolation.Tenancy
	hygieneTimeout time.Duration
	hygienePoll    time.Duration
	tick           time.Duration
	budgetW        float64
	powerSettle    time.Duration
	eventLog       int // events kept in memory for Watch
	deviceTimeout  time.Duration
	runtimeTimeout time.Duration
	storeTimeout   time.Duration
	retryBase      time.Duration
	retryMax       time.Duration
	retention      time.Duration
	keepEvents     int
	logTail        int
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
		deviceTimeout:  5 * time.Second,
		runtimeTimeout: 2 * time.Minute,
		storeTimeout:   10 * time.Second,
		retryBase:      time.Second,
		retryMax:       2 * time.Minute,
		retention:      7 * 24 * time.Hour,
		keepEvents:     100_000,
		logTail:        64 << 10,
		tenancy:        isolation.DefaultTenancy(DefaultMiningTenant),
	}
}

// DefaultMiningTenant is the tenant of the operator's miners in the
// default tenancy; the mining package's Filler uses it too.
const DefaultMiningTenant = isolation.DefaultMiningTenant

// WithTenancy sets what each tenant's workloads may ask for (see
// isolation.TenantPolicy): Submit and the filler refuse a spec that breaks
// its tenant's policy, naming every field and rule, before anything is
// displaced, and fill in the default limits. The default is
// isolation.DefaultTenancy(DefaultMiningTenant): no host mount and no
// host network for paid tenants, pids, memory and CPU-share limits on
// every container.
func WithTenancy(t isolation.Tenancy) Option { return func(o *options) { o.tenancy = t } }

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

// WithDeviceTimeout bounds every GPU call on the manager's path (samples,
// process lists, power limits, the filler) (default 5 s). A GPU that does
// not answer in time is marked hung: no new work goes there and the
// manager goes on with the others; it is probed until it answers again.
func WithDeviceTimeout(d time.Duration) Option { return func(o *options) { o.deviceTimeout = d } }

// WithRuntimeTimeout bounds each container runtime call of a launch
// (create, which may unpack an image, prepare, start) (default 2 min).
func WithRuntimeTimeout(d time.Duration) Option { return func(o *options) { o.runtimeTimeout = d } }

// WithStoreTimeout bounds each store write (default 10 s).
func WithStoreTimeout(d time.Duration) Option { return func(o *options) { o.storeTimeout = d } }

// WithRetryBackoff sets the wait before a launch that failed for a reason
// that may pass is tried again: base, doubling per failure up to max
// (default 1 s to 2 min). Store writes inside Run are retried the same way.
func WithRetryBackoff(base, max time.Duration) Option {
	return func(o *options) { o.retryBase, o.retryMax = base, max }
}

// WithRetention sets how long a finished workload's record, and its kept
// log tail, stay after it ended (default 7 days); Forget removes one at
// once.
func WithRetention(d time.Duration) Option { return func(o *options) { o.retention = d } }

// WithEventRetention sets how many of the newest events a store that keeps
// events holds for Watch (default 100,000).
func WithEventRetention(n int) Option { return func(o *options) { o.keepEvents = n } }

// WithLogTailBytes sets how much of a workload's output is kept after its
// container is gone, for Logs (default 64 KiB; 0 keeps none).
func WithLogTailBytes(n int) Option { return func(o *options) { o.logTail = n } }

// checkWatts refuses a power target that is negative, NaN or infinite:
// any of them would silently switch admission off.
func checkWatts(what string, w float64) error {
	if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
		return fmt.Errorf("%s(%v): want watts, or 0 for none", what, w)
	}
	return nil
}

// validate reports every bad option at once.
func (o options) validate() error {
	var errs []error
	if o.tick <= 0 {
		errs = append(errs, fmt.Errorf("WithTick(%v): want a positive interval", o.tick))
	}
	if o.hygieneTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WithHygieneTimeout(%v): want a positive timeout", o.hygieneTimeout))
	}
	if err := checkWatts("WithPowerBudget", o.budgetW); err != nil {
		errs = append(errs, err)
	}
	if o.powerSettle < 0 {
		errs = append(errs, fmt.Errorf("WithPowerSettle(%v): want 0 or more", o.powerSettle))
	}
	for name, d := range map[string]time.Duration{
		"WithDeviceTimeout": o.deviceTimeout, "WithRuntimeTimeout": o.runtimeTimeout, "WithStoreTimeout": o.storeTimeout,
		"WithRetention": o.retention,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s(%v): want a positive duration", name, d))
		}
	}
	if o.retryBase <= 0 || o.retryMax < o.retryBase {
		errs = append(errs, fmt.Errorf("WithRetryBackoff(%v, %v): want 0 < base <= max", o.retryBase, o.retryMax))
	}
	if o.keepEvents <= 0 {
		errs = append(errs, fmt.Errorf("WithEventRetention(%d): want a positive count", o.keepEvents))
	}
	if err := o.tenancy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("WithTenancy: %w", err))
	}
	if o.logTail < 0 {
		errs = append(errs, fmt.Errorf("WithLogTailBytes(%d): want 0 or more", o.logTail))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	if len(errs) == 0 {
		return nil
	}
	return errorf(ErrInvalid, "workload manager options: %w", errors.Join(errs...))
}

// WithPowerSettle sets how long a curtailment waits after each action
// before it measures the draw (default 2 s: Ampere and newer report power
// averaged over 1 s). A simulator needs none.
func WithPowerSettle(d time.Duration) Option { return func(o *options) { o.powerSettle = d } }
