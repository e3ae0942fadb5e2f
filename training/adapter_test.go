package training_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training"
	"github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/workload"
)

// fakeManager stands in for a workload.Manager in the adapter's unit
// tests: events are sent by the test, logs and workloads set by it, and
// what the adapter reports is recorded.
type fakeManager struct {
	events chan workload.Event
	mu     sync.Mutex
	logs   map[string][]byte
	list   []workload.Workload
	prog   map[string][]workload.Progress
	ready  map[string]int
}

func newFakeManager() *fakeManager {
	return &fakeManager{events: make(chan workload.Event, 16), logs: map[string][]byte{}, prog: map[string][]workload.Progress{}, ready: map[string]int{}}
}

func (f *fakeManager) Watch(ctx context.Context, after uint64) <-chan workload.Event {
	ch := make(chan workload.Event)
	go func() { // ends with ctx
		defer close(ch)
		for {
			select {
			case ev := <-f.events:
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func (f *fakeManager) List(workload.Filter) []workload.Workload {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.list
}

func (f *fakeManager) Logs(_ context.Context, id string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs[id], nil
}

func (f *fakeManager) ReportProgress(_ context.Context, id string, p workload.Progress) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prog[id] = append(f.prog[id], p)
	return nil
}

func (f *fakeManager) MarkReady(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready[id]++
	return nil
}

func (f *fakeManager) progressOf(id string) []workload.Progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]workload.Progress(nil), f.prog[id]...)
}

// runAdapter runs a on m until the test ends.
func runAdapter(t *testing.T, a *training.Adapter, m training.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, m) }()
	t.Cleanup(func() { cancel(); <-done })
}

// hfCheckpoint writes an HF checkpoint of step whose save completed at at;
// a partial one lacks trainer_state.json.
func hfCheckpoint(t *testing.T, dir string, step int, complete bool, at time.Time) {
	t.Helper()
	d := filepath.Join(dir, "checkpoint-"+strconv.Itoa(step))
	require.NoError(t, os.MkdirAll(d, 0o755))
	files := []string{"model.safetensors"}
	if complete {
		files = append(files, "trainer_state.json")
	}
	for _, f := range files {
		p := filepath.Join(d, f)
		require.NoError(t, os.WriteFile(p, []byte(`{"global_step": `+strconv.Itoa(step)+`}`), 0o644))
		require.NoError(t, os.Chtimes(p, at, at))
	}
}

// trainingWorkload is the record of a training job built by this package,
// on the A40 rig, at its attempt.
func trainingWorkload(t *testing.T, j training.Job, devs []gpu.Device, attempt int, state workload.State) workload.Workload {
	t.Helper()
	plan, err := j.Build(devs)
	require.NoError(t, err)
	return workload.Workload{Spec: plan.Spec, State: state, Attempt: attempt, GPUs: []string{devs[3].UUID, devs[1].UUID}, Seq: 7}
}

