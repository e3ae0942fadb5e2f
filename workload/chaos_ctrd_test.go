package workload_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/syncbuf"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

var ctrdSteps = flag.Int("chaos.ctrd.steps", 40, "steps of the chaos test on containerd")

// The agent: the chaos test on containerd runs the manager in a process
// of its own (this test binary again), so that it can kill it with
// SIGKILL as a node's agent dies. The agent takes one JSON command per
// line on stdin and answers each with one JSON line on stdout.
const agentEnv = "GPUFARM_CHAOS_AGENT" // JSON agentConfig

type agentConfig struct {
	Address, CDIDir, LogDir, Store, Preset string
	GPUs                                   int    // the first GPUs of the preset
	Mining, Customer                       string // tenants
	Network                                containerd.NetworkConfig
}

type agentCmd struct {
	Op     string // submit, cancel, cordon, uncordon, cordon-node, curtail, list, fault, quit
	Spec   *workload.Spec
	ID     string
	GPU    int
	Watts  float64
	Fault  string // hang, unhang, xid, reset, break-events, repair-events, break-store, heal-store, fail-create, fail-start, fail-wait
	XID    int
	Times  int
	Reason string
}

type agentReply struct {
	Err       string
	Workloads []workload.Workload
	Report    *workload.CurtailReport
	Leaked    int // goroutines left after quit
}

// runAgent is the agent's main; it returns the exit code.
func runAgent() int {
	var cfg agentConfig
	if err := json.Unmarshal([]byte(os.Getenv(agentEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 2
	}
	before := goroutines()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "agent:", err); return 3 }
	p, err := sim.PresetByName(cfg.Preset)
	if err != nil {
		return fail(err)
	}
	p.Cards = p.Cards[:cfg.GPUs]
	rig, err := sim.New(p)
	if err != nil {
		return fail(err)
	}
	gm, err := gpu.New(context.Background(), rig, gpu.WithEventRetry(100*time.Millisecond))
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	// containerd may be restarting as the agent starts: wait for it, as a
	// supervisor restarting the agent would.
	var inner *containerd.Runtime
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		inner, err = containerd.New(ctx, containerd.WithAddress(cfg.Address), containerd.WithLogDir(cfg.LogDir), containerd.WithTenancy(tenancyOf(cfg)),
			containerd.WithCDISpecDirs(cfg.CDIDir), containerd.WithLogger(log.With("component", "isolation")), containerd.WithNetwork(cfg.Network))
		if err == nil || !errors.Is(err, isolation.ErrUnavailable) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fail(err)
	}
	db, err := bolt.Open(cfg.Store, bolt.WithTimeout(10*time.Second))
	if err != nil {
		return fail(err)
	}
	rt := newFaultRuntime(inner)
	store := &faultStore{fullStore: db}
	m, err := workload.New(gm, rt, workload.WithStore(store), workload.WithLoad(rig.SetGPULoad), workload.WithTenancy(tenancyOf(cfg)),
		workload.WithFiller(ctrMinerFillerOf(cfg.Mining)), workload.WithTick(50*time.Millisecond), workload.WithPowerSettle(0),
		workload.WithHygieneTimeout(2*time.Second), workload.WithDeviceTimeout(300*time.Millisecond),
		workload.WithRetryBackoff(50*time.Millisecond, 500*time.Millisecond), workload.WithStoreTimeout(2*time.Second),
		workload.WithRuntimeTimeout(20*time.Second), workload.WithLogger(log.With("component", "workload")))
	if err != nil {
		return fail(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	devs := gm.Devices()
	for in.Scan() {
		var c agentCmd
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			return fail(err)
		}
		var rep agentReply
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := error(nil)
		switch c.Op {
		case "submit":
			_, err = m.Submit(cctx, *c.Spec)
		case "cancel":
			err = m.Cancel(cctx, c.ID)
		case "cordon":
			err = m.Cordon(cctx, devs[c.GPU].UUID, c.Reason)
		case "uncordon":
			err = m.Uncordon(cctx, devs[c.GPU].UUID)
		case "cordon-node":
			err = m.CordonNode(cctx, c.Reason)
		case "curtail":
			var r workload.CurtailReport
			r, err = m.Curtail(cctx, c.Watts)
			rep.Report = &r
		case "list":
			rep.Workloads = m.List(workload.Filter{})
		case "fault":
			err = agentFault(c, rig, gm, rt, store, devs)
		case "quit":
			cancel()
			stop()
			if err := <-done; !errors.Is(err, context.Canceled) {
				return fail(fmt.Errorf("run: %w", err))
			}
			cerr := errors.Join(m.Close(), db.Close(), inner.Close(), gm.Close())
			time.Sleep(200 * time.Millisecond)
			deadline := time.Now().Add(5 * time.Second)
			for goroutines() > before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			rep.Leaked = max(0, goroutines()-before)
			if cerr != nil {
				rep.Err = cerr.Error()
			}
			_ = out.Encode(rep)
			return 0
		default:
			err = fmt.Errorf("unknown op %q", c.Op)
		}
		cancel()
		if err != nil {
			rep.Err = err.Error()
		}
		if err := out.Encode(rep); err != nil {
			return fail(err)
		}
	}
	return fail(errors.New("stdin closed without quit"))
}

