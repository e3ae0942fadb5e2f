package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/internal/syncbuf"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/mining"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// timings of one run; -short shrinks them for the CI smoke test.
type timings struct {
	tick        time.Duration // live line interval
	trainFor    time.Duration // fine-tune alone before the urgent job
	urgentSteps int           // length of the urgent job
	capFor      time.Duration // how long the power cap holds
	trainSteps  int           // total steps of the fine-tune
	stepEvery   time.Duration
	minRuntime  time.Duration
}

func run(ctx context.Context, out io.Writer, args []string) error {
	w := &syncbuf.Writer{W: out} // the story, the event printer and the live line write at once
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(w)
	short := fs.Bool("short", false, "shorter phases, for a smoke test")
	runtimeName := fs.String("runtime", "auto", "container runtime: auto, containerd or process")
	preset := fs.String("preset", sim.PresetA40, "simulated 8-GPU fleet")
	verbose := fs.Bool("v", false, "log what the SDK does")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	tm := timings{tick: time.Second, trainFor: 8 * time.Second, urgentSteps: 120, capFor: 6 * time.Second,
		trainSteps: 900, stepEvery: 40 * time.Millisecond, minRuntime: 3 * time.Second}
	if *short {
		tm = timings{tick: 500 * time.Millisecond, trainFor: 3 * time.Second, urgentSteps: 40, capFor: 2 * time.Second,
			trainSteps: 350, stepEvery: 20 * time.Millisecond, minRuntime: time.Second}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	p, err := sim.PresetByName(*preset)
	if err != nil {
		return err
	}
	if len(p.Cards) < 8 {
		return fmt.Errorf("preset %s has %d GPUs; the quickstart needs 8", p.Name, len(p.Cards))
	}
	rig, err := sim.New(p, sim.WithLogger(log))
	if err != nil {
		return err
	}
	gpus, err := gpu.New(ctx, rig, gpu.WithLogger(log))
	if err != nil {
		return err
	}
	defer gpus.Close()

	work, err := os.MkdirTemp("", "gpufarm-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	env, err := setup(ctx, w, *runtimeName, work, gpus.Devices(), log)
	if err != nil {
		return err
	}
	defer env.close()

	fmt.Fprintf(w, "rig: %s (%d GPUs), runtime: %s\n", p.Description, len(p.Cards), env.name)
	filler, err := env.miner(gpus, log)
	if err != nil {
		return err
	}
	m, err := workload.New(gpus, env.rt,
		workload.WithLogger(log), workload.WithLoad(filler.Load(rig.SetGPULoad)), workload.WithFiller(filler), workload.WithStartHook(filler),
		workload.WithTick(250*time.Millisecond), workload.WithPowerSettle(0), workload.WithTenancy(env.tenancy()),
		workload.WithStore(workload.NewMemoryStore()))
	if err != nil {
		return err
	}
	defer m.Close()
	// Every joule to a workload or to idle: the meter reads the samples,
	// the manager's allocation timeline says who held each GPU.
	ledger := accounting.NewMemoryLedger()
	meter, err := accounting.New(ctx, gpus, m, ledger, accounting.WithTariff(accounting.Flat(0.20)),
		accounting.WithMiningRevenue(accounting.MiningRevenueFunc(func(_ context.Context, _, _ string, from, to time.Time) (float64, error) {
			return 0.085 * to.Sub(from).Hours(), nil // a stand-in until mining's coin economics feed it
		})))
	if err != nil {
		return err
	}
	d := &demo{w: w, m: m, filler: filler, meter: meter, ledger: ledger, gpus: gpus, env: env, tm: tm, t0: time.Now(), stepsPerEpoch: 100}
	return d.play(ctx)
}

type demo struct {
	w             io.Writer
	m             *workload.Manager
	filler        *mining.Filler
	meter         *accounting.Meter
	ledger        accounting.Ledger
	gpus          *gpu.Manager
	env           *env
	tm            timings
	t0            time.Time
	stepsPerEpoch int

	mu        sync.Mutex
	handovers []string
	resumed   string
	preempted string
}

// play runs the story, then stops everything in order (the manager, the
// printers, the containers) and prints the summary.
func (d *demo) play(ctx context.Context) error {
	runCtx, stopRun := context.WithCancel(ctx)
	var runErr error
	runDone := make(chan struct{})
	go func() { runErr = d.m.Run(runCtx); close(runDone) }()
	fillerDone := make(chan struct{})
	go func() { _ = d.filler.Run(runCtx, d.m); close(fillerDone) }()
	meterCtx, stopMeter := context.WithCancel(ctx)
	meterDone := make(chan struct{})
	go func() { defer close(meterDone); _ = d.meter.Run(meterCtx, 250*time.Millisecond) }()
	printCtx, stopPrint := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.watch(printCtx) }()
	go func() { defer wg.Done(); d.live(printCtx) }()

	rep, ft, storyErr := d.story(ctx, runDone)

	stopRun()
	<-runDone
	<-fillerDone
	stopMeter()
	<-meterDone // Run records everything it metered when it ends
	if runErr != nil && !errors.Is(runErr, context.Canceled) && storyErr == nil {
		storyErr = fmt.Errorf("manager: %w", runErr)
	}
	stopPrint()
	wg.Wait()
	d.stopAll()
	if storyErr != nil {
		return storyErr
	}
	d.summary(rep, ft)
	if ft.State != workload.StateExited || exitCode(ft) != 0 || ft.Preemptions != 1 || d.resumed == "" || !rep.Met {
		return fmt.Errorf("the story did not go as planned: finetune %s exit %d, %d preemptions, resumed %q, cap met %v",
			ft.State, exitCode(ft), ft.Preemptions, d.resumed, rep.Met)
	}
	return nil
}

// story drives the node through the scenario.
func (d *demo) story(ctx context.Context, runDone <-chan struct{}) (workload.CurtailReport, workload.Workload, error) {
	var none workload.CurtailReport
	step := func(format string, args ...any) {
		fmt.Fprintf(d.w, "%6.1fs  >> %s\n", time.Since(d.t0).Seconds(), fmt.Sprintf(format, args...))
	}
	wait := func(what string, cond func() bool) error {
		for !cond() {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", what, ctx.Err())
			case <-runDone:
				return fmt.Errorf("%s: the manager stopped", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	}
	pause := func(dur time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-runDone:
			return errors.New("the manager stopped")
		case <-time.After(dur):
			return nil
		}
	}
	state := func(id string) workload.State {
		wl, err := d.m.Get(id)
		if err != nil {
			return ""
		}
		return wl.State
	}

	step("miners fill every idle GPU")
	if err := wait("miners", func() bool { return d.mining() == 8 }); err != nil {
		return none, workload.Workload{}, err
	}
	step("a customer submits finetune: 4 GPUs, priority 10, checkpoints on SIGTERM")
	ckpt := filepath.Join(d.env.dir, "finetune-ckpt")
	if _, err := d.m.Submit(ctx, d.env.trainer("finetune", 4, 10, d.tm.trainSteps, d.tm.stepEvery, ckpt, d.tm.minRuntime)); err != nil {
		return none, workload.Workload{}, err
	}
	if err := wait("finetune", func() bool { return state("finetune") == workload.StateRunning }); err != nil {
		return none, workload.Workload{}, err
	}
	if err := pause(d.tm.trainFor); err != nil {
		return none, workload.Workload{}, err
	}
	step("an urgent job arrives: 6 GPUs, priority 50: miners yield, finetune is preempted")
	if _, err := d.m.Submit(ctx, d.env.trainer("urgent", 6, 50, d.tm.urgentSteps, d.tm.stepEvery, filepath.Join(d.env.dir, "urgent-ckpt"), 0)); err != nil {
		return none, workload.Workload{}, err
	}
	if err := wait("urgent", func() bool { return state("urgent") == workload.StateRunning }); err != nil {
		return none, workload.Workload{}, err
	}
	if err := wait("urgent to finish", func() bool { return state("urgent").Final() }); err != nil {
		return none, workload.Workload{}, err
	}
	step("urgent is done; finetune resumes from its checkpoint")
	if err := wait("finetune to resume", func() bool { return state("finetune") == workload.StateRunning }); err != nil {
		return none, workload.Workload{}, err
	}
	if err := wait("miners", func() bool { return d.mining() == 4 }); err != nil {
		return none, workload.Workload{}, err
	}
	if err := pause(d.tm.trainFor / 2); err != nil {
		return none, workload.Workload{}, err
	}

	// A demand-response event: keep the paid job, shed the miners.
	samples, err := d.gpus.SampleAll(ctx, nil)
	if err != nil {
		return none, workload.Workload{}, err
	}
	training, _ := d.m.Get("finetune")
	// Keep the paid job; the other GPUs get what an idle card needs.
	target := 0.0
	for _, s := range samples {
		if slices.Contains(training.GPUs, s.UUID) {
			target += s.PowerW.Value
		} else {
			target += idleAllowanceW
		}
	}
	step("the site asks for %.0f W within the minute (now %.0f W)", target, sum(samples))
	rep, err := d.m.Curtail(ctx, target)
	if err != nil {
		return none, workload.Workload{}, err
	}
	var acts []string
	for _, s := range rep.Steps {
		acts = append(acts, fmt.Sprintf("%s -> %.0f W at %v", s.Action, s.DrawW, s.After.Round(time.Millisecond)))
	}
	step("power cap met=%v: %.0f W -> %.0f W in %v (%s)", rep.Met, rep.StartW, rep.FinalW, rep.Took.Round(time.Millisecond), strings.Join(acts, "; "))
	if err := pause(d.tm.capFor); err != nil {
		return none, workload.Workload{}, err
	}
	step("the cap is lifted; miners return")
	if _, err := d.m.Curtail(ctx, 0); err != nil {
		return none, workload.Workload{}, err
	}
	if err := wait("finetune to finish", func() bool { return state("finetune").Final() }); err != nil {
		return none, workload.Workload{}, err
	}
	ft, _ := d.m.Get("finetune")
	step("finetune %s (exit %d) after %d attempts", ft.State, exitCode(ft), ft.Attempt)
	if err := wait("miners", func() bool { return d.mining() == 8 }); err != nil {
		return none, workload.Workload{}, err
	}

	return rep, ft, nil
}

// summary prints what happened.
func (d *demo) summary(rep workload.CurtailReport, ft workload.Workload) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintln(d.w, "\nsummary")
	fmt.Fprintf(d.w, "  runtime: %s\n", d.env.name)
	fmt.Fprintln(d.w, "  handovers (decision to container running):")
	for _, h := range d.handovers {
		fmt.Fprintln(d.w, "    "+h)
	}
	fmt.Fprintf(d.w, "  preemption: %s\n", d.preempted)
	fmt.Fprintf(d.w, "  resume: %s\n", d.resumed)
	fmt.Fprintf(d.w, "  power cap: %.0f W asked, %.0f W -> %.0f W in %v, met=%v\n", rep.TargetW, rep.StartW, rep.FinalW, rep.Took.Round(time.Millisecond), rep.Met)
	fmt.Fprintf(d.w, "  finetune: %s after %d attempts, %d preemption(s)\n", ft.State, ft.Attempt, ft.Preemptions)
	fmt.Fprintln(d.w, "  accounting from the ledger (power at 0.20/kWh; mining at a flat 0.085 per GPU-hour):")
	for _, by := range []struct {
		name string
		by   accounting.GroupBy
	}{{"per kind", accounting.ByKind}, {"per tenant", accounting.ByTenant}, {"per paid workload", accounting.ByWorkload}} {
		rows, err := accounting.Summarize(d.ledger.Query(context.Background(), accounting.Query{}), by.by)
		if err != nil {
			fmt.Fprintf(d.w, "    %v\n", err)
			return
		}
		fmt.Fprintf(d.w, "   %s:\n", by.name)
		for _, r := range rows {
			if by.by == accounting.ByWorkload && (strings.HasPrefix(r.Key, "mine-") || strings.HasPrefix(r.Key, "(")) {
				continue // miners and idle time are in their kind's line
			}
			fmt.Fprintf(d.w, "    %-10s %7.1f GPU-s %8.2f kJ  cost %.6f  revenue %.6f  margin %.6f\n", r.Key, r.GPUHours*3600,
				float64(r.EnergyMJ)/1e6, r.Cost.Float(), r.Revenue.Float(), r.Margin().Float())
		}
	}
}

// watch prints the manager's events worth a line and collects the summary.
func (d *demo) watch(ctx context.Context) {
	for ev := range d.m.Watch(ctx, 0) {
		at := fmt.Sprintf("%6.1fs", time.Since(d.t0).Seconds())
		switch {
		case ev.Kind == workload.KindMining:
			continue // eight at a time: the live line shows them
		case ev.Type == workload.EventStarted && ev.Handover != nil:
			h := ev.Handover
			line := fmt.Sprintf("%-9s from %d workloads: drain %v, hygiene %v, total %v", ev.ID, len(h.From),
				h.Drain.Round(time.Millisecond), h.Hygiene.Round(time.Millisecond), h.Total.Round(time.Millisecond))
			d.mu.Lock()
			d.handovers = append(d.handovers, line)
			d.mu.Unlock()
			fmt.Fprintf(d.w, "%s  %s started on %d GPUs, handover %v\n", at, ev.ID, len(ev.GPUs), h.Total.Round(time.Millisecond))
		case ev.Type == workload.EventPreempting, ev.Type == workload.EventPreempted:
			if ev.Type == workload.EventPreempted && ev.ID == "finetune" {
				d.mu.Lock()
				d.preempted = fmt.Sprintf("finetune stopped with exit %d (%s) after its grace", codeOf(ev.Exit), ev.Reason)
				d.mu.Unlock()
			}
			fmt.Fprintf(d.w, "%s  %s %s: %s\n", at, ev.ID, ev.Type, ev.Reason)
		case ev.Type != workload.EventProgress:
			fmt.Fprintf(d.w, "%s  %s %s %s\n", at, ev.ID, ev.Type, ev.Reason)
		}
	}
}

// live prints one line per tick: what holds each GPU, the draw and the
// fine-tune's step.
func (d *demo) live(ctx context.Context) {
	tick := time.NewTicker(d.tm.tick)
	defer tick.Stop()
	var samples []gpu.Sample
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		samples, _ = d.gpus.SampleAll(ctx, samples)
		var b strings.Builder
		for _, g := range d.m.GPUs() {
			switch {
			case g.Workload == "":
				b.WriteByte('.')
			case g.Kind == workload.KindMining:
				b.WriteByte('M')
			default:
				b.WriteByte(strings.ToUpper(g.Workload[:1])[0])
			}
		}
		progress := d.progress(ctx, "finetune")
		fmt.Fprintf(d.w, "%6.1fs  [%s] %5.0f W  %s\n", time.Since(d.t0).Seconds(), b.String(), sum(samples), progress)
	}
}

