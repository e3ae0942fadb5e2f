package workload_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

var (
	chaosSteps = flag.Int("chaos.steps", 300, "steps of the chaos tests")
	chaosSeed  = flag.Uint64("chaos.seed", 0, "seed of the chaos tests; 0 picks one from the clock")
)

// TestChaos drives a Manager on a simulated rig with the process runtime
// through a seeded random walk of submits, cancels, cordons, drains,
// curtailments, faults (hung GPUs, Xid 79, 48 and 13, a broken event
// stream, runtime create, start and wait errors, store write errors) and
// restarts on the same store, and checks the invariants after every step.
// Run more steps with -chaos.steps, one walk again with -chaos.seed.
func TestChaos(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	c := newChaos(t, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos failed with seed %d: rerun with go test ./workload -run TestChaos -chaos.seed=%d -chaos.steps=%d", seed, seed, *chaosSteps)
		}
	})
	before := goroutines()
	c.boot()
	for c.step = 1; c.step <= *chaosSteps; c.step++ {
		what := c.act()
		c.history = append(c.history, fmt.Sprintf("%d %s", c.step, what))
		c.repair(false)
		c.check(what)
		if t.Failed() {
			t.Logf("last steps:\n%s", strings.Join(c.history[max(0, len(c.history)-25):], "\n"))
			return
		}
	}
	c.finish()
	c.report()
	noLeak(t, before)
}

type chaos struct {
	t     *testing.T
	seed  uint64
	rnd   *rand.Rand
	clk   *sim.ManualClock
	rig   *sim.Rig
	gm    *gpu.Manager
	inner *process.Runtime
	rt    *faultRuntime
	path  string
	db    *bolt.Store
	store *faultStore
	m     *workload.Manager
	stop  func()
	devs  []gpu.Device
	dir   string

	step    int
	next    int
	acked   map[string]bool // Submit acknowledged
	cancels map[string]bool // Cancel acknowledged
	faults  map[string]int  // injected, by kind
	actions map[string]int  // done, by kind
	repairs []repair        // faults to undo at a later step
	history []string
}

// repair undoes a fault at its step.
type repair struct {
	at   int
	what string
	undo func()
}

func newChaos(t *testing.T, seed uint64) *chaos {
	p, err := sim.PresetByName(sim.PresetA40)
	require.NoError(t, err)
	clk := sim.NewClock(start)
	rig, err := sim.New(p, sim.WithClock(clk))
	require.NoError(t, err)
	gm, err := gpu.New(context.Background(), rig, gpu.WithClock(clk), gpu.WithEventRetry(100*time.Millisecond))
	require.NoError(t, err)
	inner, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	return &chaos{
		t: t, seed: seed, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), clk: clk, rig: rig, gm: gm,
		inner: inner, rt: newFaultRuntime(inner), path: filepath.Join(t.TempDir(), "node.db"), devs: gm.Devices(), dir: t.TempDir(),
		acked: map[string]bool{}, cancels: map[string]bool{}, faults: map[string]int{}, actions: map[string]int{},
	}
}

// boot opens the store and starts a manager on it, as a restarted agent.
func (c *chaos) boot() {
	var err error
	c.db, err = bolt.Open(c.path)
	require.NoError(c.t, err)
	if c.store == nil {
		c.store = &faultStore{}
	}
	c.store.fullStore = c.db
	c.m, err = workload.New(c.gm, c.rt,
		workload.WithStore(c.store), workload.WithClock(c.clk), workload.WithLoad(c.rig.SetGPULoad),
		workload.WithFiller(minerFiller()), workload.WithTick(20*time.Millisecond), workload.WithPowerSettle(0),
		workload.WithHygieneTimeout(500*time.Millisecond), workload.WithDeviceTimeout(200*time.Millisecond),
		workload.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond), workload.WithStoreTimeout(time.Second),
		workload.WithRuntimeTimeout(10*time.Second))
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.m.Run(ctx) }()
	c.stop = func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			c.t.Errorf("Run: %v", err)
		}
		require.NoError(c.t, c.m.Close())
		require.NoError(c.t, c.db.Close())
	}
}

