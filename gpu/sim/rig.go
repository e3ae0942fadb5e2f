package sim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Rig is a simulated GPU fleet. It implements gpu.Backend and the optional
// gpu.PowerLimiter, gpu.ClockLocker, gpu.ProcessLister, gpu.EventSource and
// gpu.MIGController (cards without MIG answer SetMIG with
// gpu.ErrUnsupported). Its own methods (SetLoad, InjectXID, Hang, ...) are
// the physical world: what workloads and faults do to the cards.
//
// All methods are safe for concurrent use; one mutex guards the rig.
type Rig struct {
	name  string
	clock gpu.Clock
	log   *slog.Logger
	done  chan struct{} // closed by Close: releases hung calls and watchers

	mu       sync.Mutex
	closed   bool
	last     time.Time // latest time seen; the rig's time never runs backwards
	devs     []*device
	watchers map[*watcher]struct{}
	backlog  []gpu.Event // events nobody was watching for
	eventErr error       // set by BreakEvents
}

var (
	_ gpu.Backend       = (*Rig)(nil)
	_ gpu.PowerLimiter  = (*Rig)(nil)
	_ gpu.ClockLocker   = (*Rig)(nil)
	_ gpu.ProcessLister = (*Rig)(nil)
	_ gpu.EventSource   = (*Rig)(nil)
	_ gpu.MIGController = (*Rig)(nil)
)

// Option configures a Rig.
type Option func(*config)

type config struct {
	clock gpu.Clock
	log   *slog.Logger
}

// WithClock makes the rig read time from c, typically a *ManualClock so
// that energy and temperature move only when the test advances it. The
// default is the system clock.
func WithClock(c gpu.Clock) Option {
	return func(cfg *config) {
		if c != nil {
			cfg.clock = c
		}
	}
}

// WithLogger sets the logger for control changes and injected faults. The
// default discards.
func WithLogger(l *slog.Logger) Option {
	return func(cfg *config) {
		if l != nil {
			cfg.log = l
		}
	}
}

// maxBacklog bounds the events kept while nobody watches.
const maxBacklog = 1024

