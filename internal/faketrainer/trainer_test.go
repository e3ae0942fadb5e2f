package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPyFloatMatchesPythonRepr(t *testing.T) {
	// Right-hand sides are what CPython 3 prints for repr(x).
	tests := []struct {
		in   float64
		want string
	}{
		{4.9e-05, "4.9e-05"},
		{5e-05, "5e-05"},
		{0.0001, "0.0001"},
		{0.00012345, "0.00012345"},
		{0.12, "0.12"},
		{1.2345, "1.2345"},
		{1, "1.0"},
		{-0.5, "-0.5"},
		{0, "0.0"},
		{123456789, "123456789.0"},
		{1234567.5, "1234567.5"},
		{1e15, "1000000000000000.0"},
		{1e16, "1e+16"},
		{1.5e16, "1.5e+16"},
	}
	// Computed at run time: Go folds constant expressions exactly.
	a, b, c := 0.1, 0.2, 2.5e-05
	tests = append(tests, struct {
		in   float64
		want string
	}{a + b, "0.30000000000000004"}, struct {
		in   float64
		want string
	}{c * 3, "7.500000000000001e-05"})
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, pyFloat(tc.in))
		})
	}
}

func TestPyDictLooksLikeHFTrainerLog(t *testing.T) {
	got := pyDict(kv{"loss", 1.2345}, kv{"grad_norm", 0.87}, kv{"learning_rate", 4.9e-05}, kv{"epoch", 0.12})
	assert.Equal(t, "{'loss': 1.2345, 'grad_norm': 0.87, 'learning_rate': 4.9e-05, 'epoch': 0.12}", got)
}

func TestLossCurveIsDeterministicAndDecreasing(t *testing.T) {
	assert.Equal(t, lossAt(137), lossAt(137))
	assert.Greater(t, lossAt(1), lossAt(500))
	assert.Greater(t, lossAt(500), lossAt(1000))
	for s := 1; s <= 5000; s++ {
		require.Greater(t, lossAt(s), 0.0, "step %d", s)
		require.Greater(t, gradNormAt(s), 0.0, "step %d", s)
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
}

func TestLatestCheckpoint(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, dir string)
		wantStep  int
		wantFound bool
		wantBad   int
	}{
		{"empty dir", func(*testing.T, string) {}, 0, false, 0},
		{"newest of several", func(t *testing.T, d string) {
			writeFile(t, d, "checkpoint-100", `{"step":100,"loss":1.5}`)
			writeFile(t, d, "checkpoint-300", `{"step":300,"loss":0.9}`)
			writeFile(t, d, "checkpoint-200", `{"step":200,"loss":1.1}`)
		}, 300, true, 0},
		{"numeric not lexical order", func(t *testing.T, d string) {
			writeFile(t, d, "checkpoint-99", `{"step":99,"loss":1.5}`)
			writeFile(t, d, "checkpoint-1000", `{"step":1000,"loss":0.4}`)
		}, 1000, true, 0},
		{"corrupt newest falls back", func(t *testing.T, d string) {
			writeFile(t, d, "checkpoint-100", `{"step":100,"loss":1.5}`)
			writeFile(t, d, "checkpoint-200", `{"step":2`)
		}, 100, true, 1},
		{"step mismatch and missing loss skipped", func(t *testing.T, d string) {
			writeFile(t, d, "checkpoint-100", `{"step":100,"loss":1.5}`)
			writeFile(t, d, "checkpoint-300", `{"step":299,"loss":0.9}`)
			writeFile(t, d, "checkpoint-200", `{"step":200}`)
		}, 100, true, 2},
		{"temp files and other names ignored", func(t *testing.T, d string) {
			writeFile(t, d, "checkpoint-50", `{"step":50,"loss":1.9}`)
			writeFile(t, d, ".checkpoint-900.tmp-123", `{"step":900,"loss":0.1}`)
			writeFile(t, d, "checkpoint-0900", `{"step":900,"loss":0.1}`)
			writeFile(t, d, "checkpoint-abc", `{}`)
			writeFile(t, d, "model.bin", `x`)
			require.NoError(t, os.Mkdir(filepath.Join(d, "checkpoint-800"), 0o755))
		}, 50, true, 0},
		{"only invalid", func(t *testing.T, d string) {
			writeFile(t, d, "checkpoint-10", ``)
		}, 0, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			ck, found, bad, err := latestCheckpoint(dir)
			require.NoError(t, err)
			assert.Equal(t, tc.wantFound, found)
			assert.Equal(t, tc.wantStep, ck.Step)
			assert.Len(t, bad, tc.wantBad)
		})
	}

	t.Run("missing dir is no checkpoint", func(t *testing.T) {
		_, found, _, err := latestCheckpoint(filepath.Join(t.TempDir(), "nope"))
		require.NoError(t, err)
		assert.False(t, found)
	})
}