func (c *chaos) pick(weights map[string]int) string {
	keys := make([]string, 0, len(weights))
	total := 0
	for k, w := range weights {
		keys = append(keys, k)
		total += w
	}
	sort.Strings(keys) // the same seed, the same walk
	n := c.rnd.IntN(total)
	for _, k := range keys {
		if n -= weights[k]; n < 0 {
			return k
		}
	}
	return keys[0]
}

// act does one random step and says what it did.
func (c *chaos) act() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kind := c.pick(map[string]int{"submit": 30, "cancel": 10, "cordon": 5, "drain": 2, "curtail": 5, "fault": 15, "restart": 4, "pause": 29})
	c.actions[kind]++
	switch kind {
	case "submit":
		return c.submit(ctx)
	case "cancel":
		ids := c.ids()
		if len(ids) == 0 {
			return "cancel: nothing to cancel"
		}
		id := ids[c.rnd.IntN(len(ids))]
		err := c.m.Cancel(ctx, id)
		if err == nil {
			c.cancels[id] = true
		}
		return fmt.Sprintf("cancel %s: %v", id, err)
	case "cordon":
		g := c.rnd.IntN(len(c.devs))
		for _, x := range c.m.GPUs() {
			if x.Device.UUID == c.devs[g].UUID && x.Cordoned != "" && c.m.Status().Cordoned == "" {
				return fmt.Sprintf("uncordon GPU %d: %v", g, c.m.Uncordon(ctx, x.Device.UUID))
			}
		}
		return fmt.Sprintf("cordon GPU %d: %v", g, c.m.Cordon(ctx, c.devs[g].UUID, "chaos"))
	case "drain":
		g := c.rnd.IntN(len(c.devs))
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err := c.m.Drain(dctx, c.devs[g].UUID)
		c.repairs = append(c.repairs, repair{c.step + 3, "uncordon drained GPU", func() { _ = c.m.Uncordon(context.Background(), c.devs[g].UUID) }})
		return fmt.Sprintf("drain GPU %d: %v", g, err)
	case "curtail":
		w := 0.0
		if c.rnd.IntN(3) > 0 {
			w = float64(400 + c.rnd.IntN(2000))
		}
		rep, err := c.m.Curtail(ctx, w)
		return fmt.Sprintf("curtail to %.0f W: met %v, %.0f -> %.0f W, %d steps: %v", w, rep.Met, rep.StartW, rep.FinalW, len(rep.Steps), err)
	case "fault":
		return c.fault()
	case "restart":
		c.stop()
		c.boot()
		return "restart the manager on the same store"
	}
	time.Sleep(time.Duration(20+c.rnd.IntN(150)) * time.Millisecond)
	return "pause"
}

