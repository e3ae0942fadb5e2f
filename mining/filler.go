package mining

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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
	pids      map[string][]int   // GPU UUID -> the processes the manager reported
	loaded    map[string]bool    // GPU UUID -> the manager reported a load on it
	pretuned  map[string]Profile // workload ID -> the tune BeforeStart applied
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
		measured: map[string]measure{}, pids: map[string][]int{}, loaded: map[string]bool{}, pretuned: map[string]Profile{},
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
