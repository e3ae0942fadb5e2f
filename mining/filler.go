package mining

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// Labels the Filler puts on its miners' workloads, so that it finds them
// again after a restart.
const (
	LabelMiner = "io.gpufarm.mining/miner" // Miner.Name
	LabelAPI   = "io.gpufarm.mining/api"   // the miner's API address
)

// Miner is one miner configuration the Filler may run on an idle GPU.
type Miner struct {
	// Name identifies the configuration in labels, events and estimates
	// (default "<adapter>-<algorithm>").
	Name    string
	Adapter Adapter
	// Image is the miner's container image; Command goes before the
	// adapter's arguments (empty keeps the image's entrypoint; the fake
	// miner wants "-api", "trex", "--"; the process runtime wants the
	// binary's path first).
	Image   string
	Command []string
	Env     []string
	// Algorithm, Pool, Wallet, Worker, Password, APIToken and Extra are
	// the Launch of every miner of this configuration (the Filler sets
	// GPUs and APIPort).
	Algorithm, Pool, Wallet, Worker, Password, APIToken string
	Extra                                               []string
	// Coin is the tag of the mined coin at the CoinSource ("ETC"); without
	// it the configuration has no economics and is chosen only when no
	// other has.
	Coin    string
	PoolFee float64 // a fraction: 0.01 is 1 %
	// Models limits the configuration to these GPU models (as in Profile);
	// empty allows every GPU.
	Models []string
}

// Benchmark is what a GPU model does on an algorithm, the estimate a
// Filler prices before it has measured the GPU itself.
type Benchmark struct {
	Model     string // as in Profile
	Algorithm string // the SDK's name
	Rate      float64
	PowerW    float64
}

// EventType says what the Filler decided.
type EventType string

const (
	// EventRestart: the watchdog stopped a broken miner; its GPU gets a
	// new one after Event.Until.
	EventRestart EventType = "restart"
	// EventSwitch: a more profitable configuration replaces the miner.
	EventSwitch EventType = "switch"
	// EventTuned and EventUntuned: a profile was applied to the GPU, and
	// its defaults put back.
	EventTuned   EventType = "tuned"
	EventUntuned EventType = "untuned"
	// EventStarted: the Filler found a new miner of its own running and
	// polls it; EventEnded: it stopped.
	EventStarted EventType = "started"
	EventEnded   EventType = "ended"
	// EventError: something the Filler tried failed (a tune, a restart,
	// a start request to the miner); the reason says what.
	EventError EventType = "error"
)

// Event is one decision of the Filler.
type Event struct {
	Time     time.Time
	Type     EventType
	GPU      string // UUID
	Workload string
	Miner    string // Miner.Name
	Reason   string
	// Until is when a restarted GPU may mine again.
	Until time.Time
}

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

// Filler keeps idle GPUs mining: it is the workload manager's Filler
// (Fill picks the most profitable configured miner for a GPU and builds
// its spec), and Run watches the miners it started: it polls their APIs,
// reports each GPU's hashrate to the manager as progress, feeds the
// simulator's load, restarts broken miners (the watchdog), replaces a
// miner by a more profitable one (switching), and tunes each GPU while it
// mines. Its methods are safe for concurrent use; it never holds its lock
// while it calls the manager, so the manager may call Fill, the LoadFunc
// of Load and the Policy of Policy under its own.
type Filler struct {
	gpus     *gpu.Manager
	miners   []Miner
	o        fillerOptions
	tuner    *Tuner
	watchdog *Watchdog
	switcher *Switcher

	mu        sync.Mutex
	running   map[string]*tracked // by workload ID
	choice    map[string]string   // GPU UUID -> Miner.Name to start next
	estimates map[string]Estimate // GPU UUID -> what its miner earns
	measured  map[string]measure  // GPU UUID + "/" + Miner.Name -> last measurement
	load      workload.LoadFunc
	pids      map[string][]int // GPU UUID -> the processes the manager reported
	loaded    map[string]bool  // GPU UUID -> the manager reported a load on it
}

// tracked is a miner the Filler started and watches.
type tracked struct {
	id       string
	dev      gpu.Device
	miner    int // index in Filler.miners
	client   *Client
	reading  Reading
	gpu      GPUStats
	listed   bool
	hadGPUs  bool // the miner has listed GPUs: one gone missing is a fault
	tuned    bool
	profile  Profile
	started  bool // the adapter's StartRequests were sent
	launched Launch
}

