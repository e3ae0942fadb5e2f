package workload

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// schedule is one pass: it carries out what the GPUs' health, drains and
// cancellations require of the live workloads, places queued work, and
// fills idle GPUs with miners. Each rule looks at how things are, not at
// what happened, so a change that failed to persist is tried again at the
// next pass.
func (r *runner) schedule(ctx context.Context) {
	m := r.m
	m.mu.Lock()
	open := m.openSlots()
	r.enforce(ctx)
	var queued []*entry
	now := time.Now()
	for _, e := range m.live {
		if e.w.State == StateQueued && e.w.Outcome == "" && !now.Before(e.notBefore) {
			queued = append(queued, e)
		}
	}
	sort.Slice(queued, func(i, j int) bool {
		a, b := queued[i].w, queued[j].w
		if pa, pb := a.Spec.Kind.Paid(), b.Spec.Kind.Paid(); pa != pb {
			return pa
		}
		if a.Spec.Priority != b.Spec.Priority {
			return a.Spec.Priority > b.Spec.Priority
		}
		if !a.SubmittedAt.Equal(b.SubmittedAt) {
			return a.SubmittedAt.Before(b.SubmittedAt)
		}
		return a.Spec.ID < b.Spec.ID
	})
	if m.storeErr == nil {
		m.placeQueued(queued, open, func(e *entry, chosen []candidate) { r.place(ctx, e, chosen) })
	}
	idle := m.idleSlots(open)
	fill := m.o.filler != nil && len(idle) > 0 && !m.filling && m.storeErr == nil
	m.filling = m.filling || fill
	m.mu.Unlock()
	if fill {
		r.spawn(ctx, func(ctx context.Context) { r.fill(ctx, idle) })
	}
}

// openSlots says, per slot, whether new work may go there: healthy, not
// hung, not quarantined, not cordoned. The caller holds m.mu.
func (m *Manager) openSlots() []bool {
	if m.healthy == nil {
		m.healthy = make([]bool, len(m.slots))
	}
	for i, sl := range m.slots {
		ok, _ := m.gpuHealth(i)
		m.healthy[i] = ok && sl.quarantine == "" && m.cordoned(i) == ""
	}
	return m.healthy
}

// enforce applies the rules that stop or end live work: a device fault of
// a GPU, a drain, a requested outcome, a stop that failed before. The
// caller holds m.mu.
func (r *runner) enforce(ctx context.Context) {
	m := r.m
	for _, e := range m.live {
		switch e.w.State {
		case StateQueued:
			if e.w.Outcome.Final() { // asked while it was being launched
				_ = m.apply(ctx, e, change{to: e.w.Outcome, ev: Event{Type: finalEvent[e.w.Outcome]}})
				continue
			}
			if i, h, ok := m.faultOf(e.w.Spec.GPUs.UUIDs); ok {
				_ = m.apply(ctx, e, change{to: StateFailed, reason: "pinned to " + gpuFault(m.slots[i], i, h), ev: Event{Type: EventFailed}})
			}
		case StateScheduled:
			if i, h, ok := m.faultOf(e.w.GPUs); ok {
				if len(e.w.Spec.GPUs.UUIDs) > 0 {
					m.abortLaunch(e, StateFailed, "pinned to "+gpuFault(m.slots[i], i, h))
				} else {
					m.abortLaunch(e, StateQueued, gpuFault(m.slots[i], i, h)+" before the start; requeued for other GPUs")
				}
			}
			for _, id := range e.victims {
				if v := m.live[id]; v != nil && v.w.State == StateRunning {
					r.preempt(ctx, v, e.w.Spec.ID) // an earlier try did not persist
				}
			}
		case StateRunning, StatePreempting:
			r.enforceRunning(ctx, e)
		}
		if (e.w.State == StatePreempting || e.w.State == StateStopping) && !e.stopping && e.awaiting {
			r.stopContainer(ctx, e)
		}
	}
}

// enforceRunning stops a running workload when one of its GPUs failed,
// when its GPU is drained, or when an outcome was asked while it started.
// The caller holds m.mu.
func (r *runner) enforceRunning(ctx context.Context, e *entry) {
	m := r.m
	if i, h, ok := m.faultOf(e.w.GPUs); ok && m.slots[i].holder == e.w.Spec.ID {
		fault := gpuFault(m.slots[i], i, h)
		switch {
		case e.w.Spec.requeueOnLoss() && e.w.State == StateRunning:
			m.log.Error("workload lost a GPU; requeued to resume from its checkpoint", "id", e.w.Spec.ID, "fault", fault)
			_ = m.apply(ctx, e, change{to: StatePreempting, reason: fault + "; requeued to resume from its checkpoint", ev: Event{Type: EventPreempting}})
		case !e.w.Spec.requeueOnLoss():
			m.log.Error("workload lost a GPU", "id", e.w.Spec.ID, "fault", fault)
			_ = m.apply(ctx, e, change{to: StateStopping, reason: fault, edit: func(w *Workload) { w.Outcome = StateFailed },
				ev: Event{Type: EventStopping}})
		}
		return
	}
	if e.w.State != StateRunning {
		return
	}
	if e.w.Outcome != "" {
		_ = m.apply(ctx, e, change{to: StateStopping, ev: Event{Type: EventStopping}})
		return
	}
	for _, u := range e.w.GPUs {
		if i := m.byUUID[u]; m.slots[i].drain && m.slots[i].holder == e.w.Spec.ID {
			r.preempt(ctx, e, "drain of GPU "+u+" ("+m.cordoned(i)+")")
			return
		}
	}
}

