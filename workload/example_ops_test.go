package workload_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

// exampleRig is the node of the Manager examples: a simulated rig of
// eight A40s and the process runtime, which runs each workload as a host
// process (ExampleManager builds the same by hand). The runtime outlives
// the managers made over it, as containerd does on a node.
type exampleRig struct {
	rig  *sim.Rig
	gpus *gpu.Manager
	rt   *process.Runtime
	dir  string
}

func newExampleRig() *exampleRig {
	p, _ := sim.PresetByName(sim.PresetA40)
	rig, _ := sim.New(p)
	gpus, _ := gpu.New(context.Background(), rig)
	dir, _ := os.MkdirTemp("", "example-node")
	// WithUnsafeRoot: the tests run as root; an unprivileged user needs none.
	rt, _ := process.New(process.WithUnsafeRoot(), process.WithLogDir(filepath.Join(dir, "logs")))
	return &exampleRig{rig: rig, gpus: gpus, rt: rt, dir: dir}
}

func (r *exampleRig) close() {
	r.rt.Close()
	r.gpus.Close()
	os.RemoveAll(r.dir)
}

// start makes a manager over the rig and runs it; stop ends Run and closes
// the manager, leaving what runs to the next one.
func (r *exampleRig) start(opts ...workload.Option) (m *workload.Manager, stop func()) {
	opts = append([]workload.Option{workload.WithLoad(r.rig.SetGPULoad), workload.WithPowerSettle(0),
		workload.WithTick(20 * time.Millisecond)}, opts...)
	m, err := workload.New(r.gpus, r.rt, opts...)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	return m, func() {
		cancel()
		<-ran // Run owns its goroutines; wait before closing what they use
		m.Close()
	}
}

// startExampleNode is a rig with one manager running on it; done stops
// both.
func startExampleNode(opts ...workload.Option) (r *exampleRig, m *workload.Manager, done func()) {
	r = newExampleRig()
	m, stop := r.start(opts...)
	return r, m, func() {
		stop()
		r.close()
	}
}

// sleepingMiners fills every idle GPU with a "miner" that sleeps.
var sleepingMiners = workload.WithFiller(workload.FillerFunc(func(ctx context.Context, d gpu.Device) (workload.Spec, bool) {
	return workload.Spec{Tenant: "mining", Image: "miner", Command: []string{"sleep", "3600"}, StopGrace: time.Second}, true
}))

// checkpointing is a training job that saves a checkpoint when it is
// asked to stop, as the training package's jobs do; it prints "ready" once
// its handler is in place.
func checkpointing(id string, gpus int) workload.Spec {
	return workload.Spec{
		ID: id, Kind: workload.KindTraining, Tenant: "acme", Priority: 1, Preemptible: true,
		GPUs: workload.GPURequest{Count: gpus}, Image: "trainer", StopGrace: 5 * time.Second,
		Command: []string{"sh", "-c", `trap 'echo checkpoint saved; exit 0' TERM; echo ready; sleep 3600 & wait`},
	}
}

// eventually polls cond until it holds; an example that waits longer than
// a test would fails loudly rather than hang.
func eventually(what string, cond func() bool) {
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			panic("timed out waiting for " + what)
		}
	}
}

// printEvent prints what a watcher would log of an event.
func printEvent(ev workload.Event) {
	line := fmt.Sprint(ev.ID, " ", ev.Type)
	if ev.Reason != "" {
		line += ": " + ev.Reason
	}
	fmt.Println(line)
}

func running(m *workload.Manager, kind workload.Kind) int {
	return len(m.List(workload.Filter{Kind: kind, States: []workload.State{workload.StateRunning}}))
}

func logged(m *workload.Manager, id, text string) func() bool {
	return func() bool {
		out, _ := m.Logs(context.Background(), id)
		return strings.Contains(string(out), text)
	}
}