type measure struct {
	rate, powerW float64
	power        bool
}

// NewFiller returns a filler of the GPUs of gpus with the miner
// configurations miners, which it checks now: a bad field is an
// ErrInvalid naming it (Miners[1].Launch.Wallet, ...).
func NewFiller(gpus *gpu.Manager, miners []Miner, opts ...FillerOption) (*Filler, error) {
	o := fillerOptions{
		log: slog.New(slog.DiscardHandler), clock: gpu.SystemClock{}, tenant: "mining", portBase: 4100,
		poll: 10 * time.Second, clientTimeout: DefaultTimeout, stopGrace: 5 * time.Second, gainPct: 5, ticks: 3,
	}
	var errs []error
	if gpus == nil {
		errs = append(errs, errors.New("nil gpu.Manager"))
	}
	if len(miners) == 0 {
		errs = append(errs, errors.New("no Miners: configure at least one"))
	}
	for _, opt := range opts {
		if opt == nil {
			errs = append(errs, errors.New("nil FillerOption"))
		} else if err := opt(&o); err != nil {
			errs = append(errs, err)
		}
	}
	ms := make([]Miner, len(miners))
	names := map[string]bool{}
	for i, m := range miners {
		m.Command, m.Env, m.Extra, m.Models = slices.Clone(m.Command), slices.Clone(m.Env), slices.Clone(m.Extra), slices.Clone(m.Models)
		field := func(f string) string { return fmt.Sprintf("Miners[%d].%s", i, f) }
		if m.Adapter == nil {
			errs = append(errs, fmt.Errorf("%s: nil: use AdapterByName", field("Adapter")))
			continue
		}
		if m.Name == "" {
			m.Name = m.Adapter.Name() + "-" + m.Algorithm
		}
		if names[m.Name] {
			errs = append(errs, fmt.Errorf("%s: %q is used twice", field("Name"), m.Name))
		}
		names[m.Name] = true
		if m.Image == "" {
			errs = append(errs, fmt.Errorf("%s: empty: name the miner's image", field("Image")))
		}
		if m.PoolFee < 0 || m.PoolFee >= 1 {
			errs = append(errs, fmt.Errorf("%s: %v: want a fraction from 0 to 1 (0.01 is 1 %%)", field("PoolFee"), m.PoolFee))
		}
		if _, err := m.Adapter.Args(m.launch(o.portBase)); err != nil {
			errs = append(errs, fmt.Errorf("Miners[%d]: %w", i, err))
		}
		ms[i] = m
	}
	if gpus != nil && o.portBase+len(gpus.Devices()) > 65535 {
		errs = append(errs, fmt.Errorf("WithAPIPorts(%d): too high for %d GPUs", o.portBase, len(gpus.Devices())))
	}
	var tuner *Tuner
	if gpus != nil && len(o.profiles) > 0 {
		var err error
		if tuner, err = NewTuner(gpus, o.profiles, o.log); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: NewFiller: %w", ErrInvalid, errors.Join(errs...))
	}
	wd, err := NewWatchdog(o.watchdog, o.clock)
	if err != nil {
		return nil, err
	}
	sw, err := NewSwitcher(o.gainPct, o.ticks)
	if err != nil {
		return nil, err
	}
	return &Filler{
		gpus: gpus, miners: ms, o: o, tuner: tuner, watchdog: wd, switcher: sw,
		running: map[string]*tracked{}, choice: map[string]string{}, estimates: map[string]Estimate{},
		measured: map[string]measure{}, pids: map[string][]int{}, loaded: map[string]bool{},
	}, nil
}

// launch is the configuration's Launch for one GPU on port.
func (m Miner) launch(port int) Launch {
	return Launch{Algorithm: m.Algorithm, Pool: m.Pool, Wallet: m.Wallet, Worker: m.Worker, Password: m.Password,
		GPUs: 1, APIPort: port, APIToken: m.APIToken, Extra: m.Extra}
}

// allows reports whether the configuration may run on the GPU model.
func (m Miner) allows(model string) bool {
	if len(m.Models) == 0 {
		return true
	}
	for _, want := range m.Models {
		if normModel(want) == normModel(model) {
			return true
		}
	}
	return false
}

