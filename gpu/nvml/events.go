//go:build cgo

package nvml

import (
	"context"
	"fmt"
	"reflect"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// healthEvents are the NVML events WatchEvents registers, as the NVIDIA
// device plugin does.
const healthEvents = gonvml.EventTypeXidCriticalError | gonvml.EventTypeDoubleBitEccError | gonvml.EventTypeSingleBitEccError

// WatchEvents delivers health events (Xids, ECC errors) to ch until ctx
// ends, then returns ctx.Err(). Devices that cannot report events
// (NOT_SUPPORTED, e.g. old boards; ECC events need ECC on) are skipped and
// logged; a device whose registration fails otherwise gets one
// gpu.EventEventPathBroken event (gpu.EventDeviceLost when it is lost).
// Xid 79 arrives as an EventXID with XID 79: the Manager decides what is
// fatal. When the wait reports a lost GPU, each GPU whose handle then
// fails gets one gpu.EventDeviceLost and the others are watched on. Any
// other failure of the event wait ends WatchEvents with an error.
//
// NVML's wait cannot be interrupted, so it runs on a goroutine in slices of
// the event wait (WithEventWait): WatchEvents returns as soon as ctx ends,
// and the goroutine frees the event set after its current slice. Close
// waits for it.
func (b *Backend) WatchEvents(ctx context.Context, ch chan<- gpu.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errClosed("watch events")
	}
	b.watchers.Add(1)
	b.mu.Unlock()

	errc := make(chan error, 1)
	go func() {
		defer b.watchers.Done()
		errc <- b.watch(ctx, ch)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watcher is one WatchEvents: its event set and what it knows of each
// device.
type watcher struct {
	b   *Backend
	ch  chan<- gpu.Event
	set gonvml.EventSet // nil while none is open
	// out marks devices not (or no longer) in the set: unreadable at
	// discovery, without health events, failed registration, or lost.
	out []bool
	// lost marks devices already reported lost, so each is reported once.
	lost []bool
}

func (b *Backend) watch(ctx context.Context, ch chan<- gpu.Event) error {
	w := &watcher{b: b, ch: ch, out: make([]bool, len(b.devs)), lost: make([]bool, len(b.devs))}
	for i, d := range b.devs {
		w.out[i] = d.broken != nil // already reported at discovery
	}
	defer w.free()
	registered, err := w.build(ctx)
	if err != nil {
		return err
	}
	if registered == 0 {
		b.log.Warn("nvml: no GPU reports health events; relying on sampling only")
		return b.idle(ctx)
	}

	waitMS := uint32(b.eventWait.Milliseconds())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.closing:
			return errClosed("watch events")
		default:
		}
		ed, ret := w.set.Wait(waitMS)
		switch ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_TIMEOUT:
			continue // nothing happened
		case gonvml.ERROR_GPU_IS_LOST:
			// Some GPU of the set fell off the bus. Report the ones whose
			// handles fail and watch the rest in a set without them.
			if registered, err = w.dropLost(ctx); err != nil {
				return err
			}
			if registered == 0 {
				b.log.Warn("nvml: no GPU left that reports health events; relying on sampling only")
				return b.idle(ctx)
			}
			continue
		default:
			return fmt.Errorf("nvml: health events stopped: %w", Error{Op: "wait for events", Code: ret})
		}
		ev, ok := b.event(ed)
		if !ok {
			continue
		}
		if ev.Kind == gpu.EventXID && ev.XID == 79 {
			w.lost[ev.Index] = true // it will fail the wait next; reported now
		}
		if !b.send(ctx, ch, ev) {
			return b.stopErr(ctx)
		}
	}
}

// build opens an event set and registers every device still watched. A
// registration answering UNKNOWN leaves the set undefined (nvml.h says to
// free it), so the set is freed and built again without that device.
func (w *watcher) build(ctx context.Context) (registered int, err error) {
	b := w.b
	for {
		set, ret := b.lib.EventSetCreate()
		switch ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_NOT_SUPPORTED:
			b.log.Warn("nvml: health events are not supported on this system; relying on sampling only")
			return 0, nil
		default:
			return 0, fmt.Errorf("nvml: watch events: %w", Error{Op: "create event set", Code: ret})
		}
		w.set = set
		registered = 0
		rebuild := false
		for i, d := range b.devs {
			if w.out[i] {
				continue
			}
			ok, op, code := b.register(d, set)
			if code == gonvml.SUCCESS {
				if ok {
					registered++
				} else {
					w.out[i] = true // reports none of the events
				}
				continue
			}
			w.out[i] = true
			ev := gpu.Event{Index: i, UUID: d.uuid, Kind: gpu.EventEventPathBroken, Time: b.clock.Now()}
			if code == gonvml.ERROR_GPU_IS_LOST {
				w.lost[i] = true
				ev.Kind = gpu.EventDeviceLost
			}
			b.log.Error("nvml: GPU cannot report health events", "gpu", i, "uuid", d.uuid, "err", Error{Op: op, Code: code})
			if !b.send(ctx, w.ch, ev) {
				return 0, b.stopErr(ctx)
			}
			if code == gonvml.ERROR_UNKNOWN && op == "register events" {
				rebuild = true
				break
			}
		}
		if !rebuild {
			return registered, nil
		}
		w.free()
	}
}