var (
	epochRE  = regexp.MustCompile(`'loss': ([0-9.]+).*'epoch': ([0-9.]+)`)
	resumeRE = regexp.MustCompile(`resumed from step=(\d+)`)
)

// progress reads the trainer's log (Hugging Face Trainer dicts), reports
// the step to the manager and returns it as text.
func (d *demo) progress(ctx context.Context, id string) string {
	wl, err := d.m.Get(id)
	if err != nil || wl.State != workload.StateRunning {
		if err == nil {
			return id + " " + string(wl.State)
		}
		return ""
	}
	rc, err := d.env.rt.Logs(ctx, wl.Container)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	text := string(b)
	if m := resumeRE.FindStringSubmatch(text); m != nil {
		d.mu.Lock()
		if d.resumed == "" {
			d.resumed = fmt.Sprintf("attempt %d resumed from step %s (its checkpoint)", wl.Attempt, m[1])
		}
		d.mu.Unlock()
	}
	ms := epochRE.FindAllStringSubmatch(text, -1)
	if len(ms) == 0 {
		return id + " starting"
	}
	last := ms[len(ms)-1]
	loss, _ := strconv.ParseFloat(last[1], 64)
	epoch, _ := strconv.ParseFloat(last[2], 64)
	stepN := int(epoch*float64(d.stepsPerEpoch) + 0.5)
	_ = d.m.ReportProgress(ctx, id, workload.Progress{Step: stepN, Total: d.tm.trainSteps, Loss: loss, HasLoss: true, Epoch: epoch})
	return fmt.Sprintf("%s step %d/%d loss %.3f", id, stepN, d.tm.trainSteps, loss)
}