func TestSaveCheckpointIsAtomicAndReadable(t *testing.T) {
	dir := t.TempDir()
	p, err := saveCheckpoint(dir, checkpoint{Step: 42, Loss: 1.25})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "checkpoint-42"), p)
	// Overwrite the same step: still one file, new content.
	_, err = saveCheckpoint(dir, checkpoint{Step: 42, Loss: 1.5})
	require.NoError(t, err)

	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temp file left behind")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, map[string]any{"step": 42.0, "loss": 1.5}, got)
	ck, err := readCheckpoint(p, 42)
	require.NoError(t, err)
	assert.Equal(t, checkpoint{Step: 42, Loss: 1.5}, ck)
}

func TestSaveCheckpointReportsUnwritableDir(t *testing.T) {
	_, err := saveCheckpoint(filepath.Join(t.TempDir(), "missing"), checkpoint{Step: 1, Loss: 1})
	assert.ErrorContains(t, err, "save checkpoint")
}

// syncBuffer collects output written by one goroutine and read by another.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimRight(s.b.String(), "\n"), "\n")
}

func (s *syncBuffer) has(prefix string) bool {
	for _, l := range s.lines() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func testConfig(dir string) config {
	return config{dir: dir, steps: 25, stepInterval: time.Millisecond, checkpointEvery: 10,
		loggingSteps: 5, batchSize: 8, stepsPerEpoch: 10, learningRate: 5e-5}
}

// parseDict reads an HF log dict line into a map.
func parseDict(t *testing.T, line string) map[string]float64 {
	t.Helper()
	var m map[string]float64
	require.NoError(t, json.Unmarshal([]byte(strings.ReplaceAll(line, "'", `"`)), &m), line)
	return m
}

func dictLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}

func TestTrainRunsToTheEnd(t *testing.T) {
	dir := t.TempDir()
	var buf syncBuffer
	require.NoError(t, train(context.Background(), testConfig(dir), &lineWriter{w: &buf}, time.Now))

	lines := buf.lines()
	dicts := dictLines(lines)
	require.Len(t, dicts, 6, "5 progress dicts and the summary: %q", lines)
	first := parseDict(t, dicts[0])
	assert.Equal(t, []string{"loss", "grad_norm", "learning_rate", "epoch"}, orderedKeys(dicts[0]))
	want := roundTo((lossAt(1)+lossAt(2)+lossAt(3)+lossAt(4)+lossAt(5))/5, 4)
	assert.Equal(t, want, first["loss"], "loss is the mean of the logging window")
	assert.Equal(t, 0.5, first["epoch"])
	assert.InDelta(t, 4e-5, first["learning_rate"], 1e-12)

	summary := parseDict(t, dicts[5])
	assert.Equal(t, []string{"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"}, orderedKeys(dicts[5]))
	assert.Equal(t, 2.5, summary["epoch"])
	assert.Greater(t, summary["train_runtime"], 0.0)
	assert.Greater(t, summary["train_loss"], 0.0)

	for _, s := range []int{10, 20, 25} {
		ck, err := readCheckpoint(checkpointPath(dir, s), s)
		require.NoError(t, err, "checkpoint-%d", s)
		assert.Equal(t, roundTo(lossAt(s), 4), ck.Loss)
		assert.Contains(t, lines, "Saving model checkpoint to "+checkpointPath(dir, s))
	}
}

// orderedKeys lists a dict line's keys in printed order.
func orderedKeys(line string) []string {
	var keys []string
	for _, part := range strings.Split(strings.Trim(line, "{}"), ", ") {
		k, _, _ := strings.Cut(part, ": ")
		keys = append(keys, strings.Trim(k, "'"))
	}
	return keys
}

func TestTrainStopsWithCheckpointAndResumes(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.steps = 100000
	cfg.checkpointEvery = 0
	ctx, cancel := context.WithCancel(context.Background())
	var buf syncBuffer
	done := make(chan error, 1)
	go func() { done <- train(ctx, cfg, &lineWriter{w: &buf}, time.Now) }()
	require.Eventually(t, func() bool { return len(dictLines(buf.lines())) >= 2 }, 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	lines := buf.lines()
	last := lines[len(lines)-1]
	var stopped int
	_, err := fmt.Sscanf(last, "checkpoint saved step=%d", &stopped)
	require.NoError(t, err, "last line %q", last)
	require.GreaterOrEqual(t, stopped, 10)
	ck, found, _, err := latestCheckpoint(dir)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, stopped, ck.Step, "the signal checkpoint is the newest")

	// Second run: resumes from that step and finishes.
	cfg.steps = stopped + 12
	var buf2 syncBuffer
	require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &buf2}, time.Now))
	lines2 := buf2.lines()
	assert.Equal(t, fmt.Sprintf("resumed from step=%d", stopped), lines2[0])
	dicts := dictLines(lines2)
	require.NotEmpty(t, dicts)
	summary := parseDict(t, dicts[len(dicts)-1])
	assert.Equal(t, roundTo(cfg.epochAt(cfg.steps), 2), summary["epoch"])
	var mean float64
	for s := stopped + 1; s <= cfg.steps; s++ {
		mean += lossAt(s)
	}
	assert.InDelta(t, mean/12, summary["train_loss"], 1e-12, "train_loss covers the resumed steps only")
	_, err = readCheckpoint(checkpointPath(dir, cfg.steps), cfg.steps)
	require.NoError(t, err, "final checkpoint written")

	// Third run: already done, nothing trained, nothing saved.
	var buf3 syncBuffer
	require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &buf3}, time.Now))
	assert.Equal(t, fmt.Sprintf("resumed from step=%d", cfg.steps), buf3.lines()[0])
	assert.False(t, buf3.has("Saving model checkpoint"))
}