// dropLost handles a wait that answered GPU_IS_LOST: it finds the devices
// of the set whose handles now fail, reports each lost once, and rebuilds
// the set without them. When every handle still answers, the lost GPU
// cannot be told and the event path is broken.
func (w *watcher) dropLost(ctx context.Context) (registered int, err error) {
	b := w.b
	var dropped []int
	for i, d := range b.devs {
		if w.out[i] || !handleLost(d.h) {
			continue
		}
		dropped = append(dropped, i)
		w.out[i] = true
		if w.lost[i] {
			continue
		}
		w.lost[i] = true
		b.log.Error("nvml: GPU fell off the bus", "gpu", i, "uuid", d.uuid)
		if !b.send(ctx, w.ch, gpu.Event{Index: i, UUID: d.uuid, Kind: gpu.EventDeviceLost, Time: b.clock.Now()}) {
			return 0, b.stopErr(ctx)
		}
	}
	if len(dropped) == 0 {
		return 0, fmt.Errorf("nvml: health events stopped: the wait reports a lost GPU but every GPU still answers: %w",
			Error{Op: "wait for events", Code: gonvml.ERROR_GPU_IS_LOST})
	}
	b.log.Warn("nvml: watching health events without the lost GPUs", "lost", dropped)
	w.free()
	return w.build(ctx)
}

// handleLost reports whether a device's handle fails as a lost GPU's does.
func handleLost(h gonvml.Device) bool {
	_, ret := h.GetUUID()
	return ret == gonvml.ERROR_GPU_IS_LOST || ret == gonvml.ERROR_RESET_REQUIRED
}

// free releases the event set, if one is open.
func (w *watcher) free() {
	if w.set == nil {
		return
	}
	if ret := w.set.Free(); ret != gonvml.SUCCESS {
		w.b.log.Warn("nvml: free event set", "err", Error{Op: "free event set", Code: ret})
	}
	w.set = nil
}

// register registers d's supported health events in set. It reports
// SUCCESS without registering when d supports none; otherwise it names
// the call that failed and its code.
func (b *Backend) register(d *device, set gonvml.EventSet) (registered bool, op string, code gonvml.Return) {
	supported, ret := d.h.GetSupportedEventTypes()
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_NOT_SUPPORTED:
		b.log.Info("nvml: GPU is too old to report health events", "gpu", d.info.Index, "uuid", d.uuid)
		return false, "", gonvml.SUCCESS
	default:
		return false, "get supported event types", ret
	}
	mask := supported & healthEvents
	if mask == 0 {
		b.log.Info("nvml: GPU reports none of the health events", "gpu", d.info.Index, "uuid", d.uuid)
		return false, "", gonvml.SUCCESS
	}
	switch ret := d.h.RegisterEvents(mask, set); ret {
	case gonvml.SUCCESS:
		return true, "", gonvml.SUCCESS
	case gonvml.ERROR_NOT_SUPPORTED:
		b.log.Info("nvml: GPU cannot register health events", "gpu", d.info.Index, "uuid", d.uuid)
		return false, "", gonvml.SUCCESS
	default:
		return false, "register events", ret
	}
}

// event turns NVML event data into a gpu.Event. The device is found by
// its handle: a call on it (GetUUID) answers GPU_IS_LOST right after the
// Xid 79 that says so, which would drop the one event that matters.
func (b *Backend) event(ed gonvml.EventData) (gpu.Event, bool) {
	d, ok := b.deviceOf(ed.Device)
	if !ok {
		b.log.Warn("nvml: event from a GPU this backend does not know", "type", ed.EventType, "data", ed.EventData)
		return gpu.Event{}, false
	}
	ev := gpu.Event{Index: d.info.Index, UUID: d.uuid, Time: b.clock.Now()}
	switch {
	case ed.EventType&gonvml.EventTypeXidCriticalError != 0:
		ev.Kind, ev.XID = gpu.EventXID, int(ed.EventData)
	case ed.EventType&gonvml.EventTypeDoubleBitEccError != 0:
		ev.Kind = gpu.EventDoubleBitECC
	case ed.EventType&gonvml.EventTypeSingleBitEccError != 0:
		ev.Kind = gpu.EventSingleBitECC
	default:
		return gpu.Event{}, false
	}
	return ev, true
}

// deviceOf finds the device whose handle h is. go-nvml's handles are
// comparable values (a C pointer), so the event's handle equals the one
// discovery got. A handle of a type that cannot be compared (a caller's
// own mock) matches none rather than panic.
func (b *Backend) deviceOf(h gonvml.Device) (*device, bool) {
	if h == nil || !reflect.TypeOf(h).Comparable() {
		return nil, false
	}
	for _, d := range b.devs {
		if d.h != nil && d.h == h {
			return d, true
		}
	}
	return nil, false
}

// send delivers ev unless ctx ends or the backend closes first.
func (b *Backend) send(ctx context.Context, ch chan<- gpu.Event, ev gpu.Event) bool {
	select {
	case ch <- ev:
		return true
	case <-ctx.Done():
		return false
	case <-b.closing:
		return false
	}
}

// idle waits for the end when there is nothing to watch: no events is not a
// broken event path.
func (b *Backend) idle(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.closing:
		return errClosed("watch events")
	}
}

func (b *Backend) stopErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return errClosed("watch events")
}