func (d *demo) mining() int {
	return len(d.m.List(workload.Filter{Kind: workload.KindMining, States: []workload.State{workload.StateRunning}}))
}

// stopAll stops what still runs when the demo ends early.
func (d *demo) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, wl := range d.m.List(workload.Filter{}) {
		if wl.Container.ID != "" && !wl.State.Final() {
			_, _ = d.env.rt.Stop(ctx, wl.Container)
			_ = d.env.rt.Delete(ctx, wl.Container)
		}
	}
}

// idleAllowanceW is what the power cap leaves each GPU not held by paid
// work: enough to idle (an A40 idles at about 30 W), not to mine.
const idleAllowanceW = 60

func sum(samples []gpu.Sample) float64 {
	t := 0.0
	for _, s := range samples {
		t += s.PowerW.Or(0)
	}
	return t
}

func exitCode(wl workload.Workload) int { return codeOf(wl.Exit) }

func codeOf(e *isolation.ExitStatus) int {
	if e == nil {
		return -1
	}
	return e.Code
}

// env is the container runtime and how to run the fake programs on it.
type env struct {
	name    string
	rt      isolation.Runtime
	dir     string
	process bool
	bins    map[string]string // process runtime: host binaries
	daemon  *containerdtest.Daemon
}

const (
	minerRef   = "gpufarm.local/fakeminer:latest"
	trainerRef = "gpufarm.local/faketrainer:latest"
)