func TestTrainSkipsCorruptCheckpoint(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "checkpoint-5", `{"step":5,"loss":2.0}`)
	writeFile(t, dir, "checkpoint-8", `garbage`)
	cfg := testConfig(dir)
	cfg.steps = 6
	var buf syncBuffer
	require.NoError(t, train(context.Background(), cfg, &lineWriter{w: &buf}, time.Now))
	lines := buf.lines()
	assert.True(t, strings.HasPrefix(lines[0], "skipping invalid checkpoint "+filepath.Join(dir, "checkpoint-8")), lines[0])
	assert.Equal(t, "resumed from step=5", lines[1])
}

func TestTrainReportsUnwritableCheckpointDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	writeFile(t, filepath.Dir(f), "file", "x")
	err := train(context.Background(), testConfig(filepath.Join(f, "sub")), &lineWriter{w: &syncBuffer{}}, time.Now)
	assert.ErrorContains(t, err, "create checkpoint dir")
}

func TestRunSignals(t *testing.T) {
	tests := []struct {
		name       string
		ignoreTerm bool
		signals    []os.Signal
		wantLines  []string
	}{
		{"SIGTERM saves", false, []os.Signal{syscall.SIGTERM}, []string{"received SIGTERM, saving checkpoint", "checkpoint saved step="}},
		{"SIGINT saves", false, []os.Signal{syscall.SIGINT}, []string{"received SIGINT, saving checkpoint", "checkpoint saved step="}},
		{"ignored SIGTERM then SIGINT", true, []os.Signal{syscall.SIGTERM, syscall.SIGINT},
			[]string{"received SIGTERM, ignoring it (-ignore-sigterm)", "received SIGINT, saving checkpoint", "checkpoint saved step="}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"-checkpoint-dir", dir, "-steps", "100000", "-step-interval", "1ms", "-logging-steps", "5"}
			if tc.ignoreTerm {
				args = append(args, "-ignore-sigterm")
			}
			sig := make(chan os.Signal, 1)
			var out, errb syncBuffer
			done := make(chan int, 1)
			go func() { done <- run(args, &out, &errb, sig, time.Now) }()
			require.Eventually(t, func() bool { return out.has("{'loss'") }, 10*time.Second, time.Millisecond)
			for _, s := range tc.signals {
				sig <- s
				if s == syscall.SIGTERM && tc.ignoreTerm {
					require.Eventually(t, func() bool { return out.has("received SIGTERM, ignoring") }, 10*time.Second, time.Millisecond)
					n := len(dictLines(out.lines()))
					require.Eventually(t, func() bool { return len(dictLines(out.lines())) > n }, 10*time.Second, time.Millisecond,
						"training goes on after an ignored SIGTERM")
				}
			}
			select {
			case code := <-done:
				assert.Equal(t, 0, code, strings.Join(errb.lines(), "\n"))
			case <-time.After(10 * time.Second):
				t.Fatal("run did not stop")
			}
			for _, w := range tc.wantLines {
				assert.True(t, out.has(w), "missing %q in %q", w, out.lines())
			}
			_, found, _, err := latestCheckpoint(dir)
			require.NoError(t, err)
			assert.True(t, found)
		})
	}
}

func TestRunRejectsBadFlagsAllAtOnce(t *testing.T) {
	var out, errb syncBuffer
	code := run([]string{"-steps", "0", "-step-interval", "0s", "-checkpoint-every", "-1", "-save-delay", "-1s", "-logging-steps", "0", "-learning-rate", "0", "x"},
		&out, &errb, make(chan os.Signal), time.Now)
	assert.Equal(t, 2, code)
	msg := strings.Join(errb.lines(), "\n")
	for _, w := range []string{"-steps must be >= 1", "-step-interval must be > 0", "-checkpoint-every must be >= 0",
		"-save-delay must be >= 0", "-logging-steps must be >= 1", "-learning-rate must be > 0", "unexpected arguments"} {
		assert.Contains(t, msg, w)
	}
}

func Example_progressLine() {
	cfg := config{steps: 1000, stepsPerEpoch: 250, learningRate: 5e-5}
	step := 20
	fmt.Println(pyDict(
		kv{"loss", roundTo(lossAt(step), 4)},
		kv{"learning_rate", cfg.learningRateAt(step)},
		kv{"epoch", roundTo(cfg.epochAt(step), 2)},
	))
	// Output:
	// {'loss': 2.2232, 'learning_rate': 4.9e-05, 'epoch': 0.08}
}