// tenancyOf is the agent's tenancy: the test's tenant names, and its
// checkpoint folders under the temp dir.
func tenancyOf(cfg agentConfig) isolation.Tenancy {
	t := isolation.DefaultTenancy(cfg.Mining)
	t.Default.MountRoots, t.Default.WritableMounts = []string{os.TempDir()}, true
	return t
}

func agentFault(c agentCmd, rig *sim.Rig, gm *gpu.Manager, rt *faultRuntime, store *faultStore, devs []gpu.Device) error {
	switch c.Fault {
	case "hang":
		return rig.Hang(c.GPU)
	case "unhang":
		return rig.Unhang(c.GPU)
	case "xid":
		return rig.InjectXID(c.GPU, c.XID)
	case "reset":
		if err := rig.Reset(c.GPU); err != nil {
			return err
		}
		return gm.ResetHealth(devs[c.GPU].UUID)
	case "break-events":
		rig.BreakEvents(nil)
	case "repair-events":
		rig.RepairEvents()
	case "break-store":
		store.breakWrites(errors.New("injected: input/output error"))
	case "heal-store":
		store.heal()
	case "fail-create", "fail-start", "fail-wait":
		var left atomic.Int32
		left.Store(int32(c.Times))
		rt.set(strings.TrimPrefix(c.Fault, "fail-"), func(context.Context, isolation.Ref) error {
			if left.Add(-1) >= 0 {
				return fmt.Errorf("%w: injected failure", isolation.ErrUnavailable)
			}
			return nil
		})
	default:
		return fmt.Errorf("unknown fault %q", c.Fault)
	}
	return nil
}

// agent is the test's handle on an agent process.
type agent struct {
	cfg  agentConfig
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	logs *syncbuf.Buffer
}

func startAgent(t *testing.T, cfg agentConfig, logs *syncbuf.Buffer) *agent {
	t.Helper()
	b, err := json.Marshal(cfg)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), agentEnv+"="+string(b))
	cmd.Stderr = logs
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return &agent{cfg: cfg, cmd: cmd, in: in, out: json.NewDecoder(out), logs: logs}
}

// do sends a command and waits for its answer.
func (a *agent) do(c agentCmd) (agentReply, error) {
	b, _ := json.Marshal(c)
	if _, err := a.in.Write(append(b, '\n')); err != nil {
		return agentReply{}, err
	}
	var rep agentReply
	if err := a.out.Decode(&rep); err != nil {
		return agentReply{}, fmt.Errorf("agent: no answer to %s: %w", c.Op, err)
	}
	if rep.Err != "" {
		return rep, errors.New(rep.Err)
	}
	return rep, nil
}

// kill ends the agent with SIGKILL, as the OOM killer or a power cut would.
func (a *agent) kill() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_ = a.cmd.Wait()
}

