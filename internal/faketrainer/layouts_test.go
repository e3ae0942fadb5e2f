package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ckpt "github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/training/progress"
)

// layoutCase ties a layout of the fake to the finder and progress format
// of the training package, and to the resume flags a framework takes.
type layoutCase struct {
	layout string
	finder ckpt.Layout
	format progress.Format
	resume func(dir string, ck ckpt.Checkpoint) resumeFrom
}

var layoutCases = []layoutCase{
	{layoutHF, ckpt.LayoutHF, progress.FormatHF, func(_ string, ck ckpt.Checkpoint) resumeFrom { return resumeFrom{hf: ck.Path} }},
	{layoutLightning, ckpt.LayoutLightning, progress.FormatLightning, func(_ string, ck ckpt.Checkpoint) resumeFrom { return resumeFrom{lightning: ck.Path} }},
	{layoutDeepSpeed, ckpt.LayoutDeepSpeed, progress.FormatDeepSpeed, func(dir string, ck ckpt.Checkpoint) resumeFrom {
		return resumeFrom{dsDir: dir, dsTag: ck.Name}
	}},
	{layoutMarker, ckpt.LayoutMarker, progress.FormatJSONLines, func(_ string, ck ckpt.Checkpoint) resumeFrom { return resumeFrom{marker: ck.Path} }},
}

// TestLayoutsAreWhatTheFrameworksWrite: the checkpoints of each layout are
// found complete by the training package, the newest one resumes, and
// the progress lines parse in the framework's format.
func TestLayoutsAreWhatTheFrameworksWrite(t *testing.T) {
	for _, lc := range layoutCases {
		t.Run(lc.layout, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.layout = lc.layout
			if lc.format == progress.FormatJSONLines {
				cfg.metricsFile = filepath.Join(t.TempDir(), "metrics.jsonl")
			}
			var buf syncBuffer
			require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &buf}, time.Now))
			s, err := ckpt.Finder{Layout: lc.finder}.Find(dir)
			require.NoError(t, err)
			require.Empty(t, s.Partial)
			var steps []int
			for _, c := range s.Complete {
				steps = append(steps, c.Step)
			}
			assert.Equal(t, []int{25, 20, 10}, steps, "newest first")

			p, err := progress.NewParser(lc.format)
			require.NoError(t, err)
			output := []byte(strings.Join(buf.lines(), "\n"))
			if cfg.metricsFile != "" {
				output, err = os.ReadFile(cfg.metricsFile)
				require.NoError(t, err)
			}
			p.Feed(output)
			got, ok := p.Progress()
			require.True(t, ok, "progress of %s parses as %s: %q", lc.layout, lc.format, buf.lines())
			switch lc.layout {
			case layoutLightning: // the last batch of the third epoch
				assert.Equal(t, 5, got.Step)
				assert.Equal(t, 10, got.Total)
				assert.InDelta(t, 2.5, got.Epoch, 1e-9)
			default:
				assert.Equal(t, 25, got.Step)
			}

			// Resume from the second newest, as a restart that lost the
			// last save would.
			ck := s.Complete[1]
			cfg.from = lc.resume(dir, ck)
			cfg.steps = 30
			var buf2 syncBuffer
			require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &buf2}, time.Now))
			assert.Equal(t, "resumed from step=20", buf2.lines()[0])
		})
	}
}

