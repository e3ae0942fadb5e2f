//go:build cgo

package nvml

import (
	"context"
	"fmt"

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
// gpu.EventEventPathBroken event. Xid 79 arrives as an EventXID with XID 79:
// the Manager decides what is fatal. Any other failure of the event wait
// ends WatchEvents with an error.
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

func (b *Backend) watch(ctx context.Context, ch chan<- gpu.Event) error {
	set, ret := b.lib.EventSetCreate()
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_NOT_SUPPORTED:
		b.log.Warn("nvml: health events are not supported on this system; relying on sampling only")
		return b.idle(ctx)
	default:
		return fmt.Errorf("nvml: watch events: %w", Error{Op: "create event set", Code: ret})
	}
	defer func() {
		if ret := set.Free(); ret != gonvml.SUCCESS {
			b.log.Warn("nvml: free event set", "err", Error{Op: "free event set", Code: ret})
		}
	}()

	registered := 0
	for _, d := range b.devs {
		if d.broken != nil {
			continue // already reported lost at discovery
		}
		ok, err := b.register(d, set)
		if err != nil {
			b.log.Error("nvml: GPU cannot report health events", "gpu", d.info.Index, "uuid", d.uuid, "err", err)
			if !b.send(ctx, ch, gpu.Event{Index: d.info.Index, UUID: d.uuid, Kind: gpu.EventEventPathBroken, Time: b.clock.Now()}) {
				return b.stopErr(ctx)
			}
			continue
		}
		if ok {
			registered++
		}
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
		ed, ret := set.Wait(waitMS)
		switch ret {
		case gonvml.SUCCESS:
		case gonvml.ERROR_TIMEOUT:
			continue // nothing happened
		default:
			return fmt.Errorf("nvml: health events stopped: %w", Error{Op: "wait for events", Code: ret})
		}
		ev, ok := b.event(ed)
		if !ok {
			continue
		}
		if !b.send(ctx, ch, ev) {
			return b.stopErr(ctx)
		}
	}
}

// register registers d's supported health events in set. It reports false
// without error when d supports none.
func (b *Backend) register(d *device, set gonvml.EventSet) (bool, error) {
	supported, ret := d.h.GetSupportedEventTypes()
	switch ret {
	case gonvml.SUCCESS:
	case gonvml.ERROR_NOT_SUPPORTED:
		b.log.Info("nvml: GPU is too old to report health events", "gpu", d.info.Index, "uuid", d.uuid)
		return false, nil
	default:
		return false, Error{Op: "get supported event types", Code: ret}
	}
	mask := supported & healthEvents
	if mask == 0 {
		b.log.Info("nvml: GPU reports none of the health events", "gpu", d.info.Index, "uuid", d.uuid)
		return false, nil
	}
	switch ret := d.h.RegisterEvents(mask, set); ret {
	case gonvml.SUCCESS:
		return true, nil
	case gonvml.ERROR_NOT_SUPPORTED:
		b.log.Info("nvml: GPU cannot register health events", "gpu", d.info.Index, "uuid", d.uuid)
		return false, nil
	default:
		return false, Error{Op: "register events", Code: ret}
	}
}

// event turns NVML event data into a gpu.Event, finding the device by UUID.
func (b *Backend) event(ed gonvml.EventData) (gpu.Event, bool) {
	if ed.Device == nil {
		b.log.Warn("nvml: event without a device", "type", ed.EventType, "data", ed.EventData)
		return gpu.Event{}, false
	}
	uuid, ret := ed.Device.GetUUID()
	if ret != gonvml.SUCCESS {
		b.log.Warn("nvml: event from a device without UUID", "type", ed.EventType, "err", Error{Op: "get UUID", Code: ret})
		return gpu.Event{}, false
	}
	idx, ok := b.byUUID[uuid]
	if !ok {
		b.log.Warn("nvml: event from an unknown GPU", "uuid", uuid, "type", ed.EventType)
		return gpu.Event{}, false
	}
	ev := gpu.Event{Index: idx, UUID: uuid, Time: b.clock.Now()}
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