// TestChaosContainerd is TestChaos on real containerd, shorter: the
// manager runs in an agent process, which the walk also kills with
// SIGKILL and starts again; containerd itself restarts once.
func TestChaosContainerd(t *testing.T) {
	containerdtest.Require(t)
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos failed with seed %d: rerun with go test ./workload -run TestChaosContainerd -chaos.seed=%d -chaos.ctrd.steps=%d", seed, seed, *ctrdSteps)
		}
	})
	minerTar, trainerTar := buildImages(t)
	logDir, cdiDir, dir := filepath.Join(t.TempDir(), "logs"), filepath.Join(t.TempDir(), "cdi"), t.TempDir()
	d := containerdtest.Start(t)
	const gpus = 4
	p, err := sim.PresetByName(sim.PresetA40)
	require.NoError(t, err)
	p.Cards = p.Cards[:gpus]
	rig, err := sim.New(p)
	require.NoError(t, err)
	devs, err := rig.Devices(context.Background())
	require.NoError(t, err)
	require.NoError(t, rig.Close())
	simCDI, err := containerd.WriteSimulatedCDI(cdiDir, devs)
	require.NoError(t, err)
	ctx := ctxFor(t)
	// The test's own view of containerd, to check what the agent did.
	tn := d.Network()
	network := containerd.NetworkConfig{Subnet: tn.Subnet, BridgePrefix: tn.BridgePrefix, PluginDirs: containerd.DefaultCNIPluginDirs(), StateDir: tn.StateDir}
	view, err := containerd.New(ctx, containerd.WithAddress(d.Address), containerd.WithLogDir(logDir), containerd.WithCDISpecDirs(simCDI.SpecDir),
		containerd.WithNetwork(network))
	require.NoError(t, err)
	defer view.Close()
	for tenant, tar := range map[string]string{miningTenant: minerTar, customerTenant: trainerTar} {
		f, err := os.Open(tar)
		require.NoError(t, err)
		_, err = view.Import(ctx, tenant, f)
		_ = f.Close()
		require.NoError(t, err)
	}
	// The agent builds the same 4-GPU rig: same preset, same UUIDs.
	cfg := agentConfig{Address: d.Address, CDIDir: simCDI.SpecDir, LogDir: logDir, Store: filepath.Join(dir, "node.db"),
		Preset: sim.PresetA40, GPUs: gpus, Mining: miningTenant, Customer: customerTenant, Network: network}
	logs := &syncbuf.Buffer{}
	a := startAgent(t, cfg, logs)
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()

	rnd := rand.New(rand.NewPCG(seed, seed+1))
	acked, cancels := map[string]bool{}, map[string]bool{}
	counts, faults := map[string]int{}, map[string]int{}
	restartAt := 1 + rnd.IntN(*ctrdSteps)
	active := map[string]int{} // fault -> step to repair
	var history []string
	next := 0
	for step := 1; step <= *ctrdSteps; step++ {
		kind := pickKey(rnd, map[string]int{"submit": 30, "cancel": 10, "cordon": 5, "curtail": 5, "fault": 15, "kill": 6, "pause": 29})
		if step == restartAt {
			kind = "restart-containerd"
		}
		counts[kind]++
		what := kind
		switch kind {
		case "submit":
			next++
			id := fmt.Sprintf("job-%d", next)
			s := ctrTrainer(id, 1+rnd.IntN(2), ckptDir(t))
			s.Command[slices.Index(s.Command, "-steps")+1] = fmt.Sprint(100 + rnd.IntN(300))
			s.StopGrace, s.Preemptible, s.Priority = 2*time.Second, rnd.IntN(3) > 0, rnd.IntN(4)
			if rnd.IntN(2) == 0 {
				s.Network = isolation.NetworkBridge
			}
			_, err := a.do(agentCmd{Op: "submit", Spec: &s})
			if err == nil {
				acked[id] = true
			}
			what = fmt.Sprintf("submit %s: %v", id, err)
		case "cancel":
			ids := sortedIDs(acked)
			if len(ids) > 0 {
				id := ids[rnd.IntN(len(ids))]
				if _, err := a.do(agentCmd{Op: "cancel", ID: id}); err == nil {
					cancels[id] = true
				}
				what = "cancel " + id
			}
		case "cordon":
			g := rnd.IntN(gpus)
			_, err := a.do(agentCmd{Op: "cordon", GPU: g, Reason: "chaos"})
			active[fmt.Sprintf("uncordon %d", g)] = step + 2
			what = fmt.Sprintf("cordon GPU %d: %v", g, err)
		case "curtail":
			w := 0.0
			if rnd.IntN(2) == 0 {
				w = float64(300 + rnd.IntN(900))
			}
			rep, err := a.do(agentCmd{Op: "curtail", Watts: w})
			what = fmt.Sprintf("curtail %.0f W: %v", w, err)
			if rep.Report != nil {
				what += fmt.Sprintf(" (%.0f -> %.0f W)", rep.Report.StartW, rep.Report.FinalW)
			}
		case "fault":
			f := pickKey(rnd, map[string]int{"hang": 2, "xid": 3, "break-events": 2, "fail-create": 2, "fail-start": 2, "fail-wait": 2, "break-store": 2})
			faults[f]++
			c := agentCmd{Op: "fault", Fault: f, GPU: rnd.IntN(gpus), Times: 1 + rnd.IntN(2), XID: []int{79, 48, 13}[rnd.IntN(3)]}
			_, err := a.do(c)
			switch f {
			case "hang":
				active[fmt.Sprintf("unhang %d", c.GPU)] = step + 2
			case "xid":
				active[fmt.Sprintf("reset %d", c.GPU)] = step + 2
			case "break-events":
				active["repair-events"] = step + 2
			case "break-store":
				active["heal-store"] = step + 1
			}
			what = fmt.Sprintf("fault %s GPU %d: %v", f, c.GPU, err)
		case "kill":
			a.kill()
			a = startAgent(t, cfg, logs)
			clear(active) // a new agent: a new rig and a working store
			what = "SIGKILL the agent and start it again"
		case "restart-containerd":
			require.NoError(t, d.Restart(ctx))
			what = "restart containerd"
		case "pause":
			time.Sleep(time.Duration(50+rnd.IntN(200)) * time.Millisecond)
		}
		history = append(history, fmt.Sprintf("%d %s", step, what))
		for k, at := range active {
			if at > step {
				continue
			}
			delete(active, k)
			var g int
			var op string
			_, _ = fmt.Sscanf(k, "%s %d", &op, &g)
			switch op {
			case "uncordon":
				_, _ = a.do(agentCmd{Op: "uncordon", GPU: g})
			case "unhang", "reset":
				_, _ = a.do(agentCmd{Op: "fault", Fault: op, GPU: g})
			default:
				_, _ = a.do(agentCmd{Op: "fault", Fault: k})
			}
		}
		checkCtrd(t, step, what, a, view, acked, cancels, active["heal-store"] == 0)
		if t.Failed() {
			t.Logf("last steps:\n%s", strings.Join(history[max(0, len(history)-20):], "\n"))
			return
		}
	}
	// The end: repair, stop new work, cancel everything, and quit.
	for g := range gpus {
		_, _ = a.do(agentCmd{Op: "fault", Fault: "unhang", GPU: g})
		_, _ = a.do(agentCmd{Op: "fault", Fault: "reset", GPU: g})
		_, _ = a.do(agentCmd{Op: "uncordon", GPU: g})
	}
	for _, f := range []string{"repair-events", "heal-store"} {
		_, _ = a.do(agentCmd{Op: "fault", Fault: f})
	}
	_, err = a.do(agentCmd{Op: "curtail", Watts: 0})
	require.NoError(t, err)
	_, err = a.do(agentCmd{Op: "cordon-node", Reason: "chaos is over"})
	require.NoError(t, err)
	var live []string
	bridged := map[string]bool{} // workloads that ran on the tenant network
	require.True(t, waitTrue(2*time.Minute, func() bool {
		rep, err := a.do(agentCmd{Op: "list"})
		require.NoError(t, err)
		live = live[:0]
		for _, w := range rep.Workloads {
			if w.Address.IsValid() {
				bridged[w.Spec.ID] = true
			}
			if !w.State.Final() {
				live = append(live, w.Spec.ID+" "+string(w.State))
				_, _ = a.do(agentCmd{Op: "cancel", ID: w.Spec.ID})
			}
		}
		return len(live) == 0
	}), "every workload reaches a final state; still live: %v", live)
	rep, err := a.do(agentCmd{Op: "quit"})
	require.NoError(t, err)
	require.Zero(t, rep.Leaked, "goroutines outlive Run and Close in the agent")
	_ = a.cmd.Wait()
	infos, err := view.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	for _, in := range infos {
		require.NotEqual(t, isolation.StateRunning, in.State, "%s runs after everything ended", in.Ref)
	}
	attached, _ := filepath.Glob(filepath.Join(network.StateDir, "netns", "*", "*"))
	infos, err = view.List(ctx, isolation.Filter{})
	require.NoError(t, err)
	assert.Empty(t, networkProblems(attached, infos), "a network namespace lives only as long as its container")
	t.Logf("chaos on containerd, seed %d: %d steps %v; faults %v; acknowledged submits %d, cancels %d; %d ran on the tenant network",
		seed, *ctrdSteps, counts, faults, len(acked), len(cancels), len(bridged))
}

