package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// config is what the flags set.
type config struct {
	dir             string        // checkpoint directory
	steps           int           // total optimizer steps
	stepInterval    time.Duration // wall time of one step
	checkpointEvery int           // periodic checkpoint every N steps; 0 = only on signal and at the end
	saveDelay       time.Duration // time one checkpoint save takes
	loggingSteps    int           // one progress line every N steps
	batchSize       int           // samples per step, for train_samples_per_second
	stepsPerEpoch   int           // steps in one epoch
	learningRate    float64       // peak learning rate, decayed linearly to 0
	layout          string        // how checkpoints are laid out and progress printed; "" is layoutFile
	from            resumeFrom    // the checkpoint the resume flags name
	partialOnSignal bool          // on a stop signal, write half a checkpoint and exit 1
	metricsFile     string        // append JSON progress lines here too
}

// checkpointPrefix names checkpoint files: checkpoint-<step>.
const checkpointPrefix = "checkpoint-"

// checkpoint is the content of a checkpoint file.
type checkpoint struct {
	Step int     `json:"step"`
	Loss float64 `json:"loss"`
}

// lossAt is the deterministic training loss after step (1-based): an
// exponential decay towards 0.35 with a small wobble, like a real curve.
func lossAt(step int) float64 {
	s := float64(step)
	return 0.35 + 2.0*math.Exp(-s/250) + 0.03*math.Sin(s*0.37)
}

// gradNormAt is the deterministic gradient norm at step.
func gradNormAt(step int) float64 {
	s := float64(step)
	return 0.4 + 1.2*math.Exp(-s/400) + 0.05*math.Cos(s*0.53)
}

// learningRateAt is a linear decay from the peak to 0 over total steps:
// peak * lambda, as the HF Trainer's default LambdaLR computes it.
func (c config) learningRateAt(step int) float64 {
	lambda := float64(c.steps-step) / float64(c.steps)
	return c.learningRate * lambda
}

func (c config) epochAt(step int) float64 {
	return float64(step) / float64(c.stepsPerEpoch)
}

// checkpointPath is the file of the checkpoint at step.
func checkpointPath(dir string, step int) string {
	return filepath.Join(dir, checkpointPrefix+strconv.Itoa(step))
}

// readCheckpoint reads and validates one checkpoint file: it must be JSON
// with exactly the step in its name and a finite loss.
func readCheckpoint(path string, step int) (checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return checkpoint{}, err
	}
	var raw struct {
		Step *int     `json:"step"`
		Loss *float64 `json:"loss"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return checkpoint{}, fmt.Errorf("not a checkpoint: %w", err)
	}
	switch {
	case raw.Step == nil || raw.Loss == nil:
		return checkpoint{}, errors.New("not a checkpoint: step or loss missing")
	case *raw.Step != step:
		return checkpoint{}, fmt.Errorf("not a checkpoint: file says step %d, name says %d", *raw.Step, step)
	case math.IsNaN(*raw.Loss) || math.IsInf(*raw.Loss, 0):
		return checkpoint{}, errors.New("not a checkpoint: loss is not finite")
	}
	return checkpoint{Step: *raw.Step, Loss: *raw.Loss}, nil
}

// skipped is a checkpoint file that could not be used, and why.
type skipped struct {
	path string
	err  error
}

// latestCheckpoint returns the newest valid checkpoint in dir. Invalid files
// (partial, corrupt, mismatched) are skipped and reported; temp files of an
// interrupted save are ignored. A missing dir means no checkpoint.
func latestCheckpoint(dir string) (ck checkpoint, found bool, bad []skipped, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return checkpoint{}, false, nil, nil
	}
	if err != nil {
		return checkpoint{}, false, nil, fmt.Errorf("read checkpoint dir: %w", err)
	}
	var steps []int
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), checkpointPrefix)
		if !ok || e.IsDir() {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 || strconv.Itoa(n) != rest {
			continue
		}
		steps = append(steps, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(steps)))
	for _, n := range steps {
		p := checkpointPath(dir, n)
		c, err := readCheckpoint(p, n)
		if err != nil {
			bad = append(bad, skipped{path: p, err: err})
			continue
		}
		return c, true, bad, nil
	}
	return checkpoint{}, false, bad, nil
}

// saveCheckpoint writes the checkpoint atomically: a temp file in dir,
// synced, renamed over checkpoint-<step>, then the dir synced. A crash
// leaves either the old state or the complete file, never a partial one.
func saveCheckpoint(dir string, ck checkpoint) (string, error) {
	b, err := json.Marshal(ck)
	if err != nil {
		return "", err
	}
	dst := checkpointPath(dir, ck.Step)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	cleanup := func() { _ = tmp.Close(); _ = os.Remove(tmp.Name()) }
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		cleanup()
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		cleanup()
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		cleanup()
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: some filesystems refuse fsync on dirs
		_ = d.Close()
	}
	return dst, nil
}

// pyFloat formats f as Python's repr(float) does: shortest round-trip
// digits, scientific below 1e-4 and from 1e16, always a '.' or exponent.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	exp := int(math.Floor(math.Log10(math.Abs(f))))
	// Log10 can be off by one near powers of ten; the 'e' format knows.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	if i := strings.LastIndexByte(e, 'e'); i >= 0 {
		if n, err := strconv.Atoi(e[i+1:]); err == nil {
			exp = n
		}
	}
	if exp < -4 || exp >= 16 {
		return e // Go writes "4.9e-05" and "1e+16", as Python does
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsRune(s, '.') {
		s += ".0"
	}
	return s
}

// roundTo rounds like Python's round(x, n) for the values printed here.
func roundTo(x float64, n int) float64 {
	p := math.Pow(10, float64(n))
	return math.Round(x*p) / p
}

// kv is one entry of a Python dict literal.
type kv struct {
	key string
	val float64
}

// pyDict formats entries as the HF Trainer prints its logs:
// {'loss': 1.2345, 'learning_rate': 4.9e-05, 'epoch': 0.12}.
func pyDict(entries ...kv) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range entries {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + e.key + "': " + pyFloat(e.val))
	}
	b.WriteByte('}')
	return b.String()
}

// lineWriter serialises whole lines from several goroutines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", a...)
}