// Fill returns the spec of a miner for the idle GPU d: the configuration
// the last pricing chose for it, else the first one its model allows. It
// leaves a GPU the watchdog holds back idle.
func (f *Filler) Fill(ctx context.Context, d gpu.Device) (workload.Spec, bool) {
	if ok, _ := f.watchdog.Allowed(d.UUID); !ok {
		return workload.Spec{}, false
	}
	f.mu.Lock()
	i := f.pick(d)
	f.mu.Unlock()
	if i < 0 {
		return workload.Spec{}, false
	}
	m := f.miners[i]
	port := f.o.portBase + d.Index
	args, err := m.Adapter.Args(m.launch(port))
	if err != nil { // checked by NewFiller; a port out of range lands here
		f.o.log.Error("miner arguments refused; GPU left idle", "gpu", d.Index, "miner", m.Name, "err", err)
		return workload.Spec{}, false
	}
	return workload.Spec{
		Tenant: f.o.tenant, Image: m.Image, Command: append(slices.Clone(m.Command), args...), Env: slices.Clone(m.Env),
		Network: isolation.NetworkHost, StopGrace: f.o.stopGrace,
		Labels: map[string]string{LabelMiner: m.Name, LabelAPI: "127.0.0.1:" + strconv.Itoa(port)},
	}, true
}

// pick is the configuration for d: the chosen one, else the first its
// model allows. The caller holds f.mu.
func (f *Filler) pick(d gpu.Device) int {
	if name, ok := f.choice[d.UUID]; ok {
		for i, m := range f.miners {
			if m.Name == name && m.allows(d.Name) {
				return i
			}
		}
	}
	for i, m := range f.miners {
		if m.allows(d.Name) {
			return i
		}
	}
	return -1
}

// Load wraps the manager's LoadFunc (workload.WithLoad(f.Load(rig.SetGPULoad))):
// it passes the manager's calls on and adds the miners' measured load, so
// a simulated GPU's power follows the hashrate its miner reports.
func (f *Filler) Load(next workload.LoadFunc) workload.LoadFunc {
	f.mu.Lock()
	f.load = next
	f.mu.Unlock()
	return func(uuid string, util float64, pids []int) {
		// Under f.mu, so that a measured load never lands after the
		// manager took the load off (the GPU would look busy to the
		// handover's check).
		f.mu.Lock()
		defer f.mu.Unlock()
		f.pids[uuid], f.loaded[uuid] = slices.Clone(pids), util > 0
		if next != nil {
			next(uuid, util, pids)
		}
	}
}

// Estimate returns what the GPU's miner earns per hour, from the last
// pricing; false when the GPU does not mine or was not priced.
func (f *Filler) Estimate(uuid string) (Estimate, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.estimates[uuid]
	return e, ok
}

// Policy returns the economic policy over the Filler's estimates (see
// NewPolicy): paid work takes a mining GPU when its price beats the GPU's
// mining profit by marginPct percent.
func (f *Filler) Policy(marginPct float64) (workload.Policy, error) {
	return NewPolicy(f.Estimate, marginPct)
}

// MinerStatus is one running miner as the Filler sees it.
type MinerStatus struct {
	GPU      gpu.Device
	Workload string
	Miner    string // Miner.Name
	API      string
	// Reading is the miner's last poll; GPUStats its line for the GPU,
	// when Listed.
	Reading  Reading
	GPUStats GPUStats
	Listed   bool
	Tuned    bool
	Profile  Profile
}

// Status lists the running miners, by GPU index.
func (f *Filler) Status() []MinerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]MinerStatus, 0, len(f.running))
	for _, t := range f.running {
		r := t.reading
		r.Stats.GPUs = slices.Clone(r.Stats.GPUs)
		out = append(out, MinerStatus{GPU: t.dev, Workload: t.id, Miner: f.miners[t.miner].Name, API: t.client.Addr(),
			Reading: r, GPUStats: t.gpu, Listed: t.listed, Tuned: t.tuned, Profile: t.profile})
	}
	slices.SortFunc(out, func(a, b MinerStatus) int { return a.GPU.Index - b.GPU.Index })
	return out
}

