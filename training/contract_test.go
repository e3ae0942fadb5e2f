package training_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/workload"
)

// The checkpoint contract, run on any node: a workload manager with the
// training adapter as its hook and reporter, over a runtime that runs the
// fake trainer (process_test.go, containerd_test.go).

// contractNode is a node the contract scenarios run on.
type contractNode struct {
	m      *workload.Manager
	devs   []gpu.Device
	ev     *recorder
	tenant string
	image  string
	// program runs the fake trainer: its binary on the host, nothing in an
	// image whose entrypoint it is.
	program []string
	// checkpointDir makes a checkpoint folder: on the host, and where the
	// job sees it.
	checkpointDir func(t *testing.T) (host, inJob string)
	// argsOf is the command an attempt's container really ran, when the
	// runtime can tell; nil otherwise.
	argsOf func(t *testing.T, w workload.Workload) []string
	// gpusSeen is how many GPU device nodes a container sees: 0 for host
	// processes.
	gpusSeen int
}

// job is a torchrun job of the fake trainer on the node's two GPUs, in the
// HF layout.
func (n *contractNode) job(t *testing.T, id string, grace time.Duration, args ...string) (training.Job, string) {
	host, dir := n.checkpointDir(t)
	return training.Job{
		ID: id, Tenant: n.tenant, Image: n.image, Priority: 1, PricePerGPUHour: 0.35,
		Launcher:    training.Launcher{Kind: training.Torchrun, Program: append(slices.Clone(n.program), "torchrun")},
		Script:      append([]string{"train.py", "-layout", "hf", "-checkpoint-dir", dir, "-logging-steps", "10"}, args...),
		GPUs:        2,
		Checkpoint:  training.Checkpoint{HostDir: host, Dir: dir, Layout: checkpoint.LayoutHF},
		Preemptible: true, StopGrace: grace,
	}, host
}

// submit builds and submits a job.
func (n *contractNode) submit(t *testing.T, j training.Job) training.Plan {
	t.Helper()
	plan, err := j.Build(n.devs)
	require.NoError(t, err)
	_, err = n.m.Submit(context.Background(), plan.Spec)
	require.NoError(t, err)
	return plan
}

// preempt submits a short job of higher priority that needs both GPUs,
// and returns the event of id's preemption.
func (n *contractNode) preempt(t *testing.T, id string) workload.Event {
	t.Helper()
	host, dir := n.checkpointDir(t)
	spec := workload.Spec{
		ID: "urgent-" + id, Kind: workload.KindTraining, Tenant: n.tenant, Priority: 9,
		GPUs: workload.GPURequest{Count: 2}, Image: n.image,
		Command: append(slices.Clone(n.program), "-checkpoint-dir", dir, "-steps", "20", "-step-interval", "5ms", "-checkpoint-every", "0"),
		Mounts:  []isolation.Mount{{Source: host, Target: dir}}, StopGrace: 5 * time.Second, PricePerGPUHour: 2,
	}
	if host == dir {
		spec.Mounts = nil // the process runtime sees host paths
	}
	_, err := n.m.Submit(context.Background(), spec)
	require.NoError(t, err)
	ev := n.ev.wait(t, 60*time.Second, eventIs(id, workload.EventPreempted))
	asked := n.ev.wait(t, time.Second, func(e workload.Event) bool {
		return e.ID == id && e.Type == workload.EventPreempting && e.Attempt == ev.Attempt
	})
	started := n.ev.wait(t, 60*time.Second, eventIs(spec.ID, workload.EventStarted))
	n.ev.wait(t, 60*time.Second, eventIs(spec.ID, workload.EventExited)) // done with its folder
	t.Logf("%s stopped %v after it was asked (%s, code %d); %s started %v after the ask",
		id, ev.Time.Sub(asked.Time).Round(time.Millisecond), ev.Exit.Reason, ev.Exit.Code, spec.ID, started.Time.Sub(asked.Time).Round(time.Millisecond))
	return ev
}

// waitFor waits until workload id is in state, at attempt or later.
func (n *contractNode) waitFor(t *testing.T, id string, attempt int, states ...workload.State) workload.Workload {
	t.Helper()
	var w workload.Workload
	require.Eventually(t, func() bool {
		var err error
		w, err = n.m.Get(id)
		return err == nil && w.Attempt >= attempt && slices.Contains(states, w.State)
	}, 60*time.Second, 10*time.Millisecond, "%s never reached %v at attempt %d (last %s, attempt %d: %s)", id, states, attempt, w.State, w.Attempt, w.Reason)
	return w
}

// waitProgress waits until the record shows progress of the attempt
// (item 3: delivered through the manager, kept on the record).
func (n *contractNode) waitProgress(t *testing.T, id string, attempt int) workload.Progress {
	t.Helper()
	ev := n.ev.wait(t, 60*time.Second, func(ev workload.Event) bool {
		return ev.ID == id && ev.Type == workload.EventProgress && ev.Attempt == attempt && ev.Progress.Step > 0
	})
	w, err := n.m.Get(id)
	require.NoError(t, err)
	require.NotNil(t, w.Progress, "Get shows the last progress")
	return *ev.Progress
}