// New builds a rig from a preset. Every board starts idle at its idle
// temperature, with its boot power limit and a zero energy counter. Board
// identities left empty are derived from the preset name and the index:
// the same preset always gives the same UUIDs, serials and bus ids. Bad
// cards are reported all at once, wrapped in gpu.ErrInvalid.
func New(p Preset, opts ...Option) (*Rig, error) {
	cfg := config{clock: gpu.SystemClock{}, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	infos, err := inventory(p)
	if err != nil {
		return nil, err
	}
	now := cfg.clock.Now()
	r := &Rig{
		name:     p.Name,
		clock:    cfg.clock,
		log:      cfg.log.With("rig", p.Name),
		done:     make(chan struct{}),
		watchers: map[*watcher]struct{}{},
		last:     now,
	}
	for i, c := range p.Cards {
		r.devs = append(r.devs, newDevice(c, infos[i], now))
	}
	return r, nil
}

// inventory validates the preset and builds each board's static record.
func inventory(p Preset) ([]gpu.Device, error) {
	var errs []error
	if p.Name == "" {
		errs = append(errs, errors.New("preset has no name"))
	}
	if len(p.Cards) == 0 {
		errs = append(errs, errors.New("preset has no cards"))
	}
	infos := make([]gpu.Device, len(p.Cards))
	uuids := map[string]int{}
	buses := map[string]int{}
	// Explicit bus ids first, so derived ones avoid them.
	for i, c := range p.Cards {
		if c.PCIBusID == "" {
			continue
		}
		id, err := gpu.NormalizePCIBusID(c.PCIBusID)
		if err != nil {
			errs = append(errs, fmt.Errorf("card %d: %w", i, err))
			continue
		}
		if j, dup := buses[id]; dup {
			errs = append(errs, fmt.Errorf("card %d: PCI bus id %s already used by card %d", i, id, j))
		}
		buses[id] = i
		infos[i].PCIBusID = id
	}
	nextBus := 1
	for i, c := range p.Cards {
		for _, e := range validateCard(c) {
			errs = append(errs, fmt.Errorf("card %d (%s): %w", i, c.Name, e))
		}
		d := &infos[i]
		d.Index, d.Minor = i, i
		d.Name, d.Class, d.Architecture = c.Name, c.Class, c.Architecture
		d.ComputeCapability, d.MemoryBytes, d.VBIOS = c.ComputeCapability, c.MemoryBytes, c.VBIOS
		d.PCIDeviceID, d.ECC, d.MIG = c.PCIDeviceID, c.ECC, c.MIG
		d.LinkMax = c.linkMax()
		d.LinkMaxGPUGen, d.LinkMaxHostGen = c.DeviceLink.Gen, c.hostGen()
		d.Persistence = c.Persistence
		if c.ReservedMemoryBytes > 0 {
			d.ReservedMemoryBytes = gpu.Some(c.ReservedMemoryBytes)
		}
		d.UUID = c.UUID
		if d.UUID == "" {
			d.UUID = deriveUUID(p.Name, i)
		}
		if j, dup := uuids[d.UUID]; dup {
			errs = append(errs, fmt.Errorf("card %d: UUID %s already used by card %d", i, d.UUID, j))
		}
		uuids[d.UUID] = i
		if c.HasSerial {
			d.Serial = c.Serial
			if d.Serial == "" {
				d.Serial = deriveSerial(p.Name, i)
			}
		}
		if c.PCIBusID == "" {
			for ; nextBus <= 0xff; nextBus++ {
				id := fmt.Sprintf("0000:%02x:00.0", nextBus)
				if _, used := buses[id]; !used {
					d.PCIBusID = id
					buses[id] = i
					break
				}
			}
			if d.PCIBusID == "" {
				errs = append(errs, fmt.Errorf("card %d: no free PCI bus left to place it on", i))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: simulator preset %q: %w", gpu.ErrInvalid, p.Name, errors.Join(errs...))
	}
	return infos, nil
}

func validateCard(c Card) []error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("no name"))
	}
	if c.MemoryBytes == 0 {
		errs = append(errs, errors.New("no memory"))
	}
	if c.UUID != "" && !strings.HasPrefix(c.UUID, "GPU-") {
		errs = append(errs, fmt.Errorf("UUID %q does not start with GPU-", c.UUID))
	}
	if c.DeviceLink.Gen < 1 || c.DeviceLink.Gen > 6 || c.DeviceLink.Width < 1 {
		errs = append(errs, fmt.Errorf("device link %v: want gen 1-6 and a width", c.DeviceLink))
	}
	if c.Slot.Gen < 0 || c.Slot.Gen > 6 || c.Slot.Width < 0 {
		errs = append(errs, fmt.Errorf("slot link %v: want gen 0-6 and a non-negative width", c.Slot))
	}
	if c.Riser < 0 {
		errs = append(errs, fmt.Errorf("riser of %d lanes: want 0 (none) or more", c.Riser))
	}
	if c.ReservedMemoryBytes >= c.MemoryBytes && c.MemoryBytes > 0 {
		errs = append(errs, fmt.Errorf("reserved memory %d bytes: want less than the card's %d", c.ReservedMemoryBytes, c.MemoryBytes))
	}
	if p := c.Power; p.MaxW > 0 {
		if !(p.MinW > 0 && p.MinW <= p.DefaultW && p.DefaultW <= p.MaxW) {
			errs = append(errs, fmt.Errorf("power limits min %v, default %v, max %v: want 0 < min <= default <= max", p.MinW, p.DefaultW, p.MaxW))
		}
		if p.CurrentW != 0 && !p.Contains(p.CurrentW) {
			errs = append(errs, fmt.Errorf("boot power limit %v W outside %v-%v W", p.CurrentW, p.MinW, p.MaxW))
		}
	}
	if !(c.IdleW >= 0 && c.FullLoadW >= c.IdleW) {
		errs = append(errs, fmt.Errorf("idle %v W and full load %v W: want 0 <= idle <= full", c.IdleW, c.FullLoadW))
	}
	if c.IdleSMClockMHz < 0 || c.BoostSMClockMHz < 0 || c.BoostSMClockMHz > c.MaxSMClockMHz || c.IdleSMClockMHz > c.MaxSMClockMHz {
		errs = append(errs, fmt.Errorf("SM clocks idle %d, boost %d, max %d MHz: want 0 <= idle, boost <= max", c.IdleSMClockMHz, c.BoostSMClockMHz, c.MaxSMClockMHz))
	}
	if c.IdleMemClockMHz < 0 || c.IdleMemClockMHz > c.MaxMemClockMHz {
		errs = append(errs, fmt.Errorf("memory clocks idle %d, max %d MHz: want 0 <= idle <= max", c.IdleMemClockMHz, c.MaxMemClockMHz))
	}
	if c.LoadC < c.IdleC || c.ThermalLag < 0 {
		errs = append(errs, fmt.Errorf("thermals idle %v C, load %v C, lag %v: want idle <= load and a non-negative lag", c.IdleC, c.LoadC, c.ThermalLag))
	}
	if c.FanIdlePct < 0 || c.FanLoadPct > 100 || c.FanIdlePct > c.FanLoadPct {
		errs = append(errs, fmt.Errorf("fan %d-%d %%: want 0 <= idle <= load <= 100", c.FanIdlePct, c.FanLoadPct))
	}
	return errs
}

