//go:build cgo

package nvml

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// libConfig carries the injected library (cgo builds only).
type libConfig struct{ lib gonvml.Interface }

func (l libConfig) set() bool { return l.lib != nil }

// WithLibrary uses lib instead of loading libnvidia-ml. Tests pass go-nvml's
// mock (pkg/nvml/mock, mock/dgxa100); every function the backend calls must
// be set on the mock, since an unset mock function panics.
func WithLibrary(lib gonvml.Interface) Option {
	return func(c *config) {
		if lib == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: WithLibrary: nil library", gpu.ErrInvalid))
			return
		}
		c.lib.lib = lib
	}
}

// Backend is the NVML gpu.Backend. It also implements gpu.PowerLimiter,
// gpu.ClockLocker, gpu.ProcessLister, gpu.MIGController and gpu.EventSource.
// It is safe for concurrent use.
//
// # Hung driver calls
//
// NVML calls cannot be interrupted. When a call's ctx can end
// (ctx.Done() != nil) the backend runs the NVML work on a goroutine and
// returns as soon as ctx ends; the abandoned goroutine finishes when NVML
// returns. NVML work is serialised through one slot, so at most one call
// is ever abandoned: later calls wait for it, bounded by their own ctx, and
// fail wrapping gpu.ErrBusy if it is still stuck. With a context that never
// ends (context.Background) the work runs inline on the caller's goroutine,
// which is cheaper.
type Backend struct {
	lib       gonvml.Interface
	log       *slog.Logger
	clock     gpu.Clock
	eventWait time.Duration
	pcieTput  bool // Sample reads PCIe throughput (WithPCIeThroughput)
	// optedOut are the readings the caller turned off: every device skips
	// them from the start, and after a re-probe too.
	optedOut probe

	devs []*device // position == Index; fixed after New
	// has says which newer calls the driver exports, indexed by the sym
	// constants; fixed at New.
	has [symCount]bool
	// discoverErr joins a *gpu.DeviceError per GPU that could not be read.
	discoverErr error
	// The driver's version and the calls it must refuse; fixed at New.
	driver          driverVersion
	refuseProcesses error

	infoMu sync.RWMutex // guards devs[i].info fields changed by control calls

	// slot serialises NVML work so that a hung call strands at most one
	// goroutine. Whoever holds it owns job, batch and batchErr.
	slot     chan struct{}
	job      job
	jobFn    func() // b.runJob, bound once so starting it does not allocate
	sampleFn func() // b.sampleBatch, bound once
	scratch  []gpu.Sample
	batch    []gpu.Sample
	batchErr error

	mu        sync.Mutex // guards closed and watchers.Add
	closed    bool
	closing   chan struct{}
	watchers  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// device is one GPU: its handle, its inventory and the probes it failed.
// What Sample reads comes first, to share a cache line.
type device struct {
	h gonvml.Device
	// skip holds the probe bits whose NVML call returned NOT_SUPPORTED, so
	// Sample does not ask again.
	skip atomic.Uint32
	// memV2 is set when memory reads use GetMemoryInfo_v2, whose used
	// amount leaves out the driver's reserve.
	memV2 bool
	// broken is set for a GPU that could not be read at discovery: every
	// call on it fails with this error, which wraps gpu.ErrDeviceLost, or
	// gpu.ErrPermission when the process may not open it.
	broken error
	uuid   string
	info   gpu.Device
	// persistenceWarned is set once the backend warned that persistence
	// mode is off while it set a limit; cleared when it is seen on.
	persistenceWarned atomic.Bool
}

const (
	jobIdle int32 = iota
	jobRunning
	jobDone
	jobAbandoned
)

// job is the NVML work currently running on a goroutine.
type job struct {
	fn      func()
	cleanup func() // runs after fn only when the caller abandoned the job
	state   atomic.Int32
	done    chan struct{} // cap 1; signalled when fn finished in time
}

var (
	_ gpu.Backend       = (*Backend)(nil)
	_ gpu.PowerLimiter  = (*Backend)(nil)
	_ gpu.ClockLocker   = (*Backend)(nil)
	_ gpu.ProcessLister = (*Backend)(nil)
	_ gpu.MIGController = (*Backend)(nil)
	_ gpu.EventSource   = (*Backend)(nil)
)

// New loads NVML, initialises it and discovers the GPUs. Features a device
// lacks (NVML's ERROR_NOT_SUPPORTED) are recorded as absent, never as a
// failure. A device whose handle, UUID or name cannot be read stays listed
// as a stub whose every call fails wrapping gpu.ErrDeviceLost, or
// gpu.ErrPermission when NVML answers NO_PERMISSION (a container given
// only some /dev/nvidiaN); Devices reports each in one joined error. New
// fails only when no GPU can be read. Without the
// driver it fails wrapping gpu.ErrUnavailable and says what to install.
// Close releases the library.
func New(ctx context.Context, opts ...Option) (*Backend, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nvml: open: %w", err)
	}
	lib := cfg.lib.lib
	if lib == nil {
		var lo []gonvml.LibraryOption
		if cfg.libPath != "" {
			lo = append(lo, gonvml.WithLibraryPath(cfg.libPath))
		}
		lib = gonvml.New(lo...)
	}
	b := &Backend{
		lib:       lib,
		log:       cfg.log,
		clock:     cfg.clock,
		eventWait: cfg.eventWait,
		pcieTput:  cfg.pcieTput,
		slot:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
	}
	if !b.pcieTput {
		b.optedOut = probePCIeTx | probePCIeRx
	}
	b.job.done = make(chan struct{}, 1)
	b.jobFn = b.runJob
	b.sampleFn = b.sampleBatch

	var (
		inited   bool
		ret      gonvml.Return
		devs     []*device
		errs     []error
		pcieCost time.Duration
	)
	open := func() {
		ret = lib.Init()
		if ret != gonvml.SUCCESS {
			return
		}
		inited = true
		// Before any device call: what the driver has decides which
		// calls discovery may make at all.
		b.resolveSymbols(libSymbols(lib))
		b.readDriver()
		devs, errs = b.discover()
		if b.pcieTput {
			pcieCost = b.pcieThroughputCost(devs)
		}
	}
	// A driver that hangs in Init is the classic symptom of a wedged GPU,
	// so even opening honours ctx. If the caller gives up, the library is
	// shut down again once Init returns.
	if err := b.acquire(ctx, "open"); err != nil {
		return nil, err
	}
	b.job.cleanup = func() {
		if inited {
			lib.Shutdown()
		}
	}
	err = b.runHeld(ctx, "open", open)
	if err != nil {
		return nil, err
	}
	b.job.cleanup = nil
	b.release()

	if ret != gonvml.SUCCESS {
		return nil, initError(ret, cfg.libPath)
	}
	readable := 0
	for _, d := range devs {
		if d.broken == nil {
			readable++
		}
	}
	if readable == 0 && len(errs) > 0 {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml: discover GPUs: %w", errors.Join(errs...))
	}
	for _, d := range devs {
		if d.broken != nil {
			b.log.Error("nvml: GPU unreadable; it stays listed and fails every call", "gpu", d.info.Index, "err", d.broken)
		}
	}
	b.discoverErr = errors.Join(errs...)
	b.devs = devs
	if pcieCost >= pcieCostWorthLogging {
		b.log.Info("nvml: PCIe throughput reads block for NVML's 20 ms window; every Sample pays for them",
			"per_sample", pcieCost, "disable_with", "WithPCIeThroughput(false)")
	}
	b.log.Info("nvml backend ready", "gpus", len(devs), "driver", b.driver.text)
	return b, nil
}

