package workload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gpufarm/gpufarm/gpu"
)

// Every GPU call on the manager's path goes through device: it has the
// device deadline, and a call that runs out of it marks the GPU hung, so
// that no new work goes there while the rest of the node goes on.

// device runs one call on the GPU of slot i within the device deadline.
func (m *Manager) device(ctx context.Context, i int, what string, call func(ctx context.Context) error) error {
	dctx, cancel := context.WithTimeout(ctx, m.o.deviceTimeout)
	defer cancel()
	err := call(dctx)
	if err != nil && ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded) {
		m.markHung(i, what)
	}
	return err
}

// markHung takes the GPU of slot i for hung.
func (m *Manager) markHung(i int, what string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sl := m.slots[i]
	if sl.hung != "" {
		return
	}
	sl.hung = fmt.Sprintf("hung: %s did not answer within %v (since %s)", what, m.o.deviceTimeout, m.clock.Now().Format(time.RFC3339))
	m.log.Error("GPU does not answer; no new work goes there until it does", "gpu", i, "uuid", sl.dev.UUID, "call", what, "timeout", m.o.deviceTimeout)
}

// measure samples every GPU that answers and returns their total draw. It
// samples the whole node in one call while no GPU is hung; when that call
// runs out of time, or some GPU is hung already, it samples GPU by GPU, at
// once, so that a hung one costs the deadline and nothing else.
func (r *runner) measure(ctx context.Context) float64 {
	m := r.m
	n := len(m.slots)
	m.mu.Lock()
	anyHung := false
	for _, sl := range m.slots {
		anyHung = anyHung || sl.hung != ""
	}
	m.mu.Unlock()
	samples := make([]gpu.Sample, n)
	ok := make([]bool, n)
	whole := false
	if !anyHung {
		dctx, cancel := context.WithTimeout(ctx, m.o.deviceTimeout)
		got, err := m.gpus.SampleAll(dctx, samples)
		cancel()
		switch {
		case err == nil || !errors.Is(err, context.DeadlineExceeded):
			if err != nil && !errors.Is(err, gpu.ErrDeviceLost) {
				m.log.Warn("power sample failed", "err", err)
			}
			samples, whole = got, true
			for i := range ok {
				ok[i] = samples[i].PowerW.Valid
			}
		case ctx.Err() != nil:
			return 0
		}
	}
	if !whole {
		var g errgroup.Group
		g.SetLimit(8)
		for i := range m.slots {
			m.mu.Lock()
			skip := m.slots[i].hung != ""
			m.mu.Unlock()
			if skip {
				continue
			}
			g.Go(func() error {
				return m.device(ctx, i, "power sample", func(ctx context.Context) error {
					s, err := m.gpus.Sample(ctx, m.slots[i].dev.UUID)
					samples[i], ok[i] = s, err == nil && s.PowerW.Valid
					return err
				})
			})
		}
		_ = g.Wait()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	total := 0.0
	for i, s := range samples {
		if !ok[i] {
			continue
		}
		sl := m.slots[i]
		total += s.PowerW.Value
		if m.launching(sl) {
			// Work placed here has not started: keep what admit booked,
			// or the next admission would count the GPU as idle.
			sl.lastW = max(sl.lastW, s.PowerW.Value)
			continue
		}
		sl.lastW = s.PowerW.Value
	}
	m.drawW = total
	return total
}

// probeHung asks each hung GPU, in the background, whether it answers
// again; one that does takes work again.
func (r *runner) probeHung(ctx context.Context) {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, sl := range m.slots {
		if sl.hung == "" || sl.probing {
			continue
		}
		sl.probing = true
		uuid := sl.dev.UUID
		r.spawn(ctx, func(ctx context.Context) {
			dctx, cancel := context.WithTimeout(ctx, m.o.deviceTimeout)
			_, err := m.gpus.Sample(dctx, uuid)
			answered := dctx.Err() == nil
			cancel()
			m.mu.Lock()
			defer m.mu.Unlock()
			sl.probing = false
			if answered && !errors.Is(err, context.DeadlineExceeded) {
				m.log.Info("GPU answers again", "gpu", i, "uuid", uuid, "was", sl.hung)
				sl.hung = ""
				m.poke()
			}
		})
	}
}