// TestExitReportReadsTheDisk: what the note says of a stop is what the
// checkpoint folder shows against the time of the stop event.
func TestExitReportReadsTheDisk(t *testing.T) {
	devs := devices(t, sim.PresetA40)
	stopAt := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	exited := &isolation.ExitStatus{Code: 0, Reason: isolation.ReasonStopped, ExitedAt: stopAt.Add(3 * time.Second)}
	killed := &isolation.ExitStatus{Code: 137, Reason: isolation.ReasonKilled, ExitedAt: stopAt.Add(2 * time.Minute)}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		state   workload.State
		exit    *isolation.ExitStatus
		log     string
		noEvent bool
		want    string
	}{
		{"saved during the grace", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 100, true, stopAt.Add(-time.Minute))
			hfCheckpoint(t, d, 130, true, stopAt.Add(500*time.Millisecond))
		}, workload.StatePreempting, exited, "", false,
			"preempted-with-checkpoint: checkpoint saved at step 130 during grace (checkpoint-130, 500ms after the stop)"},
		{"a save stamped within the file clock's lag before the stop counts", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 125, true, stopAt.Add(-4*time.Millisecond))
		}, workload.StatePreempting, exited, "", false,
			"preempted-with-checkpoint: checkpoint saved at step 125 during grace (checkpoint-125, 0s after the stop)"},
		{"a save that finished before the stop is not one of the grace", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 120, true, stopAt.Add(-20*time.Millisecond))
		}, workload.StatePreempting, killed, "", false,
			"preempted-without-checkpoint: no checkpoint written during grace (last at step 120, checkpoint-120) (give it a longer StopGrace, or make it save on its stop signal)"},
		{"killed mid-save", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 100, true, stopAt.Add(-time.Minute))
			hfCheckpoint(t, d, 130, false, stopAt.Add(time.Second))
		}, workload.StatePreempting, killed, "", false,
			"no checkpoint written during grace (last at step 100, checkpoint-100); partial checkpoint-130 ignored: no trainer_state.json: the save did not finish"},
		{"nothing on disk", func(*testing.T, string) {}, workload.StateStopping, killed, "", false,
			"preempted-without-checkpoint: no checkpoint written during grace (none on disk)"},
		{"the stop event was not seen", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 130, true, stopAt.Add(500*time.Millisecond))
		}, workload.StatePreempting, exited, "", true,
			"checkpoint saved at step 130 during grace (checkpoint-130, 500ms after the stop) (the stop was not seen: taken as one grace before the exit)"},
		{"finished", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 1000, true, stopAt)
		}, workload.StateRunning, &isolation.ExitStatus{Reason: isolation.ReasonExited}, "", false,
			"success: last checkpoint at step 1000 (checkpoint-1000)"},
		{"CUDA out of memory", func(t *testing.T, d string) {
			hfCheckpoint(t, d, 100, true, stopAt)
		}, workload.StateRunning, &isolation.ExitStatus{Code: 1, Reason: isolation.ReasonExited},
			"{'loss': 1.2}\ntorch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB\n", false,
			"cuda-out-of-memory: torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB; last checkpoint at step 100 (checkpoint-100) (lower the batch size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := job(t, training.Torchrun, 2)
			tt.setup(t, j.Checkpoint.HostDir)
			w := trainingWorkload(t, j, devs, 1, tt.state)
			w.Spec.StopGrace = 3 * time.Second
			a, err := training.NewAdapter(devs, training.WithStopWait(100*time.Millisecond))
			require.NoError(t, err)
			m := newFakeManager()
			m.logs[w.Spec.ID] = []byte(tt.log)
			runAdapter(t, a, m)
			ev := workload.Event{Seq: 6, Type: workload.EventStarted, ID: w.Spec.ID, Attempt: 1, Time: stopAt.Add(-time.Hour)}
			if !tt.noEvent {
				ev = workload.Event{Seq: 7, Type: workload.EventPreempting, ID: w.Spec.ID, Attempt: 1, Time: stopAt}
			}
			m.events <- ev
			require.Eventually(t, func() bool { return len(m.events) == 0 }, 5*time.Second, time.Millisecond, "Run takes events in")
			note := a.ExitReport(context.Background(), w, tt.exit)
			assert.Contains(t, note, tt.want)
		})
	}

	// Workloads this package did not build get no note.
	a, _ := training.NewAdapter(devs)
	assert.Empty(t, a.ExitReport(context.Background(), workload.Workload{Spec: workload.Spec{ID: "miner"}}, nil))
	bad := workload.Workload{Spec: workload.Spec{ID: "x", Labels: map[string]string{training.LabelConfig: "{"}}}
	assert.Contains(t, a.ExitReport(context.Background(), bad, nil), "rebuild the spec with this package")
}

