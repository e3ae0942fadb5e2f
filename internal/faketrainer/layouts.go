package main

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Layouts the fake trainer writes its checkpoints in.
const (
	layoutFile      = "file"      // checkpoint-<step> JSON files, written atomically; resumes by itself
	layoutHF        = "hf"        // Hugging Face Trainer folders
	layoutLightning = "lightning" // PyTorch Lightning .ckpt archives
	layoutDeepSpeed = "deepspeed" // DeepSpeed tag folders and latest
	layoutMarker    = "marker"    // step folders finished by a .metadata marker
)

var layouts = []string{layoutFile, layoutHF, layoutLightning, layoutDeepSpeed, layoutMarker}

// resumeFrom is what the resume flags name, each framework's way.
type resumeFrom struct {
	hf        string // --resume_from_checkpoint PATH
	lightning string // --ckpt_path PATH
	dsDir     string // --load_dir DIR
	dsTag     string // --ckpt_id TAG (the latest file's when empty)
	marker    string // --resume PATH
}

// store writes and reads the checkpoints of one layout.
type store interface {
	// resume returns the checkpoint to start from, and false for a fresh
	// start. A checkpoint named by a resume flag that cannot be read is an
	// error, as it is for a framework.
	resume(out *lineWriter) (checkpoint, bool, error)
	// save writes a complete checkpoint and returns its path.
	save(ck checkpoint, epoch float64) (string, error)
	// savePartial writes what a save killed midway leaves.
	savePartial(ck checkpoint, epoch float64) (string, error)
}

// historian is a store that keeps the log history in its checkpoints.
type historian interface {
	logged(entry map[string]float64)
}

func newStore(c config) store {
	switch c.layout {
	case layoutHF:
		return &hfStore{dir: c.dir, from: c.from.hf, maxSteps: c.steps}
	case layoutLightning:
		return lightningStore{dir: c.dir, from: c.from.lightning}
	case layoutDeepSpeed:
		return deepSpeedStore{dir: c.dir, fromDir: c.from.dsDir, fromTag: c.from.dsTag}
	case layoutMarker:
		return markerStore{dir: c.dir, from: c.from.marker}
	}
	return fileStore{dir: c.dir}
}

// fileStore is the original layout: one JSON file a checkpoint, written
// atomically, and a resume from the newest valid one without being asked.
type fileStore struct{ dir string }

func (s fileStore) resume(out *lineWriter) (checkpoint, bool, error) {
	ck, found, bad, err := latestCheckpoint(s.dir)
	for _, b := range bad {
		out.printf("skipping invalid checkpoint %s: %v", b.path, b.err)
	}
	return ck, found, err
}

func (s fileStore) save(ck checkpoint, _ float64) (string, error) { return saveCheckpoint(s.dir, ck) }

func (s fileStore) savePartial(ck checkpoint, _ float64) (string, error) {
	// The atomic writer leaves only its temp file behind.
	p := filepath.Join(s.dir, "."+checkpointPrefix+strconv.Itoa(ck.Step)+".tmp-partial")
	return p, os.WriteFile(p, []byte(`{"step":`), 0o644)
}

// writeHalf writes the first half of b, as a save killed midway does.
func writeHalf(path string, b []byte) error {
	return os.WriteFile(path, b[:len(b)/2], 0o644)
}

func ckJSON(ck checkpoint) []byte {
	b, _ := json.Marshal(ck)
	return b
}

// readCk reads a checkpoint's JSON payload from a file the fake wrote.
func readCk(path string) (checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return checkpoint{}, err
	}
	return parseCk(b)
}

func parseCk(b []byte) (checkpoint, error) {
	var ck checkpoint
	if err := json.Unmarshal(b, &ck); err != nil {
		return checkpoint{}, fmt.Errorf("not a whole checkpoint: %w", err)
	}
	return ck, nil
}

// hfStore writes checkpoint-<step>/ as the HF Trainer does: the weights,
// optimizer and scheduler first, trainer_state.json last.
type hfStore struct {
	dir, from string
	maxSteps  int
	history   []map[string]float64
}