// faultOf finds a GPU among uuids with a device-level fault. The caller
// holds m.mu.
func (m *Manager) faultOf(uuids []string) (int, gpu.Health, bool) {
	for _, u := range uuids {
		if i, ok := m.byUUID[u]; ok {
			if bad, h := m.faulted(i); bad {
				return i, h, true
			}
		}
	}
	return 0, gpu.Health{}, false
}

func gpuFault(sl *slot, i int, h gpu.Health) string {
	return fmt.Sprintf("GPU %d (%s) failed: %s", i, sl.dev.UUID, h.Reason)
}

// anyAvailable reports whether some GPU is free, mining or held by
// preemptible work: without one no placement can succeed, and the queue
// need not be walked. The caller holds m.mu.
func (m *Manager) anyAvailable(open []bool) bool {
	for i, sl := range m.slots {
		if sl.next != "" || !open[i] {
			continue
		}
		if sl.holder == "" {
			return true
		}
		if h := m.live[sl.holder]; h != nil && !h.stopping && h.w.State == StateRunning &&
			(h.w.Spec.Kind == KindMining || h.w.Spec.Preemptible) {
			return true
		}
	}
	return false
}

// shape is what a decision depends on besides the node: specs of the same
// shape get the same answer within one pass.
type shape struct {
	paid, anyUse bool
	kind         Kind
	priority     int
	price        float64
	count        int
	memory       uint64
	cc           gpu.ComputeCapability
	link         gpu.Link
	models, pins string
}

func shapeOf(s Spec) shape {
	return shape{
		paid: s.Kind.Paid(), anyUse: s.GPUs.IgnoreReadiness, kind: s.Kind, priority: s.Priority,
		price: s.PricePerGPUHour, count: s.GPUs.count(),
		memory: s.GPUs.MinMemoryBytes, cc: s.GPUs.MinComputeCapability, link: s.GPUs.MinLink,
		models: strings.Join(s.GPUs.Models, "\x00"), pins: strings.Join(s.GPUs.UUIDs, "\x00"),
	}
}

// placeQueued walks the queue in order and places each spec that can have
// GPUs now. A long queue costs little: once a shape of request is refused,
// the specs of the same shape behind it are skipped, and nothing is tried
// while no GPU is free or mining. The caller holds m.mu.
func (m *Manager) placeQueued(queued []*entry, open []bool, place func(*entry, []candidate)) {
	refused := map[shape]bool{}
	avail := m.anyAvailable(open)
	for _, e := range queued {
		if !avail || m.storeErr != nil {
			return
		}
		k := shapeOf(e.w.Spec)
		if refused[k] {
			continue
		}
		chosen := m.decide(e, open)
		if chosen == nil {
			refused[k] = true
			continue
		}
		place(e, chosen)
		avail = m.anyAvailable(open)
	}
}

// decide is the allocation decision: the GPUs e would take now, by best fit,
// the economic policy and the power budget, or nil. The caller holds m.mu.
func (m *Manager) decide(e *entry, open []bool) []candidate {
	n := e.w.Spec.GPUs.count()
	cands := m.candidates(e, open, m.cands)
	m.cands = cands[:0]
	chosen := m.choose(cands, n)
	if chosen == nil {
		return nil
	}
	var mining []gpu.Device
	for _, c := range chosen {
		if c.class == classMining {
			mining = append(mining, m.slots[c.slot].dev)
		}
	}
	if len(mining) > 0 {
		if ok, why := m.o.policy.Displace(e.w.Spec, mining); !ok {
			if e.waitWhy != why {
				e.waitWhy = why
				m.log.Info("workload waits for idle GPUs: mining pays more", "id", e.w.Spec.ID, "why", why)
			}
			cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.class == classMining })
			if chosen = m.choose(cands, n); chosen == nil {
				return nil
			}
		}
	}
	if !m.admit(chosen) {
		return nil
	}
	return chosen
}

