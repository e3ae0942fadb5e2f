package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
)

// Option configures a Manager.
type Option func(*options)

type options struct {
	log        *slog.Logger
	clock      Clock
	eventRetry time.Duration
}

// WithLogger sets the logger; the default (and nil) discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithClock sets the clock that stamps samples and events; the default (and
// nil) is the system clock. Give the simulator's clock here to drive time
// in tests.
func WithClock(c Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithEventRetry sets how long the Manager waits before it reopens a
// broken health event stream, and how long a reopened stream must hold
// before the devices it marked unhealthy for the break count as healthy
// again (default 5 s).
func WithEventRetry(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.eventRetry = d
		}
	}
}

// Manager is the node's view of its GPUs: inventory, telemetry, control and
// health over one Backend. It is safe for concurrent use.
//
// The Manager owns one goroutine when the backend reports events; Close
// stops it.
type Manager struct {
	backend Backend
	log     *slog.Logger
	clock   Clock
	byUUID  map[string]int

	mu          sync.RWMutex
	devices     []Device // PowerLimit.Value.CurrentW follows SetPowerLimit
	health      []Health
	startLimitW []float64 // each device's limit at New: restored when it tells no default

	subMu sync.Mutex
	subs  map[*subscriber]struct{}

	retry     time.Duration
	stop      context.CancelFunc
	done      chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type subscriber struct {
	ch   chan Event
	done <-chan struct{}
	stop func() bool
}

// New discovers the backend's devices and starts watching their health. The
// Manager takes ownership of the backend: it closes it in Close, and at once
// when New fails.
func New(ctx context.Context, b Backend, opts ...Option) (m *Manager, err error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil backend: pass nvml.New(...) or sim.New(...)", ErrInvalid)
	}
	o := options{log: slog.New(slog.DiscardHandler), clock: SystemClock{}, eventRetry: 5 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	devs, err := b.Devices(ctx)
	unreadable := map[int]error{}
	if err != nil {
		// Devices the backend lists but cannot read do not stop the
		// node: they are kept, unhealthy, and the rest run on.
		other := walkDeviceErrors(err, func(de *DeviceError) { unreadable[de.Index] = de.Err })
		if other || len(devs) == 0 {
			return nil, fmt.Errorf("discover devices: %w", err)
		}
		err = nil
	}
	m = &Manager{
		backend: b,
		log:     o.log,
		clock:   o.clock,
		byUUID:  make(map[string]int, len(devs)),
		devices: devs,
		health:  make([]Health, len(devs)),
		subs:    map[*subscriber]struct{}{},
		retry:   o.eventRetry,
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
	}
	m.startLimitW = make([]float64, len(devs))
	for i, d := range devs {
		if d.PowerLimit.Valid {
			m.startLimitW[i] = d.PowerLimit.Value.CurrentW
		}
		if d.Index != i {
			return nil, fmt.Errorf("%w: backend reported device %s at position %d with index %d", ErrInvalid, d.UUID, i, d.Index)
		}
		if d.UUID == "" && unreadable[i] != nil {
			// Still addressable, by a name that cannot be a real UUID.
			d.UUID = fmt.Sprintf("GPU-unreadable-%d", i)
			m.devices[i].UUID = d.UUID
		}
		if _, dup := m.byUUID[d.UUID]; dup {
			return nil, fmt.Errorf("%w: backend reported UUID %s twice", ErrInvalid, d.UUID)
		}
		m.byUUID[d.UUID] = i
		m.health[i] = Health{Healthy: true}
		if derr := unreadable[i]; derr != nil {
			m.health[i] = Health{Reason: "unreadable at discovery: " + derr.Error(), Since: m.clock.Now()}
			m.log.Error("gpu unreadable; kept as unhealthy", "gpu", i, "err", derr)
		}
	}
	es, ok := b.(EventSource)
	if !ok {
		close(m.done)
		m.stop = func() {}
		return m, nil
	}
	// The watch goroutine must outlive New's ctx, which only bounds
	// discovery; Close ends it.
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	m.stop = stop
	go m.watch(wctx, es)
	return m, nil
}

// Close stops health watching, ends every Watch channel and closes the
// backend. It is idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.stop()
		<-m.done
		close(m.closed)
		m.subMu.Lock()
		for s := range m.subs {
			s.stop()
			close(s.ch)
			delete(m.subs, s)
		}
		m.subMu.Unlock()
		m.closeErr = m.backend.Close()
	})
	return m.closeErr
}