// Devices returns the inventory discovered by New, in index order.
func (b *Backend) Devices(ctx context.Context) ([]gpu.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nvml: devices: %w", err)
	}
	if b.isClosed() {
		return nil, errClosed("devices")
	}
	b.infoMu.RLock()
	defer b.infoMu.RUnlock()
	out := make([]gpu.Device, len(b.devs))
	for i, d := range b.devs {
		out[i] = d.info
	}
	return out, b.discoverErr
}

// Close waits briefly for NVML calls still running, then shuts NVML down.
// It is idempotent. If a call is still stuck after a few seconds, Close
// leaves the library loaded rather than unload it under that call, and
// says so in its error.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.closing)
		b.mu.Unlock()

		timer := time.NewTimer(closeGrace)
		defer timer.Stop()
		// Taking the slot for good waits for the running call and keeps
		// every later one out.
		select {
		case b.slot <- struct{}{}:
		case <-timer.C:
			b.closeErr = fmt.Errorf("nvml: close: %w: an NVML call has been running for over %v; the library stays loaded", gpu.ErrBusy, closeGrace)
			return
		}
		watchersDone := make(chan struct{})
		go func() { b.watchers.Wait(); close(watchersDone) }()
		select {
		case <-watchersDone:
		case <-timer.C:
			b.closeErr = fmt.Errorf("nvml: close: %w: an NVML event wait has been running for over %v; the library stays loaded", gpu.ErrBusy, closeGrace)
			return
		}
		if err := nvErr("shutdown", b.lib.Shutdown()); err != nil {
			b.closeErr = err
		}
	})
	return b.closeErr
}