// A site asks for less power (demand response). Curtail meets the target
// a step at a time and only as far as needed: first the miners' power
// limits, then the miners themselves, then training's limits, and only
// then training, which gets its grace to checkpoint and waits in the
// queue. Curtail(ctx, 0) lifts the budget.
func ExampleManager_Curtail() {
	_, m, done := startExampleNode(sleepingMiners)
	defer done()
	ctx := context.Background()
	if _, err := m.Submit(ctx, checkpointing("finetune", 2)); err != nil {
		fmt.Println(err)
		return
	}
	eventually("the fine-tune to start", logged(m, "finetune", "ready"))
	eventually("six miners", func() bool { return running(m, workload.KindMining) == 6 })

	for _, watts := range []float64{1800, 300} {
		rep, err := m.Curtail(ctx, watts)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("curtail from %.0f W to %.0f W: met %v, draw %.0f W\n", rep.StartW, rep.TargetW, rep.Met, rep.FinalW)
		for _, s := range rep.Steps {
			action := s.Action
			if strings.HasPrefix(action, "stop mining ") {
				action = "stop a miner" // miners' IDs differ from run to run
			}
			fmt.Printf("  %s: %.0f W\n", action, s.DrawW)
		}
	}
	w, _ := m.Get("finetune")
	fmt.Println("finetune:", w.State, "-", w.Reason)
	out, _ := m.Logs(ctx, "finetune") // kept from the attempt that ended
	fmt.Print(string(out))

	if _, err := m.Curtail(ctx, 0); err != nil {
		fmt.Println(err)
		return
	}
	eventually("the fine-tune to resume", func() bool { w, _ := m.Get("finetune"); return w.State == workload.StateRunning })
	eventually("six miners again", func() bool { return running(m, workload.KindMining) == 6 })
	w, _ = m.Get("finetune")
	fmt.Println("budget lifted: finetune attempt", w.Attempt, "and", running(m, workload.KindMining), "miners run")
	// Output:
	// curtail from 2314 W to 1800 W: met true, draw 1758 W
	//   lower mining power limits: 1758 W
	// curtail from 1758 W to 300 W: met true, draw 238 W
	//   lower mining power limits: 1146 W
	//   stop a miner: 1076 W
	//   stop a miner: 1005 W
	//   stop a miner: 935 W
	//   stop a miner: 865 W
	//   stop a miner: 794 W
	//   stop a miner: 724 W
	//   lower training power limits: 378 W
	//   stop training finetune: 238 W
	// finetune: queued - preempted by power cap
	// --- finetune-1 ---
	// ready
	// checkpoint saved
	// budget lifted: finetune attempt 2 and 6 miners run
}

// Cancel stops a workload for good: a queued one leaves the queue; a
// running training job gets its stop signal and grace, so it can save a
// checkpoint, and ends cancelled. Cancelling it again does nothing.
func ExampleManager_Cancel() {
	_, m, done := startExampleNode()
	defer done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := m.Watch(ctx, 0)
	if _, err := m.Submit(ctx, checkpointing("finetune", 4)); err != nil {
		fmt.Println(err)
		return
	}
	eventually("the fine-tune to start", logged(m, "finetune", "ready"))
	// Eight GPUs at the same priority: it waits, since it may not preempt.
	if _, err := m.Submit(ctx, checkpointing("waits", 8)); err != nil {
		fmt.Println(err)
		return
	}
	for _, id := range []string{"waits", "finetune"} {
		if err := m.Cancel(ctx, id); err != nil {
			fmt.Println(err)
			return
		}
	}
	ended := 0
	for ev := range events {
		printEvent(ev)
		if ev.Type == workload.EventCancelled {
			if ended++; ended == 2 {
				break
			}
		}
	}
	w, _ := m.Get("finetune")
	fmt.Println("finetune exit code:", w.Exit.Code)
	out, _ := m.Logs(ctx, "finetune")
	fmt.Print(string(out))
	fmt.Println("cancel again:", m.Cancel(ctx, "finetune"))
	// Output:
	// finetune queued
	// finetune scheduled
	// finetune started
	// waits queued
	// waits cancelled: cancelled while queued
	// finetune stopping: cancelled
	// finetune cancelled: cancelled
	// finetune exit code: 0
	// --- finetune-1 ---
	// ready
	// checkpoint saved
	// cancel again: <nil>
}

