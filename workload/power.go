package workload

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// CurtailReport says how a power target was met.
type CurtailReport struct {
	TargetW float64
	StartW  float64 // measured draw of the GPUs when the curtailment began
	FinalW  float64 // measured draw when it ended
	Met     bool
	Took    time.Duration
	Steps   []CurtailStep
}

// CurtailStep is one action of a curtailment and the draw measured after it.
type CurtailStep struct {
	Action    string
	Workloads []string
	DrawW     float64
	After     time.Duration // since the curtailment began
}

type curtailReq struct {
	watts float64
	// standing: the budget's own check on a tick; it reads the budget when
	// it runs and never sets it, so it cannot undo a later Curtail(0).
	standing bool
	reply    chan curtailResult // nil for standing checks
}

type curtailResult struct {
	rep CurtailReport
	err error
}

// Curtail brings the GPUs' draw to at most watts and keeps it there as the
// standing budget, in the order demand-response programs expect: lower
// mining power limits, stop mining, lower training power limits, and only
// then stop training, each with its checkpoint grace (stopped paid work is
// requeued and resumes when the budget allows). It returns when the target
// is met or nothing more can be shed, with the measured draw and how long
// it took. Curtail(ctx, 0) lifts the budget and restores the lowered
// limits. Run must be running.
func (m *Manager) Curtail(ctx context.Context, watts float64) (CurtailReport, error) {
	if watts < 0 {
		return CurtailReport{}, fmt.Errorf("%w: power target %v W is negative; 0 lifts the budget", ErrInvalid, watts)
	}
	m.mu.Lock()
	running := m.running
	m.mu.Unlock()
	if !running {
		return CurtailReport{}, fmt.Errorf("%w: Curtail needs Run to be running", ErrClosed)
	}
	req := curtailReq{watts: watts, reply: make(chan curtailResult, 1)}
	select {
	case m.curtailReq <- req:
	case <-m.done:
		return CurtailReport{}, fmt.Errorf("%w: Run has returned", ErrClosed)
	case <-ctx.Done():
		return CurtailReport{}, ctx.Err()
	}
	select {
	case res := <-req.reply:
		return res.rep, res.err
	case <-ctx.Done():
		return CurtailReport{}, ctx.Err()
	}
}

// PowerBudget returns the standing budget in watts; 0 means none.
func (m *Manager) PowerBudget() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.budgetW
}

// admit reports whether starting work on the chosen GPUs keeps the
// predicted draw within the budget, and if so books their draw at their
// default limit until the next measurement. The caller holds m.mu.
func (m *Manager) admit(chosen []candidate) bool {
	if m.budgetW <= 0 {
		return true
	}
	total := 0.0
	for _, sl := range m.slots {
		total += sl.lastW
	}
	for _, c := range chosen {
		sl := m.slots[c.slot]
		total += sl.fullW() - sl.lastW
	}
	if total > m.budgetW {
		return false
	}
	for _, c := range chosen {
		sl := m.slots[c.slot]
		sl.lastW = sl.fullW()
	}
	return true
}

// unknownFullW is what a GPU that reports no power limit is assumed to
// draw under load: as much as the biggest cards of the presets, so that
// the budget errs on the safe side.
const unknownFullW = 400

// fullW is what the GPU may draw under load: its default limit.
func (s *slot) fullW() float64 {
	if s.dev.PowerLimit.Valid {
		return s.dev.PowerLimit.Value.DefaultW
	}
	return unknownFullW
}

