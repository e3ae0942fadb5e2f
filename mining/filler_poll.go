package mining

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

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
	hadGPUs := t.hadGPUs
	f.mu.Unlock()

	if s, ok := mi.Adapter.(Starter); ok && needStart {
		// The miner takes its work through its API: once, when it first
		// answers; a failure is tried again at the next poll.
		if reqs, err := s.StartRequests(t.launched); err == nil {
			if err := t.client.Send(ctx, reqs); err != nil {
				f.emit(Event{Type: EventError, GPU: t.dev.UUID, Workload: t.id, Miner: mi.Name, Reason: "start requests: " + err.Error()})
			} else {
				f.mu.Lock()
				t.started = true
				f.mu.Unlock()
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
