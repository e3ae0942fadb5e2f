package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
)

// settingCordons is the SettingStore key of the cordons: a JSON object of
// GPU UUID to reason, the empty UUID standing for the whole node.
const settingCordons = "cordons"

// Cordon takes a GPU out of service for maintenance: nothing new is placed
// on it (no miner either); what runs there runs on. Drain moves that work
// off. The cordon is durable when the store keeps settings (SettingStore).
// Cordoning a cordoned GPU replaces the reason.
func (m *Manager) Cordon(ctx context.Context, uuid, reason string) error {
	if reason == "" {
		return errorf(ErrInvalid, "cordon GPU %q: give a reason, for the operators who will find it cordoned", uuid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i, err := m.slotOf(uuid)
	if err != nil {
		return err
	}
	return m.setCordon(ctx, i, reason)
}

// Uncordon returns a cordoned GPU to service; it ends a drain too.
func (m *Manager) Uncordon(ctx context.Context, uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, err := m.slotOf(uuid)
	if err != nil {
		return err
	}
	return m.setCordon(ctx, i, "")
}

// CordonNode takes the whole node out of service: nothing new starts on
// any GPU. DrainNode moves the work off.
func (m *Manager) CordonNode(ctx context.Context, reason string) error {
	if reason == "" {
		return errorf(ErrInvalid, "cordon node: give a reason, for the operators who will find it cordoned")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setCordon(ctx, -1, reason)
}

// UncordonNode returns the node to service. GPUs cordoned one by one stay
// cordoned.
func (m *Manager) UncordonNode(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setCordon(ctx, -1, "")
}

// setCordon sets (reason not empty) or clears the cordon of slot i, or of
// the node for i < 0, durably first. The caller holds m.mu.
func (m *Manager) setCordon(ctx context.Context, i int, reason string) error {
	if err := m.usable(false); err != nil {
		return err
	}
	cordons := m.cordons()
	key, uuid := "", ""
	if i >= 0 {
		uuid = m.slots[i].dev.UUID
		key = uuid
	}
	if reason == "" {
		delete(cordons, key)
	} else {
		cordons[key] = reason
	}
	ev := Event{Type: EventCordoned, Reason: reason}
	if reason == "" {
		ev.Type = EventUncordoned
	}
	if uuid != "" {
		ev.GPUs = []string{uuid}
	}
	if err := m.saveCordons(ctx, cordons, ev); err != nil {
		return err
	}
	if i < 0 {
		m.node = reason
		if reason == "" {
			for _, sl := range m.slots {
				sl.drain = sl.drain && sl.cordon != ""
			}
		}
	} else {
		m.slots[i].cordon = reason
		if reason == "" {
			m.slots[i].drain = false
		}
	}
	m.log.Info("cordon changed", "gpu", uuid, "reason", reason)
	m.poke()
	return nil
}

// cordons returns the cordons in force, by UUID ("" for the node). The
// caller holds m.mu.
func (m *Manager) cordons() map[string]string {
	out := map[string]string{}
	if m.node != "" {
		out[""] = m.node
	}
	for _, sl := range m.slots {
		if sl.cordon != "" {
			out[sl.dev.UUID] = sl.cordon
		}
	}
	return out
}

// saveCordons writes the cordons, and the event that tells of the change,
// to the store when it keeps them. The caller holds m.mu.
func (m *Manager) saveCordons(ctx context.Context, cordons map[string]string, ev Event) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.o.storeTimeout)
	defer cancel()
	ev.Seq, ev.Time = m.seq+1, m.clock.Now()
	if ss, ok := m.store.(SettingStore); ok {
		b, _ := json.Marshal(cordons) // a map of strings always encodes
		err := ss.PutSetting(sctx, settingCordons, b)
		m.noteStore(err)
		if err != nil {
			return errorf(ErrStore, "record cordons: %w", err)
		}
	}
	if es, ok := m.store.(EventStore); ok {
		if err := es.Append(sctx, ev); err != nil {
			// The cordon itself is stored; only its event is lost.
			m.log.Warn("cordon event not stored", "err", err)
		}
	}
	m.seq = ev.Seq
	m.remember(ev)
	return nil
}

// loadCordons reads the stored cordons into the slots. The caller holds
// m.mu.
func (m *Manager) loadCordons(ctx context.Context) error {
	ss, ok := m.store.(SettingStore)
	if !ok {
		return nil
	}
	b, err := ss.Setting(ctx, settingCordons)
	if err != nil || b == nil {
		return err
	}
	cordons := map[string]string{}
	if err := json.Unmarshal(b, &cordons); err != nil {
		return fmt.Errorf("stored cordons %q: %w", b, err)
	}
	for uuid, reason := range maps.All(cordons) {
		if uuid == "" {
			m.node = reason
			continue
		}
		if i, ok := m.byUUID[uuid]; ok {
			m.slots[i].cordon = reason
		} else {
			m.log.Warn("stored cordon of a GPU this node no longer has", "gpu", uuid)
		}
	}
	return nil
}

// Drain moves the work off a GPU: it cordons the GPU (reason "drained"
// unless cordoned already), stops what holds it with its stop signal and
// grace (paid work returns to the queue, to resume from its checkpoint on
// other GPUs; a miner simply ends), and returns once nothing holds the
// GPU, or with ctx's error. Run must be running.
func (m *Manager) Drain(ctx context.Context, uuid string) error {
	m.mu.Lock()
	i, err := m.slotOf(uuid)
	if err == nil {
		err = m.startDrain(ctx, []int{i})
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.waitDrained(ctx, []int{i})
}

// DrainNode drains every GPU of the node and cordons the node.
func (m *Manager) DrainNode(ctx context.Context) error {
	m.mu.Lock()
	all := make([]int, len(m.slots))
	for i := range all {
		all[i] = i
	}
	err := m.startDrain(ctx, all)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.waitDrained(ctx, all)
}

// startDrain cordons the slots (the node too when they are all) and marks
// them draining; the scheduling pass stops their holders. The caller
// holds m.mu.
func (m *Manager) startDrain(ctx context.Context, slots []int) error {
	if m.life != running {
		return errorf(ErrClosed, "drain needs Run to be running")
	}
	if len(slots) == len(m.slots) && len(slots) > 1 {
		if m.node == "" {
			if err := m.setCordon(ctx, -1, "drained"); err != nil {
				return err
			}
		}
	} else {
		for _, i := range slots {
			if m.slots[i].cordon == "" {
				if err := m.setCordon(ctx, i, "drained"); err != nil {
					return err
				}
			}
		}
	}
	for _, i := range slots {
		m.slots[i].drain = true
	}
	m.poke()
	return nil
}

// waitDrained waits until nothing holds or has reserved the slots.
func (m *Manager) waitDrained(ctx context.Context, slots []int) error {
	for {
		m.mu.Lock()
		busy := 0
		for _, i := range slots {
			if sl := m.slots[i]; sl.holder != "" || sl.next != "" {
				busy++
			}
		}
		changed, done := m.changed, m.done
		m.mu.Unlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-done:
			return errorf(ErrClosed, "drain: Run returned with %d GPUs still held", busy)
		case <-ctx.Done():
			return fmt.Errorf("drain: %d GPUs still held: %w", busy, ctx.Err())
		}
	}
}

// cordoned says why slot i takes no new work, or "". The caller holds m.mu.
func (m *Manager) cordoned(i int) string {
	if m.node != "" {
		return m.node
	}
	return m.slots[i].cordon
}