// waitStep waits until the workload reports progress of step or more.
func (n *contractNode) waitStep(t *testing.T, id string, step int) {
	t.Helper()
	n.ev.wait(t, 60*time.Second, func(ev workload.Event) bool {
		return ev.ID == id && ev.Type == workload.EventProgress && ev.Progress.Step >= step
	})
}

// logsOf is the output of a workload's current attempt.
func (n *contractNode) logsOf(t *testing.T, id string) string {
	b, err := n.m.Logs(context.Background(), id)
	require.NoError(t, err)
	return string(b)
}

// hfState reads a checkpoint's trainer_state.json from disk.
type hfState struct {
	GlobalStep int                  `json:"global_step"`
	LogHistory []map[string]float64 `json:"log_history"`
}

func readState(t *testing.T, dir string, step int) hfState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "checkpoint-"+strconv.Itoa(step), "trainer_state.json"))
	require.NoError(t, err)
	var s hfState
	require.NoError(t, json.Unmarshal(b, &s))
	return s
}

// newestOnDisk reads the checkpoint folder the way a person would check
// it: the checkpoint-N folders whose trainer_state.json is whole.
func newestOnDisk(t *testing.T, dir string) (complete []int, partial []int) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*"))
	for _, p := range m {
		step, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), "checkpoint-"))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(p, "trainer_state.json"))
		var s hfState
		if err == nil && json.Unmarshal(b, &s) == nil && s.GlobalStep == step {
			complete = append(complete, step)
		} else {
			partial = append(partial, step)
		}
	}
	slices.Sort(complete)
	slices.Sort(partial)
	return complete, partial
}

var savedAt = regexp.MustCompile(`checkpoint saved at step ([0-9]+) during grace`)

// testResumeFromGrace: the trainer, launched through torchrun on two
// GPUs, is preempted, saves within its grace, and the next attempt
// continues from the step read back from disk.
func testResumeFromGrace(t *testing.T, n *contractNode) {
	j, dir := n.job(t, "resume", 10*time.Second, "-steps", "400", "-step-interval", "10ms", "-checkpoint-every", "0")
	plan := n.submit(t, j)
	w := n.waitFor(t, "resume", 1, workload.StateRunning)
	p := n.waitProgress(t, "resume", 1)
	t.Logf("attempt 1 on %v: progress step %d of %d, loss %.4f, %s", w.GPUs, p.Step, p.Total, p.Loss, p.Message)
	assert.Equal(t, 400, p.Total)
	logs := n.logsOf(t, "resume")
	for _, wk := range plan.Workers { // what torchrun gave each worker is what the plan says
		want := "[torchrun] worker local_rank=" + strconv.Itoa(wk.LocalRank) + " rank=" + strconv.Itoa(wk.Rank) + " world_size=2 local_world_size=2 group_rank=0 master_addr=127.0.0.1 master_port=29500 cuda_visible_devices=" + strings.Join(w.GPUs, ",")
		assert.Contains(t, logs, want, "cuda:i is Workload.GPUs[i]")
	}
	assert.Contains(t, logs, "[torchrun] 1 nodes x 2 processes, node 0, rendezvous 127.0.0.1:29500, container GPUs "+strconv.Itoa(n.gpusSeen))
	assert.Contains(t, logs, "[torchrun] NCCL_IB_DISABLE=1")

	ev := n.preempt(t, "resume")
	t.Logf("preempted: %s; exit %+v", ev.Note, *ev.Exit)
	assert.True(t, strings.HasPrefix(ev.Note, "preempted-with-checkpoint: checkpoint saved at step "), ev.Note)
	m := savedAt.FindStringSubmatch(ev.Note)
	require.NotNil(t, m, ev.Note)
	step, _ := strconv.Atoi(m[1])
	complete, partial := newestOnDisk(t, dir)
	require.NotEmpty(t, complete)
	assert.Empty(t, partial)
	assert.Equal(t, step, complete[len(complete)-1], "the note's step is the newest complete checkpoint on disk")
	assert.Equal(t, step, readState(t, dir, step).GlobalStep)
	assert.Greater(t, step, 0)
	rec, err := n.m.Get("resume")
	require.NoError(t, err)
	assert.Equal(t, ev.Note, rec.ExitNote, "the record keeps the note")

	w = n.waitFor(t, "resume", 2, workload.StateRunning, workload.StateExited)
	if n.argsOf != nil {
		args := n.argsOf(t, w)
		t.Logf("attempt 2 runs %q", args)
		assert.Equal(t, []string{"--resume_from_checkpoint", j.Checkpoint.Dir + "/checkpoint-" + strconv.Itoa(step)}, args[len(args)-2:])
	}
	p2 := n.waitProgress(t, "resume", 2)
	assert.Greater(t, p2.Step, step, "attempt 2 continues after the saved step")
	w = n.waitFor(t, "resume", 2, workload.StateExited)
	assert.Equal(t, 0, w.Exit.Code)
	// The manager keeps an ended container's output a moment after it
	// records the end.
	require.Eventually(t, func() bool { return strings.Contains(n.logsOf(t, "resume"), "resumed from step="+strconv.Itoa(step)) },
		10*time.Second, 10*time.Millisecond)
	assert.Equal(t, "success: last checkpoint at step 400 (checkpoint-400)", w.ExitNote)
	// On disk, one continuous run: the final state's history has every
	// logging step once, across the preemption.
	var steps []float64
	for _, e := range readState(t, dir, 400).LogHistory {
		steps = append(steps, e["step"])
	}
	want := make([]float64, 0, 40)
	for s := 10; s <= 400; s += 10 {
		want = append(want, float64(s))
	}
	assert.Equal(t, want, steps)
}