// TestPrepareAttempt: the GPU order of every attempt, and the resume
// arguments of the newest complete checkpoint on a restart.
func TestPrepareAttempt(t *testing.T) {
	devs := devices(t, sim.PresetA40)
	a, err := training.NewAdapter(devs)
	require.NoError(t, err)
	ctx := context.Background()

	plain := workload.Workload{Spec: workload.Spec{ID: "miner", Command: []string{"t-rex"}, Env: []string{"A=1"}}, Attempt: 3}
	at, err := a.PrepareAttempt(ctx, plain)
	require.NoError(t, err)
	assert.Equal(t, workload.Attempt{Command: []string{"t-rex"}, Env: []string{"A=1"}}, at, "not ours: as submitted")

	j := job(t, training.Torchrun, 2)
	hfCheckpoint(t, j.Checkpoint.HostDir, 100, true, time.Now().Add(-time.Minute))
	hfCheckpoint(t, j.Checkpoint.HostDir, 150, false, time.Now())
	w := trainingWorkload(t, j, devs, 1, workload.StateScheduled)
	at, err = a.PrepareAttempt(ctx, w)
	require.NoError(t, err)
	assert.Equal(t, w.Spec.Command, at.Command, "a first attempt runs as submitted")
	order := devs[3].UUID + "," + devs[1].UUID
	assert.Contains(t, at.Env, "CUDA_VISIBLE_DEVICES="+order, "cuda:i is Workload.GPUs[i]")
	assert.Contains(t, at.Env, "GPUFARM_GPU_UUIDS="+order)
	assert.Contains(t, at.Env, "CUDA_DEVICE_ORDER=PCI_BUS_ID")
	assert.Equal(t, w.Spec.Mounts, at.Mounts)

	w.Attempt = 2
	at, err = a.PrepareAttempt(ctx, w)
	require.NoError(t, err)
	assert.Equal(t, append(w.Spec.Command, "--resume_from_checkpoint", "/checkpoints/checkpoint-100"), at.Command,
		"the partial checkpoint-150 is skipped")
	assert.Contains(t, at.Env, "GPUFARM_ATTEMPT=2")

	// DeepSpeed sets its own device list: PCI order, named for the user.
	d := job(t, training.DeepSpeed, 2)
	d.Checkpoint.Layout = checkpoint.LayoutDeepSpeed
	d.Env = []string{"GPUFARM_ATTEMPT=mine"}
	tag := filepath.Join(d.Checkpoint.HostDir, "global_step200")
	require.NoError(t, os.MkdirAll(tag, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(tag, "mp_rank_00_model_states.pt"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(d.Checkpoint.HostDir, "latest"), []byte("global_step200"), 0o644))
	w = trainingWorkload(t, d, devs, 2, workload.StateScheduled)
	at, err = a.PrepareAttempt(ctx, w)
	require.NoError(t, err)
	assert.Contains(t, at.Env, "GPUFARM_GPU_UUIDS="+devs[1].UUID+","+devs[3].UUID, "PCI order")
	assert.NotContains(t, strings.Join(at.Env, " "), "CUDA_VISIBLE_DEVICES")
	assert.Contains(t, at.Env, "GPUFARM_ATTEMPT=mine", "the job's own settings win")
	assert.Equal(t, []string{"--load_dir", "/checkpoints", "--ckpt_id", "global_step200"}, at.Command[len(at.Command)-4:])

	// A folder that is gone fails the workload; nothing to resume starts over.
	e := job(t, training.Torchrun, 2)
	w = trainingWorkload(t, e, devs, 2, workload.StateScheduled)
	at, err = a.PrepareAttempt(ctx, w)
	require.NoError(t, err)
	assert.Equal(t, w.Spec.Command, at.Command)
	require.NoError(t, os.Remove(e.Checkpoint.HostDir))
	_, err = a.PrepareAttempt(ctx, w)
	require.ErrorIs(t, err, workload.ErrInvalid)
	assert.Contains(t, err.Error(), "checkpoint folder "+e.Checkpoint.HostDir+" is gone")
}

// TestRunReportsProgressAndReadiness: Run reports a training job's
// progress from its log once per change, and marks a server ready once
// its health endpoint answers.
func TestRunReportsProgressAndReadiness(t *testing.T) {
	devs := devices(t, sim.PresetA40)
	j := job(t, training.Torchrun, 2)
	j.Progress.TotalSteps = 0
	w := trainingWorkload(t, j, devs, 1, workload.StateRunning)

	healthy := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-healthy:
			rw.WriteHeader(http.StatusOK)
		default:
			http.Error(rw, "loading", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	port, _ := strconv.Atoi(srv.URL[strings.LastIndexByte(srv.URL, ':')+1:])
	s := server(training.VLLM, 1, gpu.MemoryNeed{Params: 7e9})
	s.Port = port
	splan, err := s.Build(devs)
	require.NoError(t, err)
	sw := workload.Workload{Spec: splan.Spec, State: workload.StateRunning, Attempt: 1}

	m := newFakeManager()
	m.list = []workload.Workload{w, sw}
	m.logs[w.Spec.ID] = []byte("{'loss': 2.1, 'grad_norm': 0.9, 'learning_rate': 5e-05, 'epoch': 0.1}\n" +
		" 10%|█         | 100/1000 [00:50<07:30,  2.00it/s]\n")
	a, err := training.NewAdapter(devs, training.WithPollInterval(20*time.Millisecond))
	require.NoError(t, err)
	runAdapter(t, a, m)
	require.Eventually(t, func() bool { return len(m.progressOf(w.Spec.ID)) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, workload.Progress{Step: 100, Total: 1000, Loss: 2.1, HasLoss: true, Epoch: 0.1, Throughput: 2, ThroughputUnit: "steps", ETA: 7*time.Minute + 30*time.Second, Message: "2 steps/s, ETA 7m30s"}, m.progressOf(w.Spec.ID)[0])
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, m.progressOf(w.Spec.ID), 1, "no new report without new progress")
	assert.Zero(t, m.ready[sw.Spec.ID], "not ready while it answers 503")

	close(healthy)
	require.Eventually(t, func() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.ready[sw.Spec.ID] == 1 }, 5*time.Second, 5*time.Millisecond)
	m.mu.Lock()
	m.logs[w.Spec.ID] = append(m.logs[w.Spec.ID], " 11%|█         | 110/1000 [00:55<07:25,  2.00it/s]\n"...)
	m.mu.Unlock()
	require.Eventually(t, func() bool { return len(m.progressOf(w.Spec.ID)) == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, 110, m.progressOf(w.Spec.ID)[1].Step)
}

func TestAdapterOptions(t *testing.T) {
	_, err := training.NewAdapter(nil, training.WithPollInterval(0), training.WithStopWait(-time.Second), training.WithClock(nil), training.WithHTTPClient(nil))
	require.ErrorIs(t, err, training.ErrInvalid)
	for _, w := range []string{"WithPollInterval(0s)", "WithStopWait(-1s)", "WithClock(nil)", "WithHTTPClient(nil)"} {
		assert.Contains(t, err.Error(), w)
	}
	a, err := training.NewAdapter(nil)
	require.NoError(t, err)
	m := newFakeManager()
	runAdapter(t, a, m)
	m.events <- workload.Event{Seq: 1, Type: workload.EventQueued, ID: "x"}
	require.Eventually(t, func() bool { return len(m.events) == 0 }, 5*time.Second, time.Millisecond, "Run takes events in")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = a.Run(ctx, m)
	require.ErrorIs(t, err, training.ErrInvalid)
	assert.Contains(t, err.Error(), "Run is already running")
}

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(rw, r)
		}
	}))
	defer srv.Close()
	require.NoError(t, training.Probe(context.Background(), srv.Client(), srv.URL+"/health"))
	err := training.Probe(context.Background(), srv.Client(), srv.URL+"/nope")
	assert.ErrorContains(t, err, "404 Not Found")
	err = training.Probe(context.Background(), srv.Client(), "http://127.0.0.1:1/health")
	assert.ErrorContains(t, err, "connection refused")
	assert.ErrorIs(t, training.Probe(context.Background(), srv.Client(), "http://\x7f/health"), training.ErrInvalid)
}
