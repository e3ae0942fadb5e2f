package workload

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
)

// Run re-adopts what the runtime still runs, then schedules until ctx
// ends, and returns ctx's error. Every goroutine the manager starts
// belongs to Run and has ended when Run returns; so have the channels of
// Watch. Containers keep running after Run returns; a new Manager over the
// same store and runtime adopts them. Run runs once per Manager.
//
// A runtime that cannot list its containers at start (containerd down) is
// retried with backoff; a store that cannot list its records fails Run.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	switch m.life {
	case closed:
		m.mu.Unlock()
		return errorf(ErrClosed, "workload manager is closed: make a new one")
	case running, stopped:
		m.mu.Unlock()
		return errorf(ErrInvalid, "Run runs once per Manager: make a new Manager over the same store and runtime to run again")
	}
	m.life = running
	m.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	r := &runner{m: m}
	defer func() {
		cancel()
		r.wg.Wait()
		m.mu.Lock()
		m.life = stopped
		close(m.done)
		close(m.notify) // watchers drain what is left and end
		m.notify = make(chan struct{})
		m.mu.Unlock()
	}()
	// Health events only wake the loop: what a fault does is decided from
	// the GPUs' health at each pass, so no send into Run can block.
	health := m.gpus.Watch(ctx)
	r.spawn(ctx, func(ctx context.Context) {
		for range health {
			m.poke()
		}
	})
	if err := r.reconcileUntilDone(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(m.o.tick)
	defer tick.Stop()
	for {
		r.schedule(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.kick:
		case req := <-m.curtailReq:
			r.spawn(ctx, func(ctx context.Context) { r.curtail(ctx, req) })
		case <-tick.C:
			r.tick(ctx)
		}
	}
}

// runner is one Run: it owns the goroutines Run starts.
type runner struct {
	m     *Manager
	wg    sync.WaitGroup
	ticks int // Run's goroutine only
}

// spawn starts a goroutine owned by Run; Run waits for it.
func (r *runner) spawn(ctx context.Context, fn func(ctx context.Context)) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn(ctx)
	}()
}

// reconcileUntilDone reconciles, retrying with backoff while the runtime
// cannot answer; a store that cannot be read ends Run.
func (r *runner) reconcileUntilDone(ctx context.Context) error {
	m := r.m
	for n := 1; ; n++ {
		err := r.reconcile(ctx)
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		var serr *storeReadError
		if errors.As(err, &serr) {
			return err
		}
		wait := backoff(m.o.retryBase, m.o.retryMax, n)
		m.log.Error("cannot re-adopt containers yet; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// tick measures the draw against the budget, probes hung GPUs, and does
// the housekeeping: retention, and deletes that failed before. None of it
// runs in Run's own goroutine, so a hung GPU cannot stop the loop.
func (r *runner) tick(ctx context.Context) {
	m := r.m
	m.mu.Lock()
	measure := !m.measuring
	m.measuring = true
	m.mu.Unlock()
	if measure {
		r.spawn(ctx, func(ctx context.Context) {
			draw := r.measure(ctx)
			m.mu.Lock()
			m.measuring = false
			over := m.budgetW > 0 && draw > m.budgetW && !m.curtailing
			budget := m.budgetW
			if over {
				m.curtailing = true // one standing check at a time
			}
			m.mu.Unlock()
			if over {
				m.log.Warn("GPU draw over the power budget; curtailing", "draw_w", draw, "budget_w", budget)
				r.curtail(ctx, curtailReq{standing: true})
			}
		})
	}
	r.probeHung(ctx)
	r.ticks++
	if r.ticks%sweepEvery == 0 {
		r.sweep(ctx)
	}
}

// sweepEvery is how many ticks pass between sweeps: retention is counted
// in days, and a sweep walks every record.
const sweepEvery = 30

// sweep removes finished records past their retention, trims the event
// log, and retries container deletes that failed.
func (r *runner) sweep(ctx context.Context) {
	m := r.m
	m.mu.Lock()
	cutoff := m.clock.Now().Add(-m.o.retention)
	for id, e := range m.work {
		if e.w.State.Final() && !e.w.EndedAt.IsZero() && e.w.EndedAt.Before(cutoff) {
			if err := m.forget(ctx, id); err != nil {
				m.log.Warn("retention: delete finished record failed; retrying later", "id", id, "err", err)
				break
			}
		}
	}
	upTo := uint64(0)
	if m.seq > uint64(m.o.keepEvents) {
		upTo = m.seq - uint64(m.o.keepEvents)
	}
	refs := m.cleanup
	m.cleanup = nil
	m.mu.Unlock()
	if es, ok := m.store.(EventStore); ok && upTo > 0 {
		sctx, cancel := context.WithTimeout(ctx, m.o.storeTimeout)
		if err := es.TrimEvents(sctx, upTo); err != nil {
			m.log.Warn("trim event log", "err", err)
		}
		cancel()
	}
	for _, ref := range refs {
		r.deleteContainer(ctx, ref)
	}
}

// deleteContainer removes an ended container, or keeps it on the cleanup
// list for the next tick.
func (r *runner) deleteContainer(ctx context.Context, ref isolation.Ref) {
	m := r.m
	dctx, cancel := context.WithTimeout(ctx, m.o.runtimeTimeout)
	defer cancel()
	err := m.rtFor(ref).Delete(dctx, ref)
	if err == nil || errors.Is(err, isolation.ErrNotFound) || ctx.Err() != nil {
		return
	}
	m.log.Warn("delete ended container failed; retrying at the next tick", "container", ref.String(), "err", err)
	m.mu.Lock()
	m.cleanup = append(m.cleanup, ref)
	m.mu.Unlock()
}