// deriveUUID hashes the preset name and index into NVML's UUID format.
func deriveUUID(preset string, index int) string {
	h := sha256.Sum256([]byte("gpufarm-sim/uuid/" + preset + "/" + strconv.Itoa(index)))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// deriveSerial hashes the preset name and index into a 13-digit board
// serial like those of the A40 and A100 fixtures.
func deriveSerial(preset string, index int) string {
	h := sha256.Sum256([]byte("gpufarm-sim/serial/" + preset + "/" + strconv.Itoa(index)))
	return fmt.Sprintf("132%010d", binary.BigEndian.Uint64(h[:8])%1e10)
}

var errClosed = fmt.Errorf("%w: simulated rig is closed; build a new one with sim.New", gpu.ErrUnavailable)

// now reads the clock, holding the latest time seen if the clock was set
// back, so that counters never run backwards. The caller holds r.mu.
func (r *Rig) now() time.Time {
	if t := r.clock.Now(); t.After(r.last) {
		r.last = t
	}
	return r.last
}

// device returns the device at index. The caller holds r.mu.
func (r *Rig) device(index int) (*device, error) {
	if index < 0 || index >= len(r.devs) {
		return nil, fmt.Errorf("%w: no GPU %d on simulated rig %q (it has %d: 0-%d)", gpu.ErrNotFound, index, r.name, len(r.devs), len(r.devs)-1)
	}
	return r.devs[index], nil
}

// enter starts a Backend call on one device. It honours the context, the
// rig's closure and the device's faults in the order a real call meets
// them: a hung call hangs, an injected failure fails, a lost device is
// lost. On success it returns with r.mu held.
func (r *Rig) enter(ctx context.Context, index int, op string) (*device, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s on GPU %d: %w", op, index, err)
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, errClosed
		}
		d, err := r.device(index)
		if err != nil {
			r.mu.Unlock()
			return nil, err
		}
		if h := d.hang; h != nil {
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%s on GPU %d (%s) hung until the context ended: %w", op, index, d.info.Name, ctx.Err())
			case <-r.done:
				return nil, errClosed
			case <-h:
				continue
			}
		}
		if err := d.takeFailure(); err != nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("%s on GPU %d (%s): %w", op, index, d.info.Name, err)
		}
		if d.lost {
			r.mu.Unlock()
			return nil, fmt.Errorf("%s on GPU %d (%s): %w", op, index, d.info.Name, d.lostErr())
		}
		return d, nil
	}
}

// takeFailure consumes one injected failure, if any.
func (d *device) takeFailure() error {
	if d.failN == 0 {
		return nil
	}
	d.failN--
	return d.failErr
}

func (d *device) lostErr() error {
	return fmt.Errorf("%w: xid %d, the GPU has fallen off the bus; reset the GPU or reboot the node", gpu.ErrDeviceLost, d.lostXID)
}

// Devices returns the inventory as of now (current link, MIG mode and
// power limit). Enumeration is not subject to injected faults: a lost
// device is still listed, as its bus id stays known to the driver.
func (r *Rig) Devices(ctx context.Context) ([]gpu.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list simulated GPUs: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed
	}
	out := make([]gpu.Device, len(r.devs))
	for i, d := range r.devs {
		out[i] = d.inventory()
	}
	return out, nil
}

// Sample fills dst[i] for the device at dst[i].Index. A failing device
// gets a cleared reading (Index, UUID and Time only) and a *gpu.DeviceError
// in the joined error; the other readings stay valid. If a device in dst is
// hung, the whole call waits until ctx ends (or the device is unhung), as a
// hung NVML call does. It does not allocate unless a device fails.
func (r *Rig) Sample(ctx context.Context, dst []gpu.Sample) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sample simulated GPUs: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ctxErr error
	for {
		if r.closed {
			return errClosed
		}
		h := r.hungIn(dst)
		if h == nil || ctxErr != nil {
			break
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			ctxErr = ctx.Err()
		case <-r.done:
		case <-h:
		}
		r.mu.Lock()
	}

	now := r.now()
	var errs []error
	for i := range dst {
		idx := dst[i].Index
		d, err := r.device(idx)
		if err != nil {
			dst[i] = gpu.Sample{Index: idx, Time: now}
			errs = append(errs, &gpu.DeviceError{Index: idx, Err: err})
			continue
		}
		switch {
		case d.hang != nil:
			err = fmt.Errorf("sample hung until the context ended: %w", ctxErr)
		case d.failN > 0:
			err = d.takeFailure()
		case d.lost:
			err = d.lostErr()
		default:
			d.fill(&dst[i], now)
			continue
		}
		dst[i] = gpu.Sample{Index: idx, UUID: d.info.UUID, Time: now}
		errs = append(errs, &gpu.DeviceError{Index: idx, UUID: d.info.UUID, Err: err})
	}
	if errs != nil {
		return errors.Join(errs...)
	}
	return nil
}