// checkCtrd checks the invariants of the containerd chaos test after a
// step: no GPU runs two containers; every acknowledged Submit and Cancel
// survives; with the store working, the records and the containers agree
// once the agent has caught up.
func checkCtrd(t *testing.T, step int, what string, a *agent, view *containerd.Runtime, acked, cancels map[string]bool, storeOK bool) {
	t.Helper()
	// Each List has its own deadline: after a restart of containerd the
	// first calls wait for the client to reconnect.
	list := func() ([]isolation.Info, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return view.List(ctx, isolation.Filter{})
	}
	// A List walks tenant by tenant, so one can see a container that has
	// just ended next to its successor: a conflict counts when a second
	// List, after the first, still shows it.
	var shared []string
	for try := 0; try < 2; try++ {
		infos, err := list()
		if err != nil {
			t.Errorf("step %d (%s): list containers: %v", step, what, err)
			return
		}
		again := sharedGPUs(infos)
		if try > 0 {
			again = slices.DeleteFunc(again, func(c string) bool { return !slices.Contains(shared, c) })
		}
		if shared = again; len(shared) == 0 {
			break
		}
	}
	for _, c := range shared {
		t.Errorf("step %d (%s): %s", step, what, c)
	}
	rep, err := a.do(agentCmd{Op: "list"})
	if err != nil {
		t.Errorf("step %d (%s): %v", step, what, err)
		return
	}
	recs := map[string]workload.Workload{}
	for _, w := range rep.Workloads {
		recs[w.Spec.ID] = w
	}
	for id := range acked {
		w, ok := recs[id]
		switch {
		case !ok:
			t.Errorf("step %d (%s): acknowledged %s lost", step, what, id)
		case cancels[id] && !w.State.Final() && w.Outcome != workload.StateCancelled:
			t.Errorf("step %d (%s): %s was cancelled but is %s", step, what, id, w.State)
		}
	}
	if !storeOK {
		return
	}
	var why string
	if !waitTrue(30*time.Second, func() bool {
		infos, err := list()
		rep, err2 := a.do(agentCmd{Op: "list"})
		if err != nil || err2 != nil {
			why = fmt.Sprint(err, err2)
			return false
		}
		why = agreement(infos, rep.Workloads)
		return why == ""
	}) {
		t.Errorf("step %d (%s): records and containers disagree: %s", step, what, why)
	}
	// The tenant network: no namespace outlives its container, and no
	// two running containers share an address.
	if !waitTrue(30*time.Second, func() bool {
		attached, _ := filepath.Glob(filepath.Join(a.cfg.Network.StateDir, "netns", "*", "*"))
		infos, err := list()
		if err != nil {
			why = err.Error()
			return false
		}
		why = networkProblems(attached, infos)
		return why == ""
	}) {
		t.Errorf("step %d (%s): tenant network: %s", step, what, why)
	}
}