// Devices returns the inventory, in index order.
func (m *Manager) Devices() []Device {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]Device(nil), m.devices...)
}

// Device returns the inventory record of the GPU with that UUID.
func (m *Manager) Device(uuid string) (Device, error) {
	i, err := m.index(uuid)
	if err != nil {
		return Device{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.devices[i], nil
}

func (m *Manager) index(uuid string) (int, error) {
	i, ok := m.byUUID[uuid]
	if !ok {
		return 0, fmt.Errorf("%w: no GPU with UUID %q on this node; list them with Manager.Devices", ErrNotFound, uuid)
	}
	return i, nil
}

// SampleAll samples every device into dst, reusing its storage, and returns
// it in index order. It does not allocate when dst has room for every
// device. When some devices fail, the others' samples are still returned
// with an error joining one *DeviceError per failed device; a lost device is
// marked unhealthy.
func (m *Manager) SampleAll(ctx context.Context, dst []Sample) ([]Sample, error) {
	n := len(m.devices) // the device list never changes length
	if cap(dst) < n {
		dst = make([]Sample, n)
	}
	dst = dst[:n]
	for i := range dst {
		dst[i] = Sample{Index: i, UUID: m.devices[i].UUID}
	}
	err := m.backend.Sample(ctx, dst)
	now := m.clock.Now()
	for i := range dst {
		dst[i].Time = now
	}
	if err != nil {
		m.noteDeviceErrors(ctx, err)
	}
	return dst, err
}

// Sample samples one device.
func (m *Manager) Sample(ctx context.Context, uuid string) (Sample, error) {
	i, err := m.index(uuid)
	if err != nil {
		return Sample{}, err
	}
	dst := []Sample{{Index: i, UUID: uuid}}
	err = m.backend.Sample(ctx, dst)
	dst[0].Time = m.clock.Now()
	if err != nil {
		m.noteDeviceErrors(ctx, err)
	}
	return dst[0], err
}

// noteDeviceErrors marks devices that a call found lost.
func (m *Manager) noteDeviceErrors(ctx context.Context, err error) {
	var lost []int
	walkDeviceErrors(err, func(de *DeviceError) {
		if errors.Is(de.Err, ErrDeviceLost) && de.Index >= 0 && de.Index < len(m.devices) {
			m.mu.RLock()
			h := m.health[de.Index]
			m.mu.RUnlock()
			if h.Healthy || h.Unknown { // tell the watchers once, not on every sample
				lost = append(lost, de.Index)
			}
		}
	})
	for _, i := range lost {
		m.handle(ctx, Event{Index: i, Kind: EventDeviceLost, XID: 79})
	}
}

// walkDeviceErrors calls fn for every *DeviceError in err's tree and
// reports whether the tree also holds an error that is not about one
// device.
func walkDeviceErrors(err error, fn func(*DeviceError)) (other bool) {
	if de, ok := err.(*DeviceError); ok {
		fn(de)
		return false
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			other = walkDeviceErrors(e, fn) || other
		}
		return other
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			return walkDeviceErrors(e, fn)
		}
	}
	return true
}

