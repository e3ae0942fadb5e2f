package sim

import (
	"context"
	"errors"
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// XIDFallenOffBus is the Xid of a GPU that fell off the bus.
const XIDFallenOffBus = 79

// InjectXID makes a device report an Xid error, delivered to event watchers
// as gpu.EventXID with that number, as NVML reports it; classifying it is
// the Manager's job. Xid 79 also marks the device lost: from then on its
// Backend calls fail with gpu.ErrDeviceLost until Reset.
func (r *Rig) InjectXID(index, xid int) error {
	return r.world(index, func(d *device) error {
		if xid <= 0 {
			return fmt.Errorf("%w: xid %d: Xid numbers are positive", gpu.ErrInvalid, xid)
		}
		if xid == XIDFallenOffBus {
			d.lost, d.lostXID = true, xid
		}
		r.emit(gpu.Event{Index: index, UUID: d.info.UUID, Kind: gpu.EventXID, XID: xid, Time: r.now()})
		r.log.Info("xid injected", "gpu", index, "xid", xid, "text", gpu.XIDText(xid))
		return nil
	})
}

// Hang makes every following Backend call on the device block until its
// context ends (it then fails with the context's error wrapped), until
// Unhang, Reset or Close. A Sample that includes the device blocks whole.
func (r *Rig) Hang(index int) error {
	return r.world(index, func(d *device) error {
		if d.hang == nil {
			d.hang = make(chan struct{})
		}
		r.log.Info("device hung", "gpu", index)
		return nil
	})
}

// Unhang ends a hang; blocked calls proceed.
func (r *Rig) Unhang(index int) error {
	return r.world(index, func(d *device) error {
		if d.hang != nil {
			close(d.hang)
			d.hang = nil
		}
		r.log.Info("device unhung", "gpu", index)
		return nil
	})
}

// FailNext makes the next n Backend calls on the device fail with err
// (wrapped; match it with errors.Is). A Sample counts once per device in
// it. n = 0 cancels pending failures.
func (r *Rig) FailNext(index, n int, err error) error {
	return r.world(index, func(d *device) error {
		var errs []error
		if n < 0 {
			errs = append(errs, fmt.Errorf("count %d is negative", n))
		}
		if err == nil && n > 0 {
			errs = append(errs, errors.New("no error to fail with"))
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: fail next calls on GPU %d: %w", gpu.ErrInvalid, index, errors.Join(errs...))
		}
		d.failN, d.failErr = n, err
		r.log.Info("failures injected", "gpu", index, "count", n, "err", err)
		return nil
	})
}

// BreakEvents makes WatchEvents fail with err wrapped (current watchers
// after delivering what they hold, later ones at once), as when NVML's
// event set breaks; the Manager then treats every device as unhealthy. A
// nil err breaks it with gpu.ErrUnavailable. RepairEvents undoes it.
func (r *Rig) BreakEvents(err error) {
	if err == nil {
		err = gpu.ErrUnavailable
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eventErr = err
	for w := range r.watchers {
		w.wakeUp()
	}
	r.log.Info("event path broken", "err", err)
}

// RepairEvents lets WatchEvents work again after BreakEvents.
func (r *Rig) RepairEvents() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eventErr = nil
}

// watcher is one WatchEvents call's queue. Injecting never blocks: events
// queue here and the watcher's own goroutine delivers them.
type watcher struct {
	queue []gpu.Event
	wake  chan struct{} // capacity 1
}

func (w *watcher) wakeUp() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// emit queues e for every watcher, or keeps it for the next watcher when
// none is attached, so a test that injects right after starting a Manager
// does not race its watcher. The caller holds r.mu.
func (r *Rig) emit(e gpu.Event) {
	if len(r.watchers) == 0 {
		if len(r.backlog) >= maxBacklog {
			r.log.Warn("event backlog full; dropping the oldest event", "gpu", r.backlog[0].Index, "xid", r.backlog[0].XID)
			r.backlog = r.backlog[1:]
		}
		r.backlog = append(r.backlog, e)
		return
	}
	for w := range r.watchers {
		w.queue = append(w.queue, e)
		w.wakeUp()
	}
}

// WatchEvents delivers the rig's events to ch until ctx ends, then returns
// ctx.Err(). Several watchers may run at once; each gets every event.
// Events raised while nobody watched go to the next watcher. It fails with
// an error wrapping gpu.ErrUnavailable after Close, and with the
// BreakEvents error while the event path is broken.
func (r *Rig) WatchEvents(ctx context.Context, ch chan<- gpu.Event) error {
	w := &watcher{wake: make(chan struct{}, 1)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errClosed
	}
	w.queue, r.backlog = r.backlog, nil
	r.watchers[w] = struct{}{}
	r.mu.Unlock()

	var pending []gpu.Event // taken from the queue, not yet sent
	defer func() {
		r.mu.Lock()
		delete(r.watchers, w)
		// Undelivered events go back to the backlog only when no other
		// watcher has them too.
		if len(r.watchers) == 0 && !r.closed {
			r.backlog = append(append(pending, w.queue...), r.backlog...)
		}
		r.mu.Unlock()
	}()

	for {
		r.mu.Lock()
		pending, w.queue = append(pending, w.queue...), nil
		broken := r.eventErr
		r.mu.Unlock()
		for len(pending) > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-r.done:
				return errClosed
			case ch <- pending[0]:
				pending = pending[1:]
			}
		}
		if broken != nil {
			return fmt.Errorf("simulated event path broken: %w", broken)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return errClosed
		case <-w.wake:
		}
	}
}