// networkProblems names the network namespaces (paths, globbed before
// infos were listed) whose container is gone, and the addresses two
// running containers share.
func networkProblems(attached []string, infos []isolation.Info) string {
	var probs []string
	exists, by := map[string]bool{}, map[netip.Addr]string{}
	for _, i := range infos {
		exists[filepath.Join(isolation.Namespace(i.Tenant), i.ID)] = true
		if i.State != isolation.StateRunning || !i.Address.IsValid() {
			continue
		}
		if other, ok := by[i.Address]; ok {
			probs = append(probs, fmt.Sprintf("%s and %s both have %s", other, i.Ref, i.Address))
		}
		by[i.Address] = i.Ref.String()
	}
	for _, p := range attached {
		if strings.HasSuffix(p, ".addr") {
			continue
		}
		if ref := filepath.Join(filepath.Base(filepath.Dir(p)), filepath.Base(p)); !exists[ref] {
			probs = append(probs, "a network namespace outlives container "+ref)
		}
	}
	return strings.Join(probs, "; ")
}

// sharedGPUs names the GPUs that two running containers share.
func sharedGPUs(infos []isolation.Info) []string {
	held := map[string]string{}
	var out []string
	for _, in := range infos {
		if in.State != isolation.StateRunning {
			continue
		}
		for _, u := range in.GPUs {
			if other, ok := held[u]; ok {
				out = append(out, fmt.Sprintf("GPU %s runs %s and %s", u, other, in.Ref))
			}
			held[u] = in.Ref.String()
		}
	}
	sort.Strings(out)
	return out
}