// Health returns the health of the GPU with that UUID.
func (m *Manager) Health(uuid string) (Health, error) {
	i, err := m.index(uuid)
	if err != nil {
		return Health{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.health[i], nil
}

// ResetHealth marks a device healthy again, after an operator reset it.
func (m *Manager) ResetHealth(uuid string) error {
	i, err := m.index(uuid)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.health[i] = Health{Healthy: true}
	m.mu.Unlock()
	m.log.Info("gpu health reset", "gpu", i, "uuid", uuid)
	return nil
}

// Watch returns a channel of health events, application Xids included (with
// Fatal false). The channel is closed when ctx ends or the Manager closes.
// A reader that falls behind by more than the channel's buffer holds up the
// other watchers, so read promptly.
func (m *Manager) Watch(ctx context.Context) <-chan Event {
	s := &subscriber{ch: make(chan Event, 64), done: ctx.Done()}
	m.subMu.Lock()
	defer m.subMu.Unlock()
	select {
	case <-m.closed:
		close(s.ch)
		return s.ch
	default:
	}
	m.subs[s] = struct{}{}
	s.stop = context.AfterFunc(ctx, func() {
		m.subMu.Lock()
		defer m.subMu.Unlock()
		if _, ok := m.subs[s]; ok {
			delete(m.subs, s)
			close(s.ch)
		}
	})
	return s.ch
}

func (m *Manager) watch(ctx context.Context, es EventSource) {
	defer close(m.done)
	ch := make(chan Event, 16)
	broken := false
	for {
		errc := make(chan error, 1)
		go func() { errc <- es.WatchEvents(ctx, ch) }() // ends with ctx; awaited below
		var held <-chan time.Time
		if broken {
			held = time.After(m.retry)
		}
		err := m.pump(ctx, ch, errc, held, &broken)
		if ctx.Err() != nil {
			return
		}
		if !broken {
			// Without events nobody would notice a failing GPU, so no
			// device can be called healthy until the stream is back; but
			// nothing says one failed, so work on them goes on.
			m.log.Error("gpu health events stopped; every device's health is unknown until they are back", "err", err, "retry", m.retry)
			for i := range m.devices {
				m.handle(ctx, Event{Index: i, Kind: EventEventPathBroken})
			}
			broken = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.retry):
		}
	}
}

// pump forwards events until the stream ends, and returns its error. When
// the stream was broken and holds until held fires, the devices marked
// unhealthy only for the break are healthy again.
func (m *Manager) pump(ctx context.Context, ch <-chan Event, errc <-chan error, held <-chan time.Time, broken *bool) error {
	for {
		select {
		case e := <-ch:
			m.handle(ctx, e)
		case err := <-errc:
			return err
		case <-held:
			held = nil
			*broken = false
			m.restoreAfterBreak()
		}
	}
}

// restoreAfterBreak makes the devices whose health was unknown only
// because the event stream broke healthy again.
func (m *Manager) restoreAfterBreak() {
	m.mu.Lock()
	n := 0
	for i, h := range m.health {
		if h.Unknown {
			m.health[i] = Health{Healthy: true}
			n++
		}
	}
	m.mu.Unlock()
	m.log.Info("gpu health events are back", "devices_restored", n)
}

// handle records an event's effect on health and fans it out.
func (m *Manager) handle(ctx context.Context, e Event) {
	if e.Index < 0 || e.Index >= len(m.devices) {
		m.log.Warn("gpu event for unknown device", "index", e.Index, "kind", e.Kind.String())
		return
	}
	e.UUID = m.devices[e.Index].UUID
	if e.Time.IsZero() {
		e.Time = m.clock.Now()
	}
	e.Fatal = e.fatal()
	if e.Kind == EventXID && e.XID == 79 {
		e.Kind = EventDeviceLost
	}
	m.mu.Lock()
	h := m.health[e.Index]
	changed := false
	switch {
	case e.Fatal && (h.Healthy || h.Unknown):
		m.health[e.Index] = Health{Reason: e.reason(), XID: e.XID, Since: e.Time}
		changed = true
	case e.Kind == EventEventPathBroken && h.Healthy:
		m.health[e.Index] = Health{Unknown: true, Reason: e.reason(), Since: e.Time}
		changed = true
	}
	m.mu.Unlock()
	switch {
	case changed && e.Fatal:
		m.log.Warn("gpu unhealthy", "gpu", e.Index, "uuid", e.UUID, "reason", e.reason())
	case changed:
		m.log.Warn("gpu health unknown", "gpu", e.Index, "uuid", e.UUID, "reason", e.reason())
	case e.Kind == EventXID:
		m.log.Info("gpu non-fatal xid", "gpu", e.Index, "uuid", e.UUID, "xid", e.XID, "text", XIDText(e.XID))
	}
	m.publish(ctx, e)
}

func (m *Manager) publish(ctx context.Context, e Event) {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	for s := range m.subs {
		select {
		case s.ch <- e:
		case <-s.done:
		case <-m.closed:
			return
		case <-ctx.Done():
			return
		}
	}
}

// SetPowerLimit sets the power limit of a GPU in watts, within the limits the
// device allows.
func (m *Manager) SetPowerLimit(ctx context.Context, uuid string, watts float64) error {
	i, pl, err := m.powerLimiter(uuid)
	if err != nil {
		return err
	}
	m.mu.RLock()
	d := m.devices[i]
	m.mu.RUnlock()
	if lim := d.PowerLimit.Value; d.PowerLimit.Valid && !lim.Contains(watts) {
		return fmt.Errorf("%w: power limit %g W for GPU %d (%s) is outside its allowed range %g-%g W",
			ErrInvalid, watts, i, d.Name, lim.MinW, lim.MaxW)
	}
	if err := pl.SetPowerLimit(ctx, i, watts); err != nil {
		return fmt.Errorf("set power limit of GPU %d: %w", i, err)
	}
	// What the driver enforces now, which a driver may round: read back,
	// so the inventory never reports a limit that is not in force.
	inForce := watts
	if lim, err := pl.PowerLimits(ctx, i); err == nil {
		inForce = lim.CurrentW
	}
	m.mu.Lock()
	if m.devices[i].PowerLimit.Valid {
		m.devices[i].PowerLimit.Value.CurrentW = inForce
	}
	m.mu.Unlock()
	m.log.Info("gpu power limit set", "gpu", i, "uuid", uuid, "watts", watts, "in_force_w", inForce)
	return nil
}

// ResetPowerLimit restores the device's default power limit. A device that
// does not tell its default gets back the limit it had when the Manager
// was made, before anything here changed it; when that is unknown too, the
// error wraps ErrUnsupported and says so, since nothing can be restored.
func (m *Manager) ResetPowerLimit(ctx context.Context, uuid string) error {
	i, pl, err := m.powerLimiter(uuid)
	if err != nil {
		return err
	}
	lim, err := pl.PowerLimits(ctx, i)
	if err != nil {
		return fmt.Errorf("read power limits of GPU %d: %w", i, err)
	}
	if lim.HasDefault() {
		return m.SetPowerLimit(ctx, uuid, lim.DefaultW)
	}
	if start := m.startLimitW[i]; start > 0 {
		m.log.Warn("gpu reports no default power limit; restoring the limit it had at start", "gpu", i, "uuid", uuid, "watts", start)
		return m.SetPowerLimit(ctx, uuid, start)
	}
	return fmt.Errorf("%w: GPU %d reports no default power limit and had none at start: nothing to restore; set one with nvidia-smi -pl", ErrUnsupported, i)
}

// PowerLimits reads a device's current power limit and its constraints.
func (m *Manager) PowerLimits(ctx context.Context, uuid string) (PowerLimits, error) {
	i, pl, err := m.powerLimiter(uuid)
	if err != nil {
		return PowerLimits{}, err
	}
	return pl.PowerLimits(ctx, i)
}

func (m *Manager) powerLimiter(uuid string) (int, PowerLimiter, error) {
	i, err := m.index(uuid)
	if err != nil {
		return 0, nil, err
	}
	pl, ok := m.backend.(PowerLimiter)
	if !ok {
		return 0, nil, fmt.Errorf("%w: this backend cannot control power limits", ErrUnsupported)
	}
	return i, pl, nil
}

// LockClocks locks the GPU (SM) clock of a device to [minMHz, maxMHz].
func (m *Manager) LockClocks(ctx context.Context, uuid string, minMHz, maxMHz int) error {
	i, cl, err := m.clockLocker(uuid)
	if err != nil {
		return err
	}
	if minMHz <= 0 || maxMHz < minMHz {
		return fmt.Errorf("%w: clock range %d-%d MHz: want 0 < min <= max", ErrInvalid, minMHz, maxMHz)
	}
	if err := cl.LockClocks(ctx, i, minMHz, maxMHz); err != nil {
		return fmt.Errorf("lock clocks of GPU %d: %w", i, err)
	}
	m.log.Info("gpu clocks locked", "gpu", i, "uuid", uuid, "min_mhz", minMHz, "max_mhz", maxMHz)
	return nil
}

// ResetClocks releases locked clocks.
func (m *Manager) ResetClocks(ctx context.Context, uuid string) error {
	i, cl, err := m.clockLocker(uuid)
	if err != nil {
		return err
	}
	if err := cl.ResetClocks(ctx, i); err != nil {
		return fmt.Errorf("reset clocks of GPU %d: %w", i, err)
	}
	return nil
}

func (m *Manager) clockLocker(uuid string) (int, ClockLocker, error) {
	i, err := m.index(uuid)
	if err != nil {
		return 0, nil, err
	}
	cl, ok := m.backend.(ClockLocker)
	if !ok {
		return 0, nil, fmt.Errorf("%w: this backend cannot lock clocks", ErrUnsupported)
	}
	return i, cl, nil
}

// RestoreDefaults resets the power limit and the clocks of a device, so that
// one tenant's tuning never reaches the next. What the device does not
// support is skipped; other failures are all reported.
func (m *Manager) RestoreDefaults(ctx context.Context, uuid string) error {
	var errs multierror.Error
	if err := m.ResetPowerLimit(ctx, uuid); err != nil && !errors.Is(err, ErrUnsupported) {
		errs.Errors = append(errs.Errors, err)
	}
	if err := m.ResetClocks(ctx, uuid); err != nil && !errors.Is(err, ErrUnsupported) {
		errs.Errors = append(errs.Errors, err)
	}
	return errs.ErrorOrNil()
}

// Processes lists the compute processes running on a device.
func (m *Manager) Processes(ctx context.Context, uuid string) ([]Process, error) {
	i, err := m.index(uuid)
	if err != nil {
		return nil, err
	}
	pl, ok := m.backend.(ProcessLister)
	if !ok {
		return nil, fmt.Errorf("%w: this backend cannot list processes", ErrUnsupported)
	}
	return pl.Processes(ctx, i)
}

// SetMIG enables or disables MIG mode on a device.
func (m *Manager) SetMIG(ctx context.Context, uuid string, enabled bool) error {
	i, err := m.index(uuid)
	if err != nil {
		return err
	}
	mc, ok := m.backend.(MIGController)
	if !ok {
		return fmt.Errorf("%w: this backend cannot switch MIG mode", ErrUnsupported)
	}
	if err := mc.SetMIG(ctx, i, enabled); err != nil {
		return fmt.Errorf("set MIG mode of GPU %d: %w", i, err)
	}
	m.mu.Lock()
	if enabled {
		m.devices[i].MIG = FeatureEnabled
	} else {
		m.devices[i].MIG = FeatureDisabled
	}
	m.mu.Unlock()
	return nil
}