func (s *hfStore) logged(e map[string]float64) { s.history = append(s.history, e) }

func (s *hfStore) resume(out *lineWriter) (checkpoint, bool, error) {
	if s.from == "" {
		return checkpoint{}, false, nil
	}
	b, err := os.ReadFile(filepath.Join(s.from, "trainer_state.json"))
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	var st struct {
		GlobalStep int                  `json:"global_step"`
		LogHistory []map[string]float64 `json:"log_history"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: trainer_state.json: %w", s.from, err)
	}
	ck, err := readCk(filepath.Join(s.from, "model.safetensors"))
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: model.safetensors: %w", s.from, err)
	}
	if ck.Step != st.GlobalStep {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: weights of step %d, state of step %d", s.from, ck.Step, st.GlobalStep)
	}
	s.history = st.LogHistory
	return ck, true, nil
}

func (s *hfStore) save(ck checkpoint, epoch float64) (string, error) {
	dir := filepath.Join(s.dir, checkpointPrefix+strconv.Itoa(ck.Step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	for name, b := range map[string][]byte{"model.safetensors": ckJSON(ck), "optimizer.pt": []byte("adam"), "scheduler.pt": []byte("linear")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", fmt.Errorf("save checkpoint: %w", err)
		}
	}
	state, _ := json.MarshalIndent(map[string]any{
		"global_step": ck.Step, "max_steps": s.maxSteps, "epoch": epoch, "log_history": s.history,
		"best_metric": nil, "is_world_process_zero": true,
	}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "trainer_state.json"), state, 0o644); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	return dir, nil
}

func (s *hfStore) savePartial(ck checkpoint, _ float64) (string, error) {
	dir := filepath.Join(s.dir, checkpointPrefix+strconv.Itoa(ck.Step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, writeHalf(filepath.Join(dir, "model.safetensors"), ckJSON(ck))
}

// lightningStore writes epoch=<e>-step=<n>.ckpt archives laid out as
// torch.save writes them, straight to the file as Lightning does.
type lightningStore struct{ dir, from string }

func (s lightningStore) path(ck checkpoint, epoch float64) string {
	return filepath.Join(s.dir, fmt.Sprintf("epoch=%d-step=%d.ckpt", int(epoch), ck.Step))
}

func (s lightningStore) resume(*lineWriter) (checkpoint, bool, error) {
	if s.from == "" {
		return checkpoint{}, false, nil
	}
	zr, err := zip.OpenReader(s.from)
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	defer zr.Close()
	f, err := zr.Open("archive/fake.json")
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	ck, err := parseCk(buf.Bytes())
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	return ck, true, nil
}

func (s lightningStore) archive(ck checkpoint, epoch float64) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		b    []byte
	}{
		{"archive/data.pkl", pickleDict([]pickleItem{{"epoch", int(epoch)}, {"global_step", ck.Step}, {"pytorch-lightning_version", "2.4.0"}})},
		{"archive/fake.json", ckJSON(ck)},
		{"archive/data/0", make([]byte, 1024)},
		{"archive/version", []byte("3\n")},
	} {
		w, _ := zw.Create(e.name)
		_, _ = w.Write(e.b)
	}
	_ = zw.Close()
	return buf.Bytes()
}

func (s lightningStore) save(ck checkpoint, epoch float64) (string, error) {
	p := s.path(ck, epoch)
	if err := os.WriteFile(p, s.archive(ck, epoch), 0o644); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	return p, nil
}

func (s lightningStore) savePartial(ck checkpoint, epoch float64) (string, error) {
	p := s.path(ck, epoch)
	return p, writeHalf(p, s.archive(ck, epoch))
}

// pickleItem is one entry of a pickled dict: an int or a string value.
type pickleItem struct {
	key string
	val any
}

// pickleDict encodes a dict of string keys to ints and strings in pickle
// protocol 2, the protocol torch.save uses.
func pickleDict(items []pickleItem) []byte {
	b := []byte{0x80, 2, '}', '('}
	str := func(s string) {
		b = append(b, 'X')
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	for _, it := range items {
		str(it.key)
		switch v := it.val.(type) {
		case int:
			switch {
			case v >= 0 && v < 256:
				b = append(b, 'K', byte(v))
			case v >= 0 && v < 65536:
				b = append(b, 'M')
				b = binary.LittleEndian.AppendUint16(b, uint16(v))
			default:
				b = append(b, 'J')
				b = binary.LittleEndian.AppendUint32(b, uint32(int32(v)))
			}
		case string:
			str(v)
		}
	}
	return append(b, 'u', '.')
}

// deepSpeedStore writes <dir>/global_step<n>/ and then rewrites latest, as
// DeepSpeed's save_checkpoint does once every rank has saved.
type deepSpeedStore struct{ dir, fromDir, fromTag string }

const dsModelStates = "mp_rank_00_model_states.pt"

func (s deepSpeedStore) resume(*lineWriter) (checkpoint, bool, error) {
	if s.fromDir == "" {
		return checkpoint{}, false, nil
	}
	tag := s.fromTag
	if tag == "" {
		b, err := os.ReadFile(filepath.Join(s.fromDir, "latest"))
		if err != nil {
			return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.fromDir, err)
		}
		tag = strings.TrimSpace(string(b))
	}
	ck, err := readCk(filepath.Join(s.fromDir, tag, dsModelStates))
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s tag %s: %w", s.fromDir, tag, err)
	}
	return ck, true, nil
}

func (s deepSpeedStore) tagDir(step int) string {
	return filepath.Join(s.dir, "global_step"+strconv.Itoa(step))
}

func (s deepSpeedStore) save(ck checkpoint, _ float64) (string, error) {
	dir := s.tagDir(ck.Step)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	for name, b := range map[string][]byte{dsModelStates: ckJSON(ck), "zero_pp_rank_0_mp_rank_00_optim_states.pt": []byte("adam")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", fmt.Errorf("save checkpoint: %w", err)
		}
	}
	tmp := filepath.Join(s.dir, ".latest.tmp")
	if err := os.WriteFile(tmp, []byte(filepath.Base(dir)), 0o644); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "latest")); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	return dir, nil
}

func (s deepSpeedStore) savePartial(ck checkpoint, _ float64) (string, error) {
	dir := s.tagDir(ck.Step)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "zero_pp_rank_0_mp_rank_00_optim_states.pt"), []byte("ad"), 0o644)
}

// markerStore writes step-<n>/ and then its .metadata marker, as PyTorch
// Distributed Checkpoint does.
type markerStore struct{ dir, from string }

const markerData = "__0_0.distcp"

func (s markerStore) resume(*lineWriter) (checkpoint, bool, error) {
	if s.from == "" {
		return checkpoint{}, false, nil
	}
	if _, err := os.Stat(filepath.Join(s.from, ".metadata")); err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	ck, err := readCk(filepath.Join(s.from, markerData))
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("cannot resume from %s: %w", s.from, err)
	}
	return ck, true, nil
}

func (s markerStore) save(ck checkpoint, _ float64) (string, error) {
	dir := filepath.Join(s.dir, "step-"+strconv.Itoa(ck.Step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerData), ckJSON(ck), 0o644); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".metadata"), []byte("{}"), 0o644); err != nil {
		return "", fmt.Errorf("save checkpoint: %w", err)
	}
	return dir, nil
}

func (s markerStore) savePartial(ck checkpoint, _ float64) (string, error) {
	dir := filepath.Join(s.dir, "step-"+strconv.Itoa(ck.Step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, writeHalf(filepath.Join(dir, markerData), ckJSON(ck))
}

// errDiedMidSave ends a run that wrote a partial checkpoint on a signal.
var errDiedMidSave = errors.New("died while saving a checkpoint (-partial-on-signal)")