// place reserves the chosen GPUs for e, preempts their holders and starts
// the launch. The caller holds m.mu.
func (r *runner) place(ctx context.Context, e *entry, chosen []candidate) {
	m := r.m
	gpus := make([]string, len(chosen))
	victims := map[string]*entry{}
	for i, c := range chosen {
		gpus[i] = m.slots[c.slot].dev.UUID
		if c.holder != nil {
			victims[c.holder.w.Spec.ID] = c.holder
		}
	}
	ids := make([]string, 0, len(victims))
	for id := range victims {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	reason := ""
	if len(ids) > 0 {
		reason = "taking GPUs from " + strings.Join(ids, ", ")
	}
	err := m.apply(ctx, e, change{to: StateScheduled, edit: func(w *Workload) {
		w.GPUs, w.Reason = gpus, reason
	}, ev: Event{Type: EventScheduled, Reason: reason}})
	if err != nil {
		return // not placed; the store failure holds new placements
	}
	for _, c := range chosen {
		m.slots[c.slot].next = e.w.Spec.ID
	}
	e.victims, e.abortTo, e.abortWhy = ids, "", ""
	e.scheduledAt = time.Now()
	e.releasedAt = e.scheduledAt
	e.abort = make(chan struct{})
	e.launched = make(chan struct{})
	for _, id := range ids {
		r.preempt(ctx, victims[id], e.w.Spec.ID)
	}
	abort, launched := e.abort, e.launched
	r.spawn(ctx, func(ctx context.Context) { r.launch(ctx, e, abort, launched) })
}

// preempt asks a running workload to yield its GPUs. The caller holds m.mu.
func (r *runner) preempt(ctx context.Context, v *entry, by string) {
	if v.w.State != StateRunning {
		return
	}
	reason := "preempted by " + by
	if err := r.m.apply(ctx, v, change{to: StatePreempting, reason: reason, ev: Event{Type: EventPreempting}}); err != nil {
		return // the next pass tries again
	}
	v.preemptedBy = by
	r.stopContainer(ctx, v)
}

// stopContainer stops a preempting or stopping workload's container with
// its signal and grace; a stop that fails is tried again at a later pass.
// The exit itself is seen by the goroutine that waits for the container.
// The caller holds m.mu.
func (r *runner) stopContainer(ctx context.Context, e *entry) {
	if e.stopping || !e.awaiting {
		return
	}
	e.stopping = true
	m := r.m
	ref := e.w.Container
	grace := e.w.Spec.StopGrace
	if grace <= 0 {
		grace = defaultStopGrace
	}
	r.spawn(ctx, func(ctx context.Context) {
		sctx, cancel := context.WithTimeout(ctx, grace+m.o.runtimeTimeout)
		defer cancel()
		if _, err := m.rtFor(ref).Stop(sctx, ref); err != nil && ctx.Err() == nil {
			m.log.Warn("stop workload failed; retrying", "id", e.id, "container", ref.String(), "err", err)
			m.mu.Lock()
			e.stopping = false
			m.mu.Unlock()
		}
	})
}

// idleSlots lists the GPUs a miner may fill. The caller holds m.mu.
func (m *Manager) idleSlots(open []bool) []int {
	var idle []int
	for i, sl := range m.slots {
		if sl.holder == "" && sl.next == "" && open[i] {
			idle = append(idle, i)
		}
	}
	return idle
}

// fill asks the filler for a miner for each idle GPU and places it. The
// filler is the user's code: it runs without the lock, with the device
// deadline, in a goroutine of its own.
func (r *runner) fill(ctx context.Context, idle []int) {
	m := r.m
	defer func() {
		m.mu.Lock()
		m.filling = false
		m.mu.Unlock()
	}()
	for _, i := range idle {
		dev := m.slots[i].dev
		fctx, cancel := context.WithTimeout(ctx, m.o.deviceTimeout)
		spec, ok := m.o.filler.Fill(fctx, dev)
		cancel()
		if !ok || ctx.Err() != nil {
			continue
		}
		m.mu.Lock()
		sl := m.slots[i]
		if sl.holder != "" || sl.next != "" || !m.openSlots()[i] || m.storeErr != nil || m.life != running {
			m.mu.Unlock()
			continue
		}
		for spec.ID == "" || m.work[spec.ID] != nil {
			m.minerN++
			spec.ID = fmt.Sprintf("mine-gpu%d-%d", i, m.seq+uint64(m.minerN))
		}
		spec.Kind = KindMining
		spec.Preemptible = true
		spec.GPUs = GPURequest{UUIDs: []string{dev.UUID}}
		spec, err := m.admissible(spec)
		if err != nil {
			m.mu.Unlock()
			m.log.Error("filler returned an invalid miner spec; GPU left idle", "gpu", i, "err", err)
			continue
		}
		if !m.admit([]candidate{{slot: i}}) {
			m.mu.Unlock()
			continue
		}
		e := newEntry(Workload{Spec: spec.clone(), State: StateQueued, SubmittedAt: m.clock.Now()})
		if m.admitNew(ctx, e) == nil {
			r.place(ctx, e, []candidate{{slot: i, class: classFree}})
		}
		m.mu.Unlock()
	}
}