// measure samples every GPU and returns their total draw.
func (m *Manager) measure(ctx context.Context) float64 {
	samples, err := m.gpus.SampleAll(ctx, nil)
	if err != nil && !errors.Is(err, gpu.ErrDeviceLost) {
		m.log.Warn("power sample failed", "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	total := 0.0
	for i, s := range samples {
		if !s.PowerW.Valid {
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

// launching reports whether work placed on the slot has yet to start. The
// caller holds m.mu.
func (m *Manager) launching(sl *slot) bool {
	if sl.next != "" {
		return true
	}
	e := m.work[sl.holder]
	return e != nil && e.w.State == StateScheduled
}

// tick measures the draw and curtails when a standing budget is exceeded.
func (r *runner) tick(ctx context.Context) {
	m := r.m
	draw := m.measure(ctx)
	m.mu.Lock()
	over := m.budgetW > 0 && draw > m.budgetW && !m.curtailing
	budget := m.budgetW
	m.mu.Unlock()
	if over {
		m.log.Warn("GPU draw over the power budget; curtailing", "draw_w", draw, "budget_w", budget)
		m.mu.Lock()
		m.curtailing = true // one standing check at a time
		m.mu.Unlock()
		r.spawn(ctx, func(ctx context.Context) { r.curtail(ctx, curtailReq{standing: true}) })
	}
}

// curtail carries out one curtailment.
func (r *runner) curtail(ctx context.Context, req curtailReq) {
	m := r.m
	m.curtailMu.Lock()
	defer m.curtailMu.Unlock()
	m.mu.Lock()
	m.curtailing = true
	if req.standing {
		req.watts = m.budgetW
	} else {
		m.budgetW = req.watts
	}
	m.mu.Unlock()
	if req.standing && req.watts == 0 {
		m.mu.Lock()
		m.curtailing = false
		m.mu.Unlock()
		return // lifted meanwhile
	}
	defer func() {
		m.mu.Lock()
		m.curtailing = false
		m.mu.Unlock()
		m.poke()
	}()
	rep, err := r.shed(ctx, req.watts)
	m.log.Info("curtailment done", "target_w", rep.TargetW, "start_w", rep.StartW, "final_w", rep.FinalW,
		"met", rep.Met, "took", rep.Took, "steps", len(rep.Steps))
	if req.reply != nil {
		req.reply <- curtailResult{rep: rep, err: err}
	}
}

func (r *runner) shed(ctx context.Context, target float64) (CurtailReport, error) {
	m := r.m
	t0 := time.Now()
	rep := CurtailReport{TargetW: target}
	if target == 0 {
		err := r.restoreLimits(ctx)
		rep.FinalW = m.measure(ctx)
		rep.Took = time.Since(t0)
		return rep, err
	}
	draw := m.measure(ctx)
	rep.StartW = draw
	step := func(action string, ids []string) bool {
		if m.o.powerSettle > 0 {
			// Ampere and newer report power averaged over 1 s: wait for
			// the new limit to show before judging it.
			select {
			case <-time.After(m.o.powerSettle):
			case <-ctx.Done():
			}
		}
		draw = m.measure(ctx)
		rep.Steps = append(rep.Steps, CurtailStep{Action: action, Workloads: ids, DrawW: draw, After: time.Since(t0)})
		return draw <= target
	}
	done := func(err error) (CurtailReport, error) {
		rep.FinalW, rep.Met, rep.Took = draw, draw <= target, time.Since(t0)
		return rep, err
	}
	if draw <= target {
		// A higher target than before: give the throttled GPUs their
		// limits back if even their full draw fits.
		if ids, headroom := r.lowered(); len(ids) > 0 && draw+headroom <= target {
			if err := r.restoreLimits(ctx); err != nil {
				return done(err)
			}
			step("restore lowered power limits", ids)
		}
		return done(nil)
	}
	mining := func(e *entry) bool { return e.w.Spec.Kind == KindMining }
	paid := func(e *entry) bool { return e.w.Spec.Kind.Paid() }

	if ids := r.lowerLimits(ctx, mining); len(ids) > 0 && step("lower mining power limits", ids) {
		return done(nil)
	}
	// Miners one at a time, the hungriest first: stop no more than needed.
	for _, id := range r.byDraw(mining) {
		if r.stopAll(ctx, func(e *entry) bool { return e.w.Spec.ID == id }) == nil {
			continue
		}
		if step("stop mining "+id, []string{id}) {
			return done(nil)
		}
	}
	if ids := r.lowerLimits(ctx, paid); len(ids) > 0 && step("lower training power limits", ids) {
		return done(nil)
	}
	for _, id := range r.byVictimOrder(paid) {
		if r.stopAll(ctx, func(e *entry) bool { return e.w.Spec.ID == id }) == nil {
			continue
		}
		if step("stop training "+id, []string{id}) {
			return done(nil)
		}
	}
	return done(ctx.Err())
}

// lowerLimits sets the GPUs of the selected running workloads to their
// minimum power limit and returns the workloads.
func (r *runner) lowerLimits(ctx context.Context, sel func(*entry) bool) []string {
	m := r.m
	type target struct {
		uuid string
		minW float64
	}
	var targets []target
	ids := map[string]bool{}
	m.mu.Lock()
	for _, sl := range m.slots {
		e := m.work[sl.holder]
		if e == nil || e.w.State != StateRunning || !sel(e) || !sl.dev.PowerLimit.Valid {
			continue
		}
		lim := sl.dev.PowerLimit.Value
		if lim.MinW >= lim.MaxW || sl.lowered {
			continue // locked limit (CMP cards) or already lowered
		}
		targets = append(targets, target{sl.dev.UUID, lim.MinW})
		ids[e.w.Spec.ID] = true
		sl.lowered = true
	}
	m.mu.Unlock()
	for _, t := range targets {
		if err := m.gpus.SetPowerLimit(ctx, t.uuid, t.minW); err != nil {
			m.log.Warn("lower power limit", "gpu", t.uuid, "err", err)
		}
	}
	return sortedKeys(ids)
}

// stopAll stops the selected running workloads (they count as preempted
// by the power cap) and waits until they have ended.
func (r *runner) stopAll(ctx context.Context, sel func(*entry) bool) []string {
	m := r.m
	var ids []string
	m.mu.Lock()
	for _, e := range m.work {
		if e.w.State == StateRunning && !e.stopping && sel(e) {
			r.preempt(ctx, e, "power cap")
			ids = append(ids, e.w.Spec.ID)
		}
	}
	m.mu.Unlock()
	sort.Strings(ids)
	// A stop takes its grace; past that and a margin, report and go on
	// rather than hold every later curtailment.
	deadline := time.After(m.maxGrace(ids) + 30*time.Second)
	for {
		m.mu.Lock()
		left := 0
		for _, id := range ids {
			if e := m.work[id]; e != nil && (e.w.State == StateRunning || e.w.State == StatePreempting) {
				left++
			}
		}
		changed := m.changed
		m.mu.Unlock()
		if left == 0 || ctx.Err() != nil {
			return ids
		}
		select {
		case <-changed:
		case <-ctx.Done():
		case <-deadline:
			m.log.Error("workloads did not stop within their grace; curtailment goes on", "ids", ids)
			return ids
		}
	}
}

// maxGrace is the longest stop grace among the workloads.
func (m *Manager) maxGrace(ids []string) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := isolation.DefaultStopGrace
	for _, id := range ids {
		if e := m.work[id]; e != nil && e.w.Spec.StopGrace > g {
			g = e.w.Spec.StopGrace
		}
	}
	return g
}

// byDraw lists the selected running workloads, the highest measured draw
// first.
func (r *runner) byDraw(sel func(*entry) bool) []string {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	draw := map[string]float64{}
	for _, sl := range m.slots {
		if e := m.work[sl.holder]; e != nil && e.w.State == StateRunning && sel(e) {
			draw[e.w.Spec.ID] += sl.lastW
		}
	}
	ids := make([]string, 0, len(draw))
	for id := range draw {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if draw[ids[i]] != draw[ids[j]] {
			return draw[ids[i]] > draw[ids[j]]
		}
		return ids[i] < ids[j]
	})
	return ids
}

// byVictimOrder lists the selected running workloads, the least important
// first, then the most recently started.
func (r *runner) byVictimOrder(sel func(*entry) bool) []string {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var es []*entry
	for _, e := range m.work {
		if e.w.State == StateRunning && sel(e) {
			es = append(es, e)
		}
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].w.Spec.Priority != es[j].w.Spec.Priority {
			return es[i].w.Spec.Priority < es[j].w.Spec.Priority
		}
		return es[i].w.StartedAt.After(es[j].w.StartedAt)
	})
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.w.Spec.ID
	}
	return ids
}

// lowered lists the workloads on GPUs whose limit the cap lowered, and
// how much more they may draw at their default limits.
func (r *runner) lowered() ([]string, float64) {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := map[string]bool{}
	headroom := 0.0
	for _, sl := range m.slots {
		if !sl.lowered {
			continue
		}
		headroom += max(0, sl.fullW()-sl.lastW)
		if sl.holder != "" {
			ids[sl.holder] = true
		}
	}
	return sortedKeys(ids), headroom
}

// restoreLimits resets the limits the cap lowered.
func (r *runner) restoreLimits(ctx context.Context) error {
	m := r.m
	var uuids []string
	m.mu.Lock()
	for _, sl := range m.slots {
		if sl.lowered {
			uuids = append(uuids, sl.dev.UUID)
			sl.lowered = false
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, u := range uuids {
		if err := m.gpus.ResetPowerLimit(ctx, u); err != nil && !errors.Is(err, gpu.ErrUnsupported) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