// setup picks the runtime: a private containerd when one can start here,
// else the process runtime.
func setup(ctx context.Context, w io.Writer, name, dir string, devs []gpu.Device, log *slog.Logger) (*env, error) {
	e := &env{dir: dir}
	if name == "auto" || name == "containerd" {
		err := containerdtest.Available()
		if err == nil {
			err = e.containerd(ctx, devs, log)
		}
		if err == nil {
			return e, nil
		}
		if name == "containerd" {
			return nil, err
		}
		fmt.Fprintf(w, "WARNING: no private containerd (%v)\n", err)
	} else if name != "process" {
		return nil, fmt.Errorf("unknown runtime %q: use auto, containerd or process", name)
	}
	fmt.Fprintln(w, "WARNING: process runtime: NOTHING IS ISOLATED, workloads run as host processes and see everything")
	return e, e.processRuntime(ctx, log)
}

func (e *env) containerd(ctx context.Context, devs []gpu.Device, log *slog.Logger) error {
	d, err := containerdtest.Launch(ctx, nil)
	if err != nil {
		return err
	}
	e.daemon = d
	cdi, err := containerd.WriteSimulatedCDI(filepath.Join(e.dir, "cdi"), devs)
	if err != nil {
		e.close()
		return err
	}
	rt, err := containerd.New(ctx, containerd.WithAddress(d.Address), containerd.WithLogger(log), containerd.WithTenancy(e.tenancy()),
		containerd.WithLogDir(filepath.Join(e.dir, "logs")), containerd.WithCDISpecDirs(cdi.SpecDir))
	if err != nil {
		e.close()
		return err
	}
	e.rt, e.name = rt, "containerd (private daemon, simulated GPUs through CDI)"
	for ref, pkg := range map[string]string{minerRef: "fakeminer", trainerRef: "faketrainer"} {
		tar := filepath.Join(e.dir, pkg+".tar")
		if err := ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/" + pkg, Ref: ref}, tar); err != nil {
			e.close()
			return err
		}
		for _, tenant := range []string{"mining", "acme"} {
			f, err := os.Open(tar)
			if err != nil {
				e.close()
				return err
			}
			_, err = rt.Import(ctx, tenant, f)
			f.Close()
			if err != nil {
				e.close()
				return err
			}
		}
	}
	return nil
}

