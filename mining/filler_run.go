package mining

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/workload"
)

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

// BeforeStart is the Filler's workload.StartHook: it applies a miner's
// tuning profile after the manager's handover hygiene and just before the
// miner starts, while the miner holds its GPU, so no other workload can
// ever start under the tune. Give the Filler to the manager with
// workload.WithStartHook as well as WithFiller; without it the tune goes
// on after the start, with a short window in which a handover could race
// it. A tune that fails leaves the miner mining untuned, with an event.
func (f *Filler) BeforeStart(ctx context.Context, w workload.Workload) error {
	if f.tuner == nil || w.Spec.Kind != workload.KindMining || len(w.GPUs) != 1 {
		return nil
	}
	i := slices.IndexFunc(f.miners, func(mi Miner) bool { return mi.Name == w.Spec.Labels[LabelMiner] })
	if i < 0 {
		return nil // not one of this Filler's miners
	}
	dev, err := f.gpus.Device(w.GPUs[0])
	if err != nil {
		return nil
	}
	p, applied, err := f.tuner.Apply(ctx, dev, f.miners[i].Algorithm)
	if err != nil {
		f.emit(Event{Type: EventError, GPU: dev.UUID, Workload: w.Spec.ID, Miner: f.miners[i].Name, Reason: err.Error()})
		return nil
	}
	if applied {
		f.mu.Lock()
		f.pretuned[w.Spec.ID] = p
		f.mu.Unlock()
	}
	return nil
}

// tune applies the GPU's profile while the miner still holds it: the
// manager restored the defaults before the start, so the tune comes after,
// unless BeforeStart applied it already.
func (f *Filler) tune(ctx context.Context, m *workload.Manager, t *tracked) {
	mi := f.miners[t.miner]
	f.mu.Lock()
	p, pre := f.pretuned[t.id]
	delete(f.pretuned, t.id)
	if pre {
		t.tuned, t.profile = true, p
	}
	f.mu.Unlock()
	if pre {
		f.emitTuned(t, mi, p)
		return
	}
	if f.tuner == nil || !holds(m, t) {
		return
	}
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
	f.emitTuned(t, mi, p)
}

func (f *Filler) emitTuned(t *tracked, mi Miner, p Profile) {
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