// Cordon takes a GPU out of service for maintenance: what runs there runs
// on, and nothing new goes there, not even a miner. Drain moves the work
// off; Uncordon gives the GPU back.
func ExampleManager_Cordon() {
	r, m, done := startExampleNode(sleepingMiners)
	defer done()
	ctx := context.Background()
	eventually("eight miners", func() bool { return running(m, workload.KindMining) == 8 })
	uuid := r.gpus.Devices()[0].UUID
	show := func(when string) {
		g := m.GPUs()[0]
		fmt.Printf("%s: GPU 0 holds %q, cordoned %q; %d miners\n", when, g.Kind, g.Cordoned, running(m, workload.KindMining))
	}

	if err := m.Cordon(ctx, uuid, "fan replacement"); err != nil {
		fmt.Println(err)
		return
	}
	show("cordoned")
	if err := m.Drain(ctx, uuid); err != nil {
		fmt.Println(err)
		return
	}
	time.Sleep(100 * time.Millisecond) // a few scheduling rounds: no miner comes back
	show("drained")
	if err := m.Uncordon(ctx, uuid); err != nil {
		fmt.Println(err)
		return
	}
	eventually("the miner to return", func() bool { return running(m, workload.KindMining) == 8 })
	show("uncordoned")
	// Output:
	// cordoned: GPU 0 holds "mining", cordoned "fan replacement"; 8 miners
	// drained: GPU 0 holds "", cordoned "fan replacement"; 7 miners
	// uncordoned: GPU 0 holds "mining", cordoned ""; 8 miners
}

// A watcher resumes after the manager restarts: it keeps the Seq of the
// last event it handled and asks a new Manager, over the same durable
// store (workload/bolt), for what came after. Here the job ends while no
// manager runs; the new one finds its exit and the watcher hears of it.
func ExampleManager_Watch_resume() {
	r := newExampleRig()
	defer r.close()
	ctx := context.Background()
	path := filepath.Join(r.dir, "node.db")
	flag := filepath.Join(r.dir, "done")
	store, err := bolt.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	m, stop := r.start(workload.WithStore(store))
	wctx, unwatch := context.WithCancel(ctx)
	defer unwatch()
	events := m.Watch(wctx, 0)
	if _, err := m.Submit(ctx, workload.Spec{
		ID: "etl", Kind: workload.KindBatch, Tenant: "acme", GPUs: workload.GPURequest{Count: 1}, Image: "etl",
		// It runs until the example lets it finish.
		Command: []string{"sh", "-c", "while [ ! -e " + flag + " ]; do sleep 0.01; done; echo rows loaded"},
	}); err != nil {
		stop()
		fmt.Println(err)
		return
	}
	var last uint64
	for ev := range events {
		printEvent(ev)
		last = ev.Seq // a control plane keeps this durably
		if ev.Type == workload.EventStarted {
			break
		}
	}
	unwatch()

	// The manager goes down (its store closes with it); meanwhile the job
	// finishes.
	stop()
	w, _ := m.Get("etl")
	os.WriteFile(flag, nil, 0o644)
	r.rt.Wait(ctx, w.Container)

	store, err = bolt.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	m, stop = r.start(workload.WithStore(store))
	defer stop()
	fmt.Println("-- restarted; resuming after the last event seen --")
	for ev := range m.Watch(ctx, last) {
		printEvent(ev)
		if ev.Type == workload.EventExited {
			fmt.Println("exit code", ev.Exit.Code)
			break
		}
	}
	out, _ := m.Logs(ctx, "etl")
	fmt.Print(string(out))
	// Output:
	// etl queued
	// etl scheduled
	// etl started
	// -- restarted; resuming after the last event seen --
	// etl exited: exited
	// exit code 0
	// --- etl-1 ---
	// rows loaded
}