// ids lists the acknowledged workloads, sorted.
func (c *chaos) ids() []string {
	out := make([]string, 0, len(c.acked))
	for id := range c.acked {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (c *chaos) submit(ctx context.Context) string {
	c.next++
	id := fmt.Sprintf("job-%d", c.next)
	var s workload.Spec
	if c.rnd.IntN(2) == 0 {
		s = shJob(id, fmt.Sprintf("sleep 0.%d; exit %d", 1+c.rnd.IntN(9), c.rnd.IntN(2)))
	} else {
		s = trainer(id, 1+c.rnd.IntN(3), c.rnd.IntN(5), filepath.Join(c.dir, id))
		s.Command[slices.Index(s.Command, "-steps")+1] = fmt.Sprint(100 + c.rnd.IntN(400)) // 0.5 to 2.5 s of work
		s.Preemptible = c.rnd.IntN(3) > 0
		s.StopGrace = time.Second
	}
	if c.rnd.IntN(5) == 0 {
		s.GPUs = workload.GPURequest{UUIDs: []string{c.devs[c.rnd.IntN(len(c.devs))].UUID}, IgnoreReadiness: true}
	}
	if c.rnd.IntN(6) == 0 {
		// A Kubernetes claim: pinned, held until cancelled, run by kubelet.
		s = workload.Spec{ID: id, Kind: workload.KindTraining, Tenant: "claims", External: true,
			GPUs: workload.GPURequest{UUIDs: []string{c.devs[c.rnd.IntN(len(c.devs))].UUID}, IgnoreReadiness: true}}
	}
	_, err := c.m.Submit(ctx, s)
	if err == nil {
		c.acked[id] = true
	}
	return fmt.Sprintf("submit %s (%s, %d GPUs): %v", id, s.Kind, s.GPUs.Count+len(s.GPUs.UUIDs), err)
}

// fault injects one fault and plans its repair a few steps later.
func (c *chaos) fault() string {
	kind := c.pick(map[string]int{"hang": 3, "xid79": 2, "xid48": 2, "xid13": 2, "events": 2, "create": 2, "start": 2, "wait": 2, "store": 3})
	c.faults[kind]++
	later := c.step + 1 + c.rnd.IntN(6)
	g := c.rnd.IntN(len(c.devs))
	uuid := c.devs[g].UUID
	switch kind {
	case "hang":
		require.NoError(c.t, c.rig.Hang(g))
		c.repairs = append(c.repairs, repair{later, "unhang", func() { _ = c.rig.Unhang(g) }})
		return fmt.Sprintf("fault: GPU %d hangs", g)
	case "xid79", "xid48":
		xid := map[string]int{"xid79": 79, "xid48": 48}[kind]
		require.NoError(c.t, c.rig.InjectXID(g, xid))
		c.repairs = append(c.repairs, repair{later, "reset GPU", func() {
			_ = c.rig.Reset(g)
			_ = c.gm.ResetHealth(uuid)
		}})
		return fmt.Sprintf("fault: GPU %d reports xid %d", g, xid)
	case "xid13":
		require.NoError(c.t, c.rig.InjectXID(g, 13))
		return fmt.Sprintf("fault: GPU %d reports xid 13 (the application's)", g)
	case "events":
		c.rig.BreakEvents(nil)
		c.repairs = append(c.repairs, repair{later, "repair events", c.rig.RepairEvents})
		return "fault: the health event stream breaks"
	case "store":
		c.store.breakWrites(errors.New("injected: input/output error"))
		c.repairs = append(c.repairs, repair{later, "heal store", c.store.heal})
		return "fault: store writes fail"
	}
	// A runtime call fails the next few times.
	times := 1 + c.rnd.IntN(3)
	var left atomic.Int32
	left.Store(int32(times))
	c.rt.set(kind, func(context.Context, isolation.Ref) error {
		if left.Add(-1) >= 0 {
			return fmt.Errorf("%w: injected %s failure", isolation.ErrUnavailable, kind)
		}
		return nil
	})
	c.repairs = append(c.repairs, repair{later, "runtime " + kind + " works", func() { c.rt.set(kind, nil) }})
	return fmt.Sprintf("fault: runtime %s fails %d times", kind, times)
}

// repair undoes the faults whose time has come (all with force).
func (c *chaos) repair(force bool) {
	keep := c.repairs[:0]
	for _, r := range c.repairs {
		if force || r.at <= c.step {
			r.undo()
			continue
		}
		keep = append(keep, r)
	}
	c.repairs = keep
}

// faulty reports whether a fault that holds the node's state back (the
// store, the runtime) is active: the invariants that need the node to
// catch up wait until it is repaired.
func (c *chaos) faulty() bool {
	for _, r := range c.repairs {
		if r.what == "heal store" || strings.HasPrefix(r.what, "runtime ") {
			return true
		}
	}
	return false
}

// check verifies the invariants after a step.
func (c *chaos) check(what string) {
	t := c.t
	ctx := context.Background()
	// No GPU ever has two holders: no two running containers share one,
	// and no two live records claim one.
	infos, err := c.inner.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	held := map[string]string{}
	for _, in := range infos {
		if in.State != isolation.StateRunning {
			continue
		}
		for _, u := range in.GPUs {
			if other, ok := held[u]; ok {
				t.Errorf("step %d (%s): GPU %s runs containers %s and %s", c.step, what, u, other, in.Ref)
			}
			held[u] = in.Ref.String()
		}
	}
	recs := c.m.List(workload.Filter{})
	holding := map[string]string{}
	reserved := map[string]string{}
	for _, w := range recs {
		claims := holding
		switch w.State {
		case workload.StateRunning, workload.StatePreempting, workload.StateStopping:
		case workload.StateScheduled:
			claims = reserved
		default:
			continue
		}
		for _, u := range w.GPUs {
			if other, ok := claims[u]; ok {
				t.Errorf("step %d (%s): GPU %s claimed by %s and %s", c.step, what, u, other, w.Spec.ID)
			}
			claims[u] = w.Spec.ID
		}
	}
	// Every acknowledged Submit and Cancel holds, across restarts.
	for id := range c.acked {
		w, err := c.m.Get(id)
		if err != nil {
			t.Errorf("step %d (%s): acknowledged %s lost: %v", c.step, what, id, err)
			continue
		}
		if c.cancels[id] && !w.State.Final() && w.Outcome != workload.StateCancelled {
			t.Errorf("step %d (%s): %s was cancelled but is %s with no cancellation pending", c.step, what, id, w.State)
		}
	}
	if c.faulty() {
		return
	}
	// With the store and the runtime working, what runs and what the
	// records say agree once the manager has caught up.
	var why string
	ok := waitTrue(10*time.Second, func() bool {
		why = c.agree(ctx)
		return why == ""
	})
	if !ok {
		t.Errorf("step %d (%s): records and containers disagree: %s", c.step, what, why)
	}
}

// agree says how the running containers and the live records disagree
// (see agreement), or "" when they agree.
func (c *chaos) agree(ctx context.Context) string {
	infos, err := c.inner.List(ctx, isolation.Filter{})
	if err != nil {
		return err.Error()
	}
	return agreement(infos, c.m.List(workload.Filter{}))
}

func waitTrue(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish repairs every fault, lifts every restriction, cancels everything
// and checks that every workload reaches a final state, then stops.
func (c *chaos) finish() {
	t := c.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.repair(true)
	for _, d := range c.devs {
		_ = c.rig.Reset(d.Index)
		_ = c.gm.ResetHealth(d.UUID)
		require.NoError(t, c.m.Uncordon(ctx, d.UUID))
	}
	_, err := c.m.Curtail(ctx, 0)
	require.NoError(t, err)
	// No new miner may fill what the cancellations free.
	require.NoError(t, c.m.CordonNode(ctx, "chaos is over"))
	var live []string
	ok := waitTrue(time.Minute, func() bool {
		live = live[:0]
		for _, w := range c.m.List(workload.Filter{}) {
			if !w.State.Final() {
				live = append(live, w.Spec.ID+" "+string(w.State))
				_ = c.m.Cancel(ctx, w.Spec.ID)
			}
		}
		return len(live) == 0
	})
	require.True(t, ok, "every workload reaches a final state; still live: %v", live)
	c.stop()
	infos, err := c.inner.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	for _, in := range infos {
		require.NotEqual(t, isolation.StateRunning, in.State, "%s runs after everything ended", in.Ref)
	}
	require.NoError(t, c.inner.Close())
	require.NoError(t, c.gm.Close())
}

func (c *chaos) report() {
	final := map[workload.State]int{}
	db, err := bolt.Open(c.path)
	require.NoError(c.t, err)
	recs, err := db.List(context.Background())
	require.NoError(c.t, err)
	require.NoError(c.t, db.Close())
	for _, w := range recs {
		final[w.State]++
	}
	c.t.Logf("chaos seed %d: %d steps %v; faults injected %v (%d); acknowledged submits %d, cancels %d; records by state %v",
		c.seed, *chaosSteps, c.actions, c.faults, sum(c.faults), len(c.acked), len(c.cancels), final)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
