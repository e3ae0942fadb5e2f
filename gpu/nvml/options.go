package nvml

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// OldestDriver is the oldest NVIDIA driver branch the backend is built for:
// R470, which ex-mining rigs commonly still run. Older drivers load too;
// every call newer than the installed driver is skipped for its fallback
// (see newerCalls), never called.
const OldestDriver = "470"

const oldestDriverMajor = 470

// Option configures New.
type Option func(*config)

// DefaultEventWait is how long one NVML event wait blocks before the watch
// loop looks at its context again. It bounds how late WatchEvents notices
// that it should stop (NVML's wait cannot be interrupted).
const DefaultEventWait = 500 * time.Millisecond

// pcieCostWorthLogging is the cost of one Sample's PCIe throughput reads
// from which New tells the operator about it.
const pcieCostWorthLogging = 5 * time.Millisecond

// closeGrace bounds how long Close waits for NVML calls still running
// (an event wait, or a call a caller abandoned) before it gives up rather
// than unload the library under them.
const closeGrace = 5 * time.Second

type config struct {
	libPath   string
	log       *slog.Logger
	clock     gpu.Clock
	eventWait time.Duration
	pcieTput  bool
	lib       libConfig // build-specific: the injected go-nvml library
	errs      []error
}

// WithLibraryPath loads NVML from path instead of libnvidia-ml.so.1 on the
// loader's search path, e.g. for a driver installed under /usr/local.
func WithLibraryPath(path string) Option {
	return func(c *config) {
		if path == "" {
			c.errs = append(c.errs, fmt.Errorf("%w: WithLibraryPath: empty path: pass the full path of libnvidia-ml.so.1", gpu.ErrInvalid))
			return
		}
		c.libPath = path
	}
}

// WithLogger sets the logger; nil (and the default) discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithClock sets the clock that stamps samples and events; the default is
// the system clock.
func WithClock(clk gpu.Clock) Option {
	return func(c *config) {
		if clk == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: WithClock: nil clock", gpu.ErrInvalid))
			return
		}
		c.clock = clk
	}
}

// WithEventWait sets how long one NVML event wait blocks (default
// DefaultEventWait, at least 1 ms, at most 1 minute). Shorter waits let
// WatchEvents stop sooner after its context ends at the cost of more
// wake-ups.
func WithEventWait(d time.Duration) Option {
	return func(c *config) {
		if d < time.Millisecond || d > time.Minute {
			c.errs = append(c.errs, fmt.Errorf("%w: WithEventWait(%v): want 1ms to 1m", gpu.ErrInvalid, d))
			return
		}
		c.eventWait = d
	}
}

// WithPCIeThroughput sets whether Sample reads PCIe throughput (default
// true). NVML measures it over a 20 ms window and the call may block for
// that window: the two counters may add 40 ms per GPU to every Sample, and
// Sample holds the NVML slot meanwhile, so control calls wait. New
// measures what the reads cost on this host and logs it.
func WithPCIeThroughput(enabled bool) Option {
	return func(c *config) { c.pcieTput = enabled }
}

// newConfig applies opts and reports every bad option at once.
func newConfig(opts []Option) (config, error) {
	c := config{
		log:       slog.New(slog.DiscardHandler),
		clock:     gpu.SystemClock{},
		eventWait: DefaultEventWait,
		pcieTput:  true,
	}
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: nil Option", gpu.ErrInvalid))
			continue
		}
		o(&c)
	}
	if c.libPath != "" && c.lib.set() {
		c.errs = append(c.errs, fmt.Errorf("%w: WithLibrary and WithLibraryPath both given: pass one", gpu.ErrInvalid))
	}
	if len(c.errs) > 0 {
		return c, fmt.Errorf("nvml: bad options: %w", errors.Join(c.errs...))
	}
	return c, nil
}