// hungIn returns the hang channel of the first hung device in dst.
func (r *Rig) hungIn(dst []gpu.Sample) chan struct{} {
	for i := range dst {
		if idx := dst[i].Index; idx >= 0 && idx < len(r.devs) && r.devs[idx].hang != nil {
			return r.devs[idx].hang
		}
	}
	return nil
}

// Close stops the rig: later calls fail with gpu.ErrUnavailable, hung calls
// and event watchers return. It is idempotent.
func (r *Rig) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.done)
	}
	return nil
}

// PowerLimits reads a device's power limit and its constraints.
func (r *Rig) PowerLimits(ctx context.Context, index int) (gpu.PowerLimits, error) {
	d, err := r.enter(ctx, index, "read power limits")
	if err != nil {
		return gpu.PowerLimits{}, err
	}
	defer r.mu.Unlock()
	if d.card.Power.MaxW <= 0 {
		return gpu.PowerLimits{}, fmt.Errorf("%w: GPU %d (%s) has no power management", gpu.ErrUnsupported, index, d.info.Name)
	}
	return d.powerLimits(), nil
}

// SetPowerLimit sets a device's power limit in watts (rounded to the
// milliwatt, NVML's unit). Outside [MinW, MaxW] it fails with gpu.ErrInvalid.
func (r *Rig) SetPowerLimit(ctx context.Context, index int, watts float64) error {
	d, err := r.enter(ctx, index, "set power limit")
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	p := d.card.Power
	if p.MaxW <= 0 {
		return fmt.Errorf("%w: GPU %d (%s) has no power management", gpu.ErrUnsupported, index, d.info.Name)
	}
	mw := wattsToMW(watts)
	if math.IsNaN(watts) || math.IsInf(watts, 0) || mw < wattsToMW(p.MinW) || mw > wattsToMW(p.MaxW) {
		if p.MinW == p.MaxW {
			return fmt.Errorf("%w: power limit %s W outside %s-%s W for GPU %d (%s): the limit is locked", gpu.ErrInvalid,
				fmtW(watts), fmtW(p.MinW), fmtW(p.MaxW), index, d.info.Name)
		}
		return fmt.Errorf("%w: power limit %s W outside %s-%s W for GPU %d (%s)", gpu.ErrInvalid,
			fmtW(watts), fmtW(p.MinW), fmtW(p.MaxW), index, d.info.Name)
	}
	d.advance(r.now())
	d.limitMW = mw
	d.recompute()
	r.log.Info("power limit set", "gpu", index, "watts", watts)
	return nil
}

func fmtW(w float64) string { return strconv.FormatFloat(w, 'f', -1, 64) }

// LockClocks locks the SM clock into [minMHz, maxMHz]. The card aims for
// its boost clock clamped into that range, and its dynamic power scales
// with the square of the clock ratio (see the package documentation).
func (r *Rig) LockClocks(ctx context.Context, index int, minMHz, maxMHz int) error {
	d, err := r.enter(ctx, index, "lock clocks")
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	top := d.card.MaxSMClockMHz
	if top <= 0 {
		return fmt.Errorf("%w: GPU %d (%s) has no clock control", gpu.ErrUnsupported, index, d.info.Name)
	}
	if minMHz <= 0 || minMHz > maxMHz || maxMHz > top {
		return fmt.Errorf("%w: clock lock %d-%d MHz for GPU %d (%s): want 0 < min <= max <= %d MHz", gpu.ErrInvalid, minMHz, maxMHz, index, d.info.Name, top)
	}
	d.advance(r.now())
	d.lockMin, d.lockMax = minMHz, maxMHz
	d.recompute()
	r.log.Info("clocks locked", "gpu", index, "min_mhz", minMHz, "max_mhz", maxMHz)
	return nil
}