// TestHFLogHistoryCarriesOver: a resumed HF run keeps the log history of
// the checkpoint it resumed, so the state on disk shows one continuous run.
func TestHFLogHistoryCarriesOver(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.layout, cfg.steps = layoutHF, 20
	require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &syncBuffer{}}, time.Now))
	cfg.steps, cfg.from = 30, resumeFrom{hf: filepath.Join(dir, "checkpoint-20")}
	require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &syncBuffer{}}, time.Now))
	var st struct {
		GlobalStep int                  `json:"global_step"`
		LogHistory []map[string]float64 `json:"log_history"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "checkpoint-30", "trainer_state.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &st))
	assert.Equal(t, 30, st.GlobalStep)
	var steps []float64
	for _, e := range st.LogHistory {
		steps = append(steps, e["step"])
	}
	assert.Equal(t, []float64{5, 10, 15, 20, 25, 30}, steps)
}

// TestPartialOnSignal: a job killed mid-save leaves a checkpoint that the
// training package finds partial, and that the job cannot resume from.
func TestPartialOnSignal(t *testing.T) {
	for _, lc := range layoutCases {
		t.Run(lc.layout, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.layout, cfg.steps, cfg.checkpointEvery, cfg.partialOnSignal = lc.layout, 100000, 10, true
			ctx, cancel := context.WithCancel(context.Background())
			var buf syncBuffer
			done := make(chan error, 1)
			go func() { done <- train(ctx, cfg, &lineWriter{w: &buf}, time.Now) }()
			require.Eventually(t, func() bool { return buf.has("Saving model checkpoint") }, 10*time.Second, time.Millisecond)
			require.Eventually(t, func() bool {
				s, _ := ckpt.Finder{Layout: lc.finder}.Find(dir)
				n, ok := s.Newest()
				return ok && n.Step >= 10 && !strings.HasSuffix(buf.lines()[len(buf.lines())-1], fmt.Sprint(n.Step))
			}, 10*time.Second, time.Millisecond)
			cancel()
			require.ErrorIs(t, <-done, errDiedMidSave)
			last := buf.lines()[len(buf.lines())-1]
			var at int
			_, err := fmt.Sscanf(last, "dying mid-save at step=%d", &at)
			require.NoError(t, err, last)

			s, err := ckpt.Finder{Layout: lc.finder}.Find(dir)
			require.NoError(t, err)
			require.NotEmpty(t, s.Partial, "the cut save is there")
			assert.Equal(t, at, s.Partial[0].Step)
			n, ok := s.Newest()
			require.True(t, ok)
			assert.Less(t, n.Step, at, "the newest complete one is older")

			bad := ckpt.Checkpoint{Name: s.Partial[0].Name, Path: filepath.Join(dir, s.Partial[0].Name), Step: at}
			cfg.from, cfg.partialOnSignal = lc.resume(dir, bad), false
			err = train(context.Background(), cfg, &lineWriter{w: &syncBuffer{}}, time.Now)
			require.ErrorContains(t, err, "cannot resume", "a framework fails on half a checkpoint")
		})
	}
}

func TestSIGUSR1ChecksPointsEvenWhenSIGTERMIsIgnored(t *testing.T) {
	dir := t.TempDir()
	sig := make(chan os.Signal, 1)
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"-checkpoint-dir", dir, "-steps", "100000", "-step-interval", "1ms", "-logging-steps", "5", "-ignore-sigterm", "-layout", "hf"},
			&out, &errb, sig, time.Now)
	}()
	require.Eventually(t, func() bool { return out.has("{'loss'") }, 10*time.Second, time.Millisecond)
	sig <- syscall.SIGUSR1
	require.Equal(t, 0, <-done, errb.lines())
	assert.True(t, out.has("received SIGUSR1, saving checkpoint"))
	s, err := ckpt.Finder{Layout: ckpt.LayoutHF}.Find(dir)
	require.NoError(t, err)
	_, ok := s.Newest()
	assert.True(t, ok)
}

func TestMetricsFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.metricsFile = filepath.Join(dir, "metrics.jsonl")
	require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &syncBuffer{}}, time.Now))
	b, err := os.ReadFile(cfg.metricsFile)
	require.NoError(t, err)
	p, _ := progress.NewParser(progress.FormatJSONLines)
	p.Feed(b)
	got, ok := p.Progress()
	require.True(t, ok)
	assert.Equal(t, 25, got.Step)
	assert.Equal(t, 25, got.Total)
	assert.True(t, got.HasLoss)
}

func TestLaunchers(t *testing.T) {
	env := map[string]string{"CUDA_VISIBLE_DEVICES": "GPU-b,GPU-a", "NCCL_P2P_DISABLE": "1"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		args    []string
		gpus    int
		script  []string
		workers []string
		err     string
	}{
		{"torchrun one node", []string{"torchrun", "--nnodes=1", "--nproc-per-node=2", "--node-rank=0", "--master-addr=127.0.0.1", "--master-port=29500", "--max-restarts=0", "train.py", "-steps", "5"}, 2,
			[]string{"-steps", "5"}, []string{
				"[torchrun] worker local_rank=0 rank=0 world_size=2 local_world_size=2 group_rank=0 master_addr=127.0.0.1 master_port=29500 cuda_visible_devices=GPU-b,GPU-a",
				"[torchrun] worker local_rank=1 rank=1 world_size=2 local_world_size=2 group_rank=0 master_addr=127.0.0.1 master_port=29500 cuda_visible_devices=GPU-b,GPU-a"}, ""},
		{"torchrun second of two nodes, underscores", []string{"torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29400", "train.py"}, 0,
			[]string{}, []string{"[torchrun] worker local_rank=0 rank=1 world_size=2 local_world_size=1 group_rank=1 master_addr=10.0.0.1 master_port=29400 cuda_visible_devices=GPU-b,GPU-a"}, ""},
		{"accelerate counts processes of all machines", []string{"accelerate", "launch", "--multi_gpu", "--num_processes=4", "--num_machines=2", "--machine_rank=1", "--main_process_ip=10.0.0.1", "--main_process_port=29500", "--mixed_precision=bf16", "train.py", "-steps", "3"}, 2,
			[]string{"-steps", "3"}, []string{
				"[accelerate] worker local_rank=0 rank=2 world_size=4 local_world_size=2 group_rank=1 master_addr=10.0.0.1 master_port=29500 cuda_visible_devices=GPU-b,GPU-a",
				"[accelerate] worker local_rank=1 rank=3 world_size=4 local_world_size=2 group_rank=1 master_addr=10.0.0.1 master_port=29500 cuda_visible_devices=GPU-b,GPU-a"}, ""},
		{"deepspeed sets its own device list and --local_rank", []string{"deepspeed", "--num_nodes=1", "--num_gpus=2", "--master_addr=127.0.0.1", "--master_port=29500", "train.py", "--deepspeed"}, 2,
			[]string{"--deepspeed", "--local_rank=0"}, []string{
				"[deepspeed] worker local_rank=0 rank=0 world_size=2 local_world_size=2 group_rank=0 master_addr=127.0.0.1 master_port=29500 cuda_visible_devices=0,1",
				"[deepspeed] worker local_rank=1 rank=1 world_size=2 local_world_size=2 group_rank=0 master_addr=127.0.0.1 master_port=29500 cuda_visible_devices=0,1"}, ""},
		{"more processes than GPUs", []string{"torchrun", "--nproc-per-node=4", "train.py"}, 2, nil, nil, "4 processes per node but the container sees 2 GPUs"},
		{"node rank out of range", []string{"torchrun", "--nnodes=2", "--node-rank=2", "train.py"}, 0, nil, nil, "node rank 2 of 2 nodes"},
		{"deepspeed across nodes needs --no_ssh", []string{"deepspeed", "--num_nodes=2", "--num_gpus=1", "train.py"}, 0, nil, nil, "without --no_ssh"},
		{"unknown flag", []string{"torchrun", "--nproc-per-node=1", "--fancy", "train.py"}, 0, nil, nil, "flag provided but not defined: -fancy"},
		{"no script", []string{"torchrun", "--nproc-per-node=1"}, 0, nil, nil, "no training script"},
		{"accelerate without launch", []string{"accelerate", "config"}, 0, nil, nil, `want "accelerate launch ..."`},
		{"accelerate uneven", []string{"accelerate", "launch", "--num_processes=3", "--num_machines=2", "t.py"}, 0, nil, nil, "not a multiple"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			script, err := launch(tt.args, &lineWriter{w: &buf}, getenv, tt.gpus)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.script, script)
			var workers []string
			for _, l := range buf.lines() {
				if strings.Contains(l, "] worker ") {
					workers = append(workers, l)
				}
			}
			assert.Equal(t, tt.workers, workers)
			assert.True(t, buf.has("["+tt.args[0]+"] NCCL_P2P_DISABLE=1"))
		})
	}
}

func TestVisibleGPUs(t *testing.T) {
	dev := t.TempDir()
	for _, n := range []string{"nvidia0", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-caps", "null"} {
		writeFile(t, dev, n, "")
	}
	assert.Equal(t, 2, visibleGPUs(dev))
}