// emit logs an event and hands it to the WithEvents func.
func (f *Filler) emit(ev Event) {
	ev.Time = f.o.clock.Now()
	level := slog.LevelInfo
	if ev.Type == EventRestart || ev.Type == EventError {
		level = slog.LevelWarn
	}
	attrs := []any{"gpu", ev.GPU, "workload", ev.Workload, "miner", ev.Miner, "reason", ev.Reason}
	if !ev.Until.IsZero() {
		attrs = append(attrs, "until", ev.Until)
	}
	f.o.log.Log(context.Background(), level, "mining "+string(ev.Type), attrs...)
	if f.o.events != nil {
		f.o.events(ev)
	}
}

// Run watches m's mining workloads until ctx ends: it adopts the miners
// it started (also those of an earlier run, by their labels), polls them,
// restarts broken ones, prices and switches, and tunes each GPU while it
// mines. It returns ctx's error. Tunes stay on GPUs whose miners outlive
// Run; the manager's handover restores them before any other workload.
func (f *Filler) Run(ctx context.Context, m *workload.Manager) error {
	if m == nil {
		return fmt.Errorf("%w: Filler.Run: nil workload.Manager", ErrInvalid)
	}
	for _, w := range m.List(workload.Filter{Kind: workload.KindMining, States: []workload.State{workload.StateRunning}}) {
		f.adopt(ctx, m, w.Spec.ID)
	}
	events := m.Watch(ctx, 0)
	poll := time.NewTicker(f.o.poll)
	defer poll.Stop()
	var price <-chan time.Time
	if f.o.coins != nil {
		t := time.NewTicker(f.o.priceEvery)
		defer t.Stop()
		price = t.C
		f.reprice(ctx, m)
	}
	defer f.closeClients()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return ctx.Err()
			}
			f.handle(ctx, m, ev)
		case <-poll.C:
			f.pollAll(ctx, m)
		case <-price:
			f.reprice(ctx, m)
		}
	}
}

func (f *Filler) closeClients() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.running {
		_ = t.client.Close()
	}
}

func (f *Filler) handle(ctx context.Context, m *workload.Manager, ev workload.Event) {
	if ev.Kind != workload.KindMining {
		return
	}
	switch ev.Type {
	case workload.EventStarted:
		f.adopt(ctx, m, ev.ID)
	case workload.EventExited, workload.EventFailed, workload.EventCancelled, workload.EventPreempted:
		f.ended(ctx, m, ev.ID, string(ev.Type))
	}
}

// adopt starts watching a running miner of the Filler's, found by its
// labels, and tunes its GPU.
func (f *Filler) adopt(ctx context.Context, m *workload.Manager, id string) {
	w, err := m.Get(id)
	if err != nil || w.State != workload.StateRunning || len(w.GPUs) != 1 {
		return
	}
	name, addr := w.Spec.Labels[LabelMiner], w.Spec.Labels[LabelAPI]
	i := slices.IndexFunc(f.miners, func(mi Miner) bool { return mi.Name == name })
	if i < 0 || addr == "" {
		return // not one of this Filler's configurations
	}
	dev, err := f.gpus.Device(w.GPUs[0])
	if err != nil {
		return
	}
	mi := f.miners[i]
	c, err := NewClient(mi.Adapter, addr, WithToken(mi.APIToken), WithTimeout(f.o.clientTimeout), WithClientClock(f.o.clock))
	if err != nil {
		f.emit(Event{Type: EventError, GPU: dev.UUID, Workload: id, Miner: name, Reason: "cannot poll it: " + err.Error()})
		return
	}
	_, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	t := &tracked{id: id, dev: dev, miner: i, client: c, launched: mi.launch(p)}
	f.mu.Lock()
	if _, dup := f.running[id]; dup {
		f.mu.Unlock()
		_ = c.Close()
		return
	}
	f.running[id] = t
	f.mu.Unlock()
	f.watchdog.Start(dev.UUID, id)
	f.emit(Event{Type: EventStarted, GPU: dev.UUID, Workload: id, Miner: name, Reason: "polling " + mi.Adapter.Name() + " at " + addr})
	f.tune(ctx, m, t)
}

