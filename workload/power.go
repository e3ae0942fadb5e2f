package workload

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
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

// capMargin is how far under a power target the cap aims: limits are set
// for 97.5% of the target, so the draw lands within 5% under it even when
// a reading is a little off.
const capMargin = 0.025

// Curtail brings the GPUs' draw to at most watts and keeps it there as the
// standing budget, in the order demand-response programs expect, each
// step only as far as needed: lower mining power limits just enough, stop
// miners (the hungriest first), lower training power limits, and only then
// stop training, each with its checkpoint grace (stopped paid work is
// requeued and resumes when the budget allows). When the target is met
// with room to spare, lowered limits are raised again to land just under
// it. It returns when the target is met or nothing more can be shed, with
// the measured draw and how long it took. Curtail(ctx, 0) lifts the budget
// and restores the lowered limits. Run must be running.
func (m *Manager) Curtail(ctx context.Context, watts float64) (CurtailReport, error) {
	if err := checkWatts("Curtail", watts); err != nil {
		return CurtailReport{}, errorf(ErrInvalid, "%w: a NaN, infinite or negative target would switch the budget off; 0 lifts it", err)
	}
	m.mu.Lock()
	life := m.life
	m.mu.Unlock()
	if life != running {
		return CurtailReport{}, errorf(ErrClosed, "Curtail needs Run to be running")
	}
	req := curtailReq{watts: watts, reply: make(chan curtailResult, 1)}
	select {
	case m.curtailReq <- req:
	case <-m.done:
		return CurtailReport{}, errorf(ErrClosed, "Curtail: Run has returned")
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

// settingBudget is the SettingStore key of the power budget, in watts as
// decimal text.
const settingBudget = "power-budget"

// saveBudget stores the budget when the store keeps settings.
func (m *Manager) saveBudget(ctx context.Context, watts float64) error {
	ss, ok := m.store.(SettingStore)
	if !ok {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.o.storeTimeout)
	defer cancel()
	err := ss.PutSetting(sctx, settingBudget, strconv.AppendFloat(nil, watts, 'g', -1, 64))
	m.mu.Lock()
	m.noteStore(err)
	m.mu.Unlock()
	if err != nil {
		return errorf(ErrStore, "record the power budget: %w", err)
	}
	return nil
}

// loadBudget reads the stored budget, which wins over WithPowerBudget: it
// is the newer word. The caller holds m.mu.
func (m *Manager) loadBudget(ctx context.Context) error {
	ss, ok := m.store.(SettingStore)
	if !ok {
		return nil
	}
	b, err := ss.Setting(ctx, settingBudget)
	if err != nil || b == nil {
		return err
	}
	w, err := strconv.ParseFloat(string(b), 64)
	if err != nil || checkWatts("stored budget", w) != nil {
		return fmt.Errorf("stored power budget %q: want watts, 0 or more", b)
	}
	m.budgetW = w
	return nil
}

// PowerBudget returns the standing budget in watts; 0 means none.
func (m *Manager) PowerBudget() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	_ = m.load() // a store that cannot be read leaves the option's budget
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

// launching reports whether work placed on the slot has yet to start. The
// caller holds m.mu.
func (m *Manager) launching(sl *slot) bool {
	if sl.next != "" {
		return true
	}
	e := m.live[sl.holder]
	return e != nil && e.w.State == StateScheduled
}

// curtail carries out one curtailment.
func (r *runner) curtail(ctx context.Context, req curtailReq) {
	m := r.m
	m.curtailMu.Lock()
	defer m.curtailMu.Unlock()
	if !req.standing {
		// The budget is a site's limit: it is stored before it is in force,
		// so a restarted manager keeps it.
		if err := m.saveBudget(ctx, req.watts); err != nil {
			if req.reply != nil {
				req.reply <- curtailResult{err: err} // buffered: never blocks
			}
			return
		}
	}
	m.mu.Lock()
	m.curtailing = true
	if req.standing {
		req.watts = m.budgetW
	} else {
		m.budgetW = req.watts
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.curtailing = false
		m.mu.Unlock()
		m.poke()
	}()
	if req.standing && req.watts == 0 {
		return // lifted meanwhile
	}
	rep, err := r.shed(ctx, req.watts)
	m.log.Info("curtailment done", "target_w", rep.TargetW, "start_w", rep.StartW, "final_w", rep.FinalW,
		"met", rep.Met, "took", rep.Took, "steps", len(rep.Steps))
	if req.reply != nil {
		req.reply <- curtailResult{rep: rep, err: err} // buffered: never blocks
	}
}

func (r *runner) shed(ctx context.Context, target float64) (CurtailReport, error) {
	m := r.m
	t0 := time.Now()
	rep := CurtailReport{TargetW: target}
	if target == 0 {
		err := r.restoreLimits(ctx)
		rep.FinalW = r.measure(ctx)
		rep.Took = time.Since(t0)
		return rep, err
	}
	draw := r.measure(ctx)
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
		draw = r.measure(ctx)
		rep.Steps = append(rep.Steps, CurtailStep{Action: action, Workloads: ids, DrawW: draw, After: time.Since(t0)})
		return draw <= target
	}
	done := func(err error) (CurtailReport, error) {
		// Met with room to spare: give the room back to the throttled
		// GPUs, so the cap costs no more work than it must.
		if err == nil && draw <= target && draw < target*(1-2*capMargin) {
			if ids := r.fitLimits(ctx, nil, target); len(ids) > 0 {
				step("raise lowered power limits", ids)
			}
		}
		rep.FinalW, rep.Met, rep.Took = draw, draw <= target, time.Since(t0)
		return rep, err
	}
	if draw <= target {
		return done(nil)
	}
	mining := func(e *entry) bool { return e.w.Spec.Kind == KindMining }
	paid := func(e *entry) bool { return e.w.Spec.Kind.Paid() }
	// lower fits the limits of sel's GPUs to the target, again from the
	// measured draw while that brings it closer.
	lower := func(action string, sel func(*entry) bool) bool {
		for try := 0; try < 3 && draw > target; try++ {
			ids := r.fitLimits(ctx, sel, target)
			if len(ids) == 0 {
				break
			}
			if step(action, ids) {
				return true
			}
		}
		return false
	}
	if lower("lower mining power limits", mining) {
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
	if lower("lower training power limits", paid) {
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

// fitLimits sets the power limits of the GPUs held by the selected running
// workloads (nil: every GPU whose limit the cap lowered) so that the
// node's draw lands just under target, the others' draw taken as
// measured: lowered in proportion to what each can give (its draw above
// its minimum limit), or raised towards the default limit in proportion to
// what each lacks. It returns the workloads whose limits changed.
func (r *runner) fitLimits(ctx context.Context, sel func(*entry) bool, target float64) []string {
	m := r.m
	type gpuFit struct {
		i                      int
		curW, limW, minW, defW float64
		id                     string
	}
	var fits []gpuFit
	fixed := 0.0
	m.mu.Lock()
	for i, sl := range m.slots {
		e := m.live[sl.holder]
		lim := sl.dev.PowerLimit
		ok := e != nil && e.w.State == StateRunning && lim.Valid && lim.Value.MinW < lim.Value.MaxW && sl.hung == ""
		if ok && sel != nil {
			ok = sel(e)
		} else if ok {
			ok = sl.lowered
		}
		if !ok {
			fixed += sl.lastW
			continue
		}
		cur := sl.limitW
		if cur == 0 {
			cur = lim.Value.CurrentW
		}
		fits = append(fits, gpuFit{i: i, curW: sl.lastW, limW: cur, minW: lim.Value.MinW, defW: lim.Value.DefaultW, id: e.w.Spec.ID})
	}
	m.mu.Unlock()
	if len(fits) == 0 {
		return nil
	}
	budget := target*(1-capMargin) - fixed
	sumCur, sumMin, lack := 0.0, 0.0, 0.0
	for _, f := range fits {
		sumCur += f.curW
		sumMin += f.minW
		lack += max(0, f.defW-f.limW)
	}
	want := make([]float64, len(fits))
	for k, f := range fits {
		switch {
		case budget >= sumCur && lack > 0: // room: raise the lowered ones
			want[k] = math.Min(f.defW, f.limW+(budget-sumCur)*max(0, f.defW-f.limW)/lack)
		case budget >= sumCur:
			want[k] = f.limW
		case budget <= sumMin:
			want[k] = f.minW
		default:
			share := (sumCur - budget) / (sumCur - sumMin)
			want[k] = f.curW - share*max(0, f.curW-f.minW)
		}
		want[k] = math.Max(f.minW, math.Min(f.defW, want[k]))
	}
	ids := map[string]bool{}
	for k, f := range fits {
		if math.Abs(want[k]-f.limW) < 1 {
			continue
		}
		uuid := m.slots[f.i].dev.UUID
		err := m.device(ctx, f.i, "set power limit", func(ctx context.Context) error {
			return m.gpus.SetPowerLimit(ctx, uuid, math.Round(want[k]))
		})
		if err != nil {
			m.log.Warn("set power limit", "gpu", uuid, "watts", want[k], "err", err)
			continue
		}
		m.mu.Lock()
		sl := m.slots[f.i]
		sl.limitW = math.Round(want[k])
		sl.lowered = sl.limitW < f.defW
		m.mu.Unlock()
		ids[f.id] = true
	}
	return sortedKeys(ids)
}

// stopAll stops the selected running workloads (they count as preempted
// by the power cap) and waits until they have ended.
func (r *runner) stopAll(ctx context.Context, sel func(*entry) bool) []string {
	m := r.m
	var ids []string
	m.mu.Lock()
	for _, e := range m.live {
		if e.w.State == StateRunning && !e.stopping && sel(e) {
			r.preempt(ctx, e, "power cap")
			if e.w.State == StatePreempting {
				ids = append(ids, e.w.Spec.ID)
			}
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
			if e := m.live[id]; e != nil && (e.w.State == StateRunning || e.w.State == StatePreempting) {
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
		if e := m.live[sl.holder]; e != nil && e.w.State == StateRunning && sel(e) {
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
	for _, e := range m.live {
		if e.w.State == StateRunning && sel(e) {
			es = append(es, e)
		}
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].w.Spec.Priority != es[j].w.Spec.Priority {
			return es[i].w.Spec.Priority < es[j].w.Spec.Priority
		}
		if !es[i].w.StartedAt.Equal(es[j].w.StartedAt) {
			return es[i].w.StartedAt.After(es[j].w.StartedAt)
		}
		return es[i].w.Spec.ID < es[j].w.Spec.ID
	})
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.w.Spec.ID
	}
	return ids
}

// restoreLimits resets the limits the cap lowered.
func (r *runner) restoreLimits(ctx context.Context) error {
	m := r.m
	var slots []int
	m.mu.Lock()
	for i, sl := range m.slots {
		if sl.lowered {
			slots = append(slots, i)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, i := range slots {
		uuid := m.slots[i].dev.UUID
		err := m.device(ctx, i, "reset power limit", func(ctx context.Context) error { return m.gpus.ResetPowerLimit(ctx, uuid) })
		if err != nil && !errors.Is(err, gpu.ErrUnsupported) {
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		m.slots[i].lowered, m.slots[i].limitW = false, 0
		m.mu.Unlock()
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