// ResetClocks removes a clock lock.
func (r *Rig) ResetClocks(ctx context.Context, index int) error {
	d, err := r.enter(ctx, index, "reset clocks")
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	if d.card.MaxSMClockMHz <= 0 {
		return fmt.Errorf("%w: GPU %d (%s) has no clock control", gpu.ErrUnsupported, index, d.info.Name)
	}
	d.advance(r.now())
	d.lockMin, d.lockMax = 0, 0
	d.recompute()
	r.log.Info("clocks reset", "gpu", index)
	return nil
}

// Processes lists the compute processes of the device's current load.
func (r *Rig) Processes(ctx context.Context, index int) ([]gpu.Process, error) {
	d, err := r.enter(ctx, index, "list processes")
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	return append([]gpu.Process(nil), d.load.Processes...), nil
}

// SetMIG switches MIG mode. Cards without MIG answer gpu.ErrUnsupported; a
// card with compute processes answers gpu.ErrBusy, as NVML does while the
// GPU is in use.
func (r *Rig) SetMIG(ctx context.Context, index int, enabled bool) error {
	d, err := r.enter(ctx, index, "set MIG mode")
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	if d.card.MIG == gpu.FeatureUnsupported {
		return fmt.Errorf("%w: GPU %d (%s) has no MIG", gpu.ErrUnsupported, index, d.info.Name)
	}
	if n := len(d.load.Processes); n > 0 {
		return fmt.Errorf("%w: GPU %d (%s) runs %d compute processes; stop them before switching MIG mode", gpu.ErrBusy, index, d.info.Name, n)
	}
	d.mig = gpu.FeatureDisabled
	if enabled {
		d.mig = gpu.FeatureEnabled
	}
	r.log.Info("MIG mode set", "gpu", index, "enabled", enabled)
	return nil
}

// SetLoad puts a workload's load on a device from now on. It is the
// physical world, not an API call, so hangs, injected failures and a lost
// device do not affect it. A bad load is rejected whole, listing every
// problem.
func (r *Rig) SetLoad(index int, l Load) error {
	return r.world(index, func(d *device) error {
		if err := l.validate(&d.card); err != nil {
			return fmt.Errorf("%w: load for GPU %d (%s): %w", gpu.ErrInvalid, index, d.info.Name, err)
		}
		d.advance(r.now())
		d.load = l.clone()
		d.recompute()
		r.log.Debug("load set", "gpu", index, "util", l.Util, "memory_bytes", l.MemoryBytes, "processes", len(l.Processes))
		return nil
	})
}

// Load returns the load currently on a device.
func (r *Rig) Load(index int) (Load, error) {
	var l Load
	err := r.world(index, func(d *device) error {
		l = d.load.clone()
		return nil
	})
	return l, err
}

// Reset simulates a GPU reset (nvidia-smi -r): it clears a lost state, a
// hang and pending injected failures, ends the load, and restores the
// default power limit and clocks. The energy counter keeps counting.
func (r *Rig) Reset(index int) error {
	return r.world(index, func(d *device) error {
		d.reset(r.now())
		r.log.Info("GPU reset", "gpu", index)
		return nil
	})
}

// world runs fn on the device at index with r.mu held, for the methods
// that act on the physical world (loads, faults, resets): unlike a
// Backend call (enter) they ignore hangs, injected failures and a lost
// device, and fail only on a closed rig or an unknown index.
func (r *Rig) world(index int, fn func(d *device) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	d, err := r.device(index)
	if err != nil {
		return err
	}
	return fn(d)
}

// SetGPULoad puts a workload's load on the device with that UUID: the
// utilisation, memory and bus traffic that follow from util, and the
// workload's processes. Its shape is workload.LoadFunc's, so a workload
// manager on a simulated rig makes power follow what runs:
//
//	workload.WithLoad(rig.SetGPULoad)
//
// Unknown UUIDs and bad loads are logged and ignored: the caller reports
// facts and has no one to return an error to.
func (r *Rig) SetGPULoad(uuid string, util float64, pids []int) {
	r.mu.Lock()
	index, mem := -1, uint64(0)
	for i, d := range r.devs {
		if d.info.UUID == uuid {
			index, mem = i, d.info.MemoryBytes
		}
	}
	r.mu.Unlock()
	if index < 0 {
		r.log.Warn("load for unknown GPU ignored", "uuid", uuid)
		return
	}
	l := Load{Util: util, MemUtil: util * 0.8, MemoryBytes: uint64(float64(mem) * 0.8 * util)}
	for _, pid := range pids {
		l.Processes = append(l.Processes, gpu.Process{PID: pid, UsedMemoryBytes: gpu.Some(l.MemoryBytes / uint64(len(pids)))})
	}
	if err := r.SetLoad(index, l); err != nil {
		r.log.Warn("load ignored", "uuid", uuid, "err", err)
	}
}