func (e *env) processRuntime(ctx context.Context, log *slog.Logger) error {
	e.process, e.bins = true, map[string]string{}
	for _, pkg := range []string{"fakeminer", "faketrainer"} {
		out := filepath.Join(e.dir, "bin", pkg)
		if err := ociimage.BuildBinary(ctx, "github.com/gpufarm/gpufarm/internal/"+pkg, out); err != nil {
			return err
		}
		e.bins[pkg] = out
	}
	// It runs only the quickstart's own fake programs, so root may run them.
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogger(log), process.WithLogDir(filepath.Join(e.dir, "logs")))
	if err != nil {
		return err
	}
	e.rt, e.name = rt, "process (NOT ISOLATED)"
	return nil
}

// tenancy is the default one with the customer's checkpoint folders,
// under the quickstart's own folder, allowed: the mount roots an operator
// gives tenants for their checkpoint storage.
func (e *env) tenancy() isolation.Tenancy {
	t := isolation.DefaultTenancy(isolation.DefaultMiningTenant)
	t.Default.MountRoots, t.Default.WritableMounts = []string{e.dir}, true
	return t
}

func (e *env) close() {
	if e.rt != nil {
		_ = e.rt.Close()
	}
	if e.daemon != nil {
		_ = e.daemon.Stop()
	}
}