// agreement says how the running containers and the live records
// disagree: a running record without its container, a container without
// a live record, an external workload (a claim's, run by kubelet) with a
// container of the node's own or a GPU that one of them has too.
func agreement(infos []isolation.Info, recs []workload.Workload) string {
	running := map[isolation.Ref]bool{}
	gpuIn := map[string]isolation.Ref{} // GPU -> the running container that has it
	for _, in := range infos {
		if in.State == isolation.StateRunning {
			running[in.Ref] = true
			for _, g := range in.GPUs {
				gpuIn[g] = in.Ref
			}
		}
	}
	byRef := map[isolation.Ref]bool{}
	var probs []string
	for _, w := range recs {
		if !w.State.Final() && w.State != workload.StateQueued {
			byRef[w.Container] = true
		}
		switch {
		case w.Spec.External && running[w.Container]:
			probs = append(probs, fmt.Sprintf("external %s has a container of the node's own: %s", w.Spec.ID, w.Container))
		case w.Spec.External && w.State == workload.StateRunning:
			// Its GPUs are its claim's alone: no container of the node's has them.
			for _, g := range w.GPUs {
				if ref, ok := gpuIn[g]; ok {
					probs = append(probs, fmt.Sprintf("GPU %s of external %s is in container %s too", g, w.Spec.ID, ref))
				}
			}
		case w.State == workload.StateRunning && !running[w.Container]:
			probs = append(probs, fmt.Sprintf("%s is running without its container %s", w.Spec.ID, w.Container))
		}
	}
	for ref := range running {
		if !byRef[ref] {
			probs = append(probs, fmt.Sprintf("container %s runs with no live record", ref))
		}
	}
	sort.Strings(probs)
	return strings.Join(probs, "; ")
}

func pickKey(rnd *rand.Rand, weights map[string]int) string {
	keys := make([]string, 0, len(weights))
	total := 0
	for k, w := range weights {
		keys = append(keys, k)
		total += w
	}
	sort.Strings(keys)
	n := rnd.IntN(total)
	for _, k := range keys {
		if n -= weights[k]; n < 0 {
			return k
		}
	}
	return keys[0]
}

func sortedIDs(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}