func (b *Backend) isClosed() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

func errClosed(op string) error {
	return fmt.Errorf("nvml: %s: %w: the backend is closed", op, gpu.ErrUnavailable)
}

// device returns the device at index or an error wrapping gpu.ErrNotFound.
func (b *Backend) device(index int) (*device, error) {
	if index < 0 || index >= len(b.devs) {
		return nil, fmt.Errorf("%w: no GPU with index %d: this node has %d (0-%d)", gpu.ErrNotFound, index, len(b.devs), len(b.devs)-1)
	}
	if d := b.devs[index]; d.broken != nil {
		return nil, d.broken
	}
	return b.devs[index], nil
}

// acquire takes the NVML slot, waiting at most until ctx ends.
func (b *Backend) acquire(ctx context.Context, op string) error {
	if b.isClosed() {
		return errClosed(op)
	}
	select {
	case b.slot <- struct{}{}:
	case <-b.closing:
		return errClosed(op)
	case <-ctx.Done():
		return fmt.Errorf("nvml: %s: %w: an earlier NVML call is still running (hung driver?): %w", op, gpu.ErrBusy, ctx.Err())
	}
	if b.isClosed() {
		b.release()
		return errClosed(op)
	}
	return nil
}

func (b *Backend) release() { <-b.slot }

// runHeld runs fn while the caller holds the slot. When ctx can end, fn
// runs on a goroutine and runHeld returns at ctx's end: the goroutine then
// owns the slot and releases it when fn returns. On success the caller
// still holds the slot and must release it.
func (b *Backend) runHeld(ctx context.Context, op string, fn func()) error {
	if ctx.Done() == nil {
		fn()
		return nil
	}
	j := &b.job
	j.fn = fn
	j.state.Store(jobRunning)
	go b.jobFn()
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		if j.state.CompareAndSwap(jobRunning, jobAbandoned) {
			b.log.Warn("nvml call outlived its context; it finishes when the driver returns", "op", op)
			return fmt.Errorf("nvml: %s: %w (the NVML call keeps running until the driver returns)", op, ctx.Err())
		}
		<-j.done // finished just in time
		return nil
	}
}

func (b *Backend) runJob() {
	j := &b.job
	j.fn()
	if j.state.CompareAndSwap(jobRunning, jobDone) {
		j.done <- struct{}{}
		return
	}
	// Abandoned: nobody waits for us, so clean up and free the slot.
	if j.cleanup != nil {
		j.cleanup()
	}
	b.release()
}

// call runs one NVML operation under the slot, honouring ctx.
func (b *Backend) call(ctx context.Context, op string, fn func()) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nvml: %s: %w", op, err)
	}
	if err := b.acquire(ctx, op); err != nil {
		return err
	}
	if err := b.runHeld(ctx, op, fn); err != nil {
		return err
	}
	b.release()
	return nil
}