// testSignalIgnored: a trainer that ignores SIGTERM is killed at the end
// of its grace, and the note says no checkpoint landed, naming the last.
func testSignalIgnored(t *testing.T, n *contractNode) {
	j, dir := n.job(t, "stubborn", time.Second, "-steps", "100000", "-step-interval", "50ms", "-checkpoint-every", "50", "-ignore-sigterm")
	n.submit(t, j)
	n.waitFor(t, "stubborn", 1, workload.StateRunning)
	n.waitStep(t, "stubborn", 60) // past the save of step 50; the next is 2 s away, the grace 1 s
	ev := n.preempt(t, "stubborn")
	t.Logf("preempted: %s; exit %+v", ev.Note, *ev.Exit)
	require.NotNil(t, ev.Exit)
	assert.Equal(t, isolation.ReasonKilled, ev.Exit.Reason, "killed at the end of the grace")
	complete, _ := newestOnDisk(t, dir)
	assert.Equal(t, []int{50}, complete)
	assert.True(t, strings.HasPrefix(ev.Note, "preempted-without-checkpoint: no checkpoint written during grace (last at step 50, checkpoint-50)"), ev.Note)
	require.NoError(t, n.m.Cancel(context.Background(), "stubborn"))
	n.waitFor(t, "stubborn", 1, workload.StateCancelled)
}

// testPartialIgnored: a trainer that dies while it saves leaves a partial
// checkpoint; the note names it and the resume skips it.
func testPartialIgnored(t *testing.T, n *contractNode) {
	j, dir := n.job(t, "crashy", 10*time.Second, "-steps", "100000", "-step-interval", "30ms", "-checkpoint-every", "50", "-partial-on-signal")
	n.submit(t, j)
	n.waitFor(t, "crashy", 1, workload.StateRunning)
	n.waitStep(t, "crashy", 60) // past the save of step 50, 1.2 s before the one of step 100
	ev := n.preempt(t, "crashy")
	t.Logf("preempted: %s; exit %+v", ev.Note, *ev.Exit)
	complete, partial := newestOnDisk(t, dir)
	assert.Equal(t, []int{50}, complete)
	require.Len(t, partial, 1, "the save cut short is on disk")
	assert.Contains(t, ev.Note, "no checkpoint written during grace (last at step 50, checkpoint-50); partial checkpoint-"+strconv.Itoa(partial[0])+" ignored: no trainer_state.json")

	w := n.waitFor(t, "crashy", 2, workload.StateRunning)
	if n.argsOf != nil {
		args := n.argsOf(t, w)
		assert.Equal(t, []string{"--resume_from_checkpoint", j.Checkpoint.Dir + "/checkpoint-50"}, args[len(args)-2:], "the partial one is skipped")
	}
	require.Eventually(t, func() bool { return strings.Contains(n.logsOf(t, "crashy"), "resumed from step=50") }, 60*time.Second, 10*time.Millisecond)
	require.NoError(t, n.m.Cancel(context.Background(), "crashy"))
	n.waitFor(t, "crashy", 2, workload.StateCancelled)
}

// recorder keeps every event of a manager as it happens.
type recorder struct {
	mu     sync.Mutex
	events []workload.Event
	added  chan struct{} // closed and replaced on every event
}

// recordEvents watches m until the test ends.
func recordEvents(t *testing.T, m *workload.Manager) *recorder {
	r := &recorder{added: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // ends with ctx
		defer close(done)
		for ev := range m.Watch(ctx, 0) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			close(r.added)
			r.added = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// wait returns the first event that matches, waiting up to timeout.
func (r *recorder) wait(t *testing.T, timeout time.Duration, match func(workload.Event) bool) workload.Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, ev := range r.events {
			if match(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		added := r.added
		r.mu.Unlock()
		select {
		case <-added:
		case <-deadline.C:
			t.Fatalf("no matching event within %v", timeout)
		}
	}
}

func eventIs(id string, types ...workload.EventType) func(workload.Event) bool {
	return func(ev workload.Event) bool { return ev.ID == id && slices.Contains(types, ev.Type) }
}