// tune applies the GPU's profile while the miner still holds it: the
// manager restored the defaults before the start, so the tune comes after.
func (f *Filler) tune(ctx context.Context, m *workload.Manager, t *tracked) {
	if f.tuner == nil || !holds(m, t) {
		return
	}
	mi := f.miners[t.miner]
	p, applied, err := f.tuner.Apply(ctx, t.dev, mi.Algorithm)
	if err != nil {
		f.emit(Event{Type: EventError, GPU: t.dev.UUID, Workload: t.id, Miner: mi.Name, Reason: err.Error()})
		return
	}
	if !applied {
		return
	}
	if !holds(m, t) {
		// The miner was stopped while the tune went on: take it off again
		// before anything else runs there.
		_ = f.tuner.Restore(ctx, t.dev.UUID)
		return
	}
	f.mu.Lock()
	t.tuned, t.profile = true, p
	f.mu.Unlock()
	f.emit(Event{Type: EventTuned, GPU: t.dev.UUID, Workload: t.id, Miner: mi.Name,
		Reason: fmt.Sprintf("profile %s/%s: power limit %g W, clocks %d-%d MHz", p.Model, mi.Algorithm, p.PowerLimitW, p.MinClockMHz, p.MaxClockMHz)})
}

// holds reports whether the miner still holds its GPU.
func holds(m *workload.Manager, t *tracked) bool {
	for _, g := range m.GPUs() {
		if g.Device.UUID == t.dev.UUID {
			return g.Workload == t.id && g.Next == ""
		}
	}
	return false
}

// ended stops watching a miner and takes its tune off.
func (f *Filler) ended(ctx context.Context, m *workload.Manager, id, how string) {
	f.mu.Lock()
	t, ok := f.running[id]
	if ok {
		delete(f.running, id)
		delete(f.estimates, t.dev.UUID)
	}
	f.mu.Unlock()
	if !ok {
		return
	}
	_ = t.client.Close()
	f.watchdog.Stop(t.dev.UUID)
	f.switcher.Forget(t.dev.UUID)
	name := f.miners[t.miner].Name
	f.emit(Event{Type: EventEnded, GPU: t.dev.UUID, Workload: id, Miner: name, Reason: how})
	if t.tuned {
		for _, g := range m.GPUs() {
			if g.Device.UUID == t.dev.UUID && (g.Workload != "" || g.Next != "") {
				// Another workload has the GPU: the manager's handover
				// restores the defaults before it starts.
				f.emit(Event{Type: EventUntuned, GPU: t.dev.UUID, Workload: id, Miner: name, Reason: "the miner " + how + "; the handover restores the defaults"})
				return
			}
		}
		if err := f.tuner.Restore(ctx, t.dev.UUID); err != nil {
			f.emit(Event{Type: EventError, GPU: t.dev.UUID, Workload: id, Miner: name, Reason: err.Error()})
			return
		}
		f.emit(Event{Type: EventUntuned, GPU: t.dev.UUID, Workload: id, Miner: name, Reason: "the miner " + how})
	}
}