// miner fills idle GPUs with the fake miner, run as T-Rex by the mining
// package's Filler: it reads each miner's hashrate through T-Rex's API,
// reports it as progress and restarts a miner whose hashrate collapses.
func (e *env) miner(gpus *gpu.Manager, log *slog.Logger) (*mining.Filler, error) {
	trex, err := mining.AdapterByName("trex")
	if err != nil {
		return nil, err
	}
	cmd := []string{"-api", "trex", "-gpus", "1", "-log-interval", "1h", "--"}
	if e.process {
		cmd = append([]string{e.bins["fakeminer"]}, cmd...)
	}
	return mining.NewFiller(gpus, []mining.Miner{{
		Name: "trex-ethash", Adapter: trex, Image: minerRef, Command: cmd,
		Algorithm: "ethash", Pool: "stratum+tcp://127.0.0.1:3333", Wallet: "0x0000000000000000000000000000000000000000",
	}}, mining.WithTenant("mining"), mining.WithLogger(log), mining.WithStopGrace(2*time.Second),
		mining.WithPollInterval(time.Second, 500*time.Millisecond),
		mining.WithBenchmarks(mining.Benchmark{Model: "A40", Algorithm: "ethash", Rate: 95.5e6, PowerW: 220}))
}

// trainer is a training job running the fake trainer with its checkpoints
// in dir.
func (e *env) trainer(id string, gpus, priority, steps int, every time.Duration, dir string, minRuntime time.Duration) workload.Spec {
	if err := os.MkdirAll(dir, 0o777); err == nil {
		_ = os.Chmod(dir, 0o777) // the container runs as nobody
	}
	ckpt := dir
	s := workload.Spec{
		ID: id, Kind: workload.KindTraining, Tenant: "acme", Priority: priority,
		GPUs: workload.GPURequest{Count: gpus}, Image: trainerRef,
		Preemptible: true, MinRuntime: minRuntime, StopGrace: 10 * time.Second, PricePerGPUHour: 0.45,
	}
	if !e.process {
		ckpt = "/ckpt"
		s.Mounts = []isolation.Mount{{Source: dir, Target: "/ckpt"}}
	}
	args := []string{"-checkpoint-dir", ckpt, "-steps", strconv.Itoa(steps), "-step-interval", every.String(),
		"-checkpoint-every", "100", "-logging-steps", "10", "-steps-per-epoch", "100"}
	if e.process {
		s.Command = append([]string{e.bins["faketrainer"]}, args...)
	} else {
		s.Command = args
	}
	return s
}