// pollAll reads every miner's API at once and acts on the readings.
func (f *Filler) pollAll(ctx context.Context, m *workload.Manager) {
	f.mu.Lock()
	list := make([]*tracked, 0, len(f.running))
	for _, t := range f.running {
		list = append(list, t)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	readings := make([]Reading, len(list))
	for i, t := range list {
		wg.Add(1)
		go func() { // ends within the client's timeout
			defer wg.Done()
			readings[i], _ = t.client.Poll(ctx)
		}()
	}
	wg.Wait()
	for i, t := range list {
		f.observe(ctx, m, t, readings[i])
	}
}

// observe acts on one reading: progress to the manager, load to the
// simulator, the measurement for pricing, and the watchdog's judgement.
func (f *Filler) observe(ctx context.Context, m *workload.Manager, t *tracked, r Reading) {
	mi := f.miners[t.miner]
	g, listed := joinGPU(r.Stats, t.dev)
	f.mu.Lock()
	if _, still := f.running[t.id]; !still {
		f.mu.Unlock()
		return
	}
	t.reading, t.gpu, t.listed = r, g, listed
	t.hadGPUs = t.hadGPUs || (r.Healthy && len(r.Stats.GPUs) > 0)
	needStart := !t.started && r.Healthy
	if needStart {
		t.started = true
	}
	hadGPUs := t.hadGPUs
	f.mu.Unlock()

	if s, ok := mi.Adapter.(Starter); ok && needStart {
		if reqs, err := s.StartRequests(t.launched); err == nil {
			if err := t.client.Send(ctx, reqs); err != nil {
				f.emit(Event{Type: EventError, GPU: t.dev.UUID, Workload: t.id, Miner: mi.Name, Reason: "start requests: " + err.Error()})
			}
		}
	}
	obs := Observation{Err: r.Err, Unit: r.Stats.Unit}
	if r.Healthy {
		obs.Missing = hadGPUs && !listed
		obs.Rate = r.Stats.Rate
		if listed {
			obs.Rate = g.Rate
		}
		f.report(ctx, m, t, r, g, obs.Rate)
		if obs.Rate.Valid {
			f.measure(ctx, t, obs.Rate.Value)
		}
	}
	if restart, why := f.watchdog.Observe(t.dev.UUID, obs); restart {
		f.restart(ctx, m, t, why)
	}
}

// joinGPU finds the miner's line for d: by PCI bus id or UUID, else its
// GPU 0, which in the container of a one-GPU miner is d whatever bus id
// the miner reports.
func joinGPU(st Stats, d gpu.Device) (GPUStats, bool) {
	for _, g := range st.GPUs {
		if (g.PCIBusID != "" && g.PCIBusID == d.PCIBusID) || (g.UUID != "" && strings.EqualFold(g.UUID, d.UUID)) {
			return g, true
		}
	}
	for _, g := range st.GPUs {
		if g.Index == 0 {
			return g, true
		}
	}
	return GPUStats{}, false
}

// report tells the manager the GPU's hashrate as the miner's progress.
func (f *Filler) report(ctx context.Context, m *workload.Manager, t *tracked, r Reading, g GPUStats, rate gpu.Optional[float64]) {
	sh := r.Stats.Shares
	msg := fmt.Sprintf("%s %s on GPU %d: %s", r.Stats.Miner, r.Stats.Algorithm, t.dev.Index, "no rate")
	if rate.Valid {
		msg = fmt.Sprintf("%s %s on GPU %d: %s", r.Stats.Miner, r.Stats.Algorithm, t.dev.Index, rateText(rate.Value, r.Stats.Unit))
	}
	msg += fmt.Sprintf(", shares %d accepted %d rejected", sh.Accepted.Value, sh.Rejected.Value)
	if g.PowerW.Valid {
		msg += fmt.Sprintf(", %.0f W", g.PowerW.Value)
	}
	if g.TemperatureC.Valid {
		msg += fmt.Sprintf(", %.0f C", g.TemperatureC.Value)
	}
	p := workload.Progress{Step: int(sh.Accepted.Value), Message: msg}
	if err := m.ReportProgress(ctx, t.id, p); err != nil && !errors.Is(err, workload.ErrNotFound) {
		f.o.log.Debug("report mining progress", "workload", t.id, "err", err)
	}
}

// measure records the GPU's rate and draw for pricing, and gives the
// simulator the load that goes with the rate.
func (f *Filler) measure(ctx context.Context, t *tracked, rate float64) {
	mi := f.miners[t.miner]
	ms := measure{rate: rate}
	if s, err := f.gpus.Sample(ctx, t.dev.UUID); err == nil && s.PowerW.Valid {
		ms.powerW, ms.power = s.PowerW.Value, true
	}
	b, bench := f.benchmark(t.dev.Name, mi.Algorithm)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.measured[t.dev.UUID+"/"+mi.Name] = ms
	if _, running := f.running[t.id]; !running || !bench || f.load == nil || !f.loaded[t.dev.UUID] {
		return
	}
	// Mining runs the GPU flat out at the benchmark's rate; less rate is
	// less load, and less power.
	f.load(t.dev.UUID, math.Min(1, 0.98*rate/b.Rate), f.pids[t.dev.UUID])
}

func (f *Filler) benchmark(model, algorithm string) (Benchmark, bool) {
	for _, b := range f.o.benchmarks {
		if normModel(b.Model) == normModel(model) && b.Algorithm == algorithm {
			return b, true
		}
	}
	return Benchmark{}, false
}

// restart cancels a broken miner; the manager refills the GPU after the
// watchdog's backoff.
func (f *Filler) restart(ctx context.Context, m *workload.Manager, t *tracked, why string) {
	until := f.watchdog.Restarted(t.dev.UUID)
	name := f.miners[t.miner].Name
	if err := m.Cancel(ctx, t.id); err != nil {
		f.emit(Event{Type: EventError, GPU: t.dev.UUID, Workload: t.id, Miner: name, Reason: "restart: " + err.Error()})
		return
	}
	f.emit(Event{Type: EventRestart, GPU: t.dev.UUID, Workload: t.id, Miner: name, Reason: why, Until: until})
}

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
