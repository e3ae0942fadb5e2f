package checkpoint_test

import (
	"archive/zip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/training/checkpoint"
)

// Pickles as CPython 3.11's pickle.dumps writes them: protocol 2 is what
// torch.save uses; protocol 4 what newer code may.
const (
	// {'epoch': 3, 'global_step': 1200, 'pytorch-lightning_version': '2.4.0', 'state_dict': {'layer.weight': 0}, 'loops': {...}}
	pickleLightning = "\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x03X\x0b\x00\x00\x00global_stepq\x02M\xb0\x04X\x19\x00\x00\x00pytorch-lightning_versionq\x03X\x05\x00\x00\x002.4.0q\x04X\n\x00\x00\x00state_dictq\x05}q\x06X\x0c\x00\x00\x00layer.weightq\x07K\x00sX\x05\x00\x00\x00loopsq\x08}q\tX\x08\x00\x00\x00fit_loopq\n}q\x0bX\x15\x00\x00\x00epoch_loop.state_dictq\x0c}q\rX\x15\x00\x00\x00_batches_that_steppedq\x0eM\xb0\x04sssu."
	// {'epoch': 0, 'global_step': 70000}, protocol 4
	pickleProto4 = "\x80\x04\x95\"\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x05epoch\x94K\x00\x8c\x0bglobal_step\x94Jp\x11\x01\x00u."
	// {'epoch': 0, 'global_step': 2**40}, protocol 2 (LONG1)
	pickleLong = "\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x00X\x0b\x00\x00\x00global_stepq\x02\x8a\x06\x00\x00\x00\x00\x00\x01u."
)

var t0 = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// file writes name under dir (making folders) with mtime at.
func file(t *testing.T, dir, name, content string, at time.Time) {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	require.NoError(t, os.Chtimes(p, at, at))
}

// ckpt writes a .ckpt as torch.save lays out its archive ("archive/data.pkl",
// "archive/version", tensor data), cut to half its size when cut is set,
// as a save killed midway leaves it.
func ckpt(t *testing.T, dir, name, pickle string, cut bool, at time.Time) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	require.NoError(t, err)
	zw := zip.NewWriter(f)
	for n, c := range map[string]string{"archive/data.pkl": pickle, "archive/version": "3\n", "archive/data/0": string(make([]byte, 4096))} {
		w, err := zw.Create(n)
		require.NoError(t, err)
		_, err = w.Write([]byte(c))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())
	if cut {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.NoError(t, os.Truncate(p, fi.Size()/2))
	}
	require.NoError(t, os.Chtimes(p, at, at))
}

func hfState(step int) string {
	return `{"best_metric": null, "epoch": 0.5, "global_step": ` + strconv.Itoa(step) + `, "log_history": [{"loss": 2.1, "step": 10}], "max_steps": 1000}`
}

type found struct {
	step int
	name string
}

func TestFind(t *testing.T) {
	tests := []struct {
		name     string
		finder   checkpoint.Finder
		setup    func(t *testing.T, dir string)
		complete []found // newest first
		partial  []string
		why      string // of the first partial
	}{
		{"hf newest complete, partial ignored", checkpoint.Finder{Layout: checkpoint.LayoutHF}, func(t *testing.T, d string) {
			file(t, d, "checkpoint-100/model.safetensors", "w", t0)
			file(t, d, "checkpoint-100/trainer_state.json", hfState(100), t0)
			file(t, d, "checkpoint-200/model.safetensors", "w", t0.Add(time.Minute))
			file(t, d, "checkpoint-200/trainer_state.json", hfState(200), t0.Add(time.Minute))
			// Killed mid-save: weights written, no trainer_state.json yet.
			file(t, d, "checkpoint-300/model.safetensors", "w", t0.Add(2*time.Minute))
		}, []found{{200, "checkpoint-200"}, {100, "checkpoint-100"}}, []string{"checkpoint-300"}, "no trainer_state.json"},
		{"hf numeric order, cut-off state, temp folder, other names", checkpoint.Finder{Layout: checkpoint.LayoutHF}, func(t *testing.T, d string) {
			file(t, d, "checkpoint-99/trainer_state.json", hfState(99), t0)
			file(t, d, "checkpoint-1000/trainer_state.json", hfState(1000), t0)
			file(t, d, "checkpoint-1100/trainer_state.json", `{"global_step": 11`, t0)
			file(t, d, "checkpoint-1200/trainer_state.json", hfState(1199), t0)
			file(t, d, "tmp-checkpoint-1300/model.safetensors", "w", t0)
			file(t, d, "runs/events", "x", t0)
			file(t, d, "checkpoint-abc/trainer_state.json", hfState(1), t0)
		}, []found{{1000, "checkpoint-1000"}, {99, "checkpoint-99"}}, []string{"tmp-checkpoint-1300", "checkpoint-1200", "checkpoint-1100"}, "temporary folder"},
		{"lightning: step from the pickle, truncated archive ignored", checkpoint.Finder{Layout: checkpoint.LayoutLightning}, func(t *testing.T, d string) {
			ckpt(t, d, "last.ckpt", pickleLightning, false, t0.Add(time.Minute))
			ckpt(t, d, "epoch=0-step=500.ckpt", pickleLongStep(500), false, t0)
			ckpt(t, d, "epoch=1-step=1300.ckpt", pickleLightning, true, t0.Add(2*time.Minute))
			file(t, d, "hparams.yaml", "lr: 1", t0)
		}, []found{{1200, "last.ckpt"}, {500, "epoch=0-step=500.ckpt"}}, []string{"epoch=1-step=1300.ckpt"}, "not a whole torch.save archive"},
		{"lightning: protocol 4 and 64-bit steps", checkpoint.Finder{Layout: checkpoint.LayoutLightning}, func(t *testing.T, d string) {
			ckpt(t, d, "a.ckpt", pickleProto4, false, t0)
			ckpt(t, d, "b.ckpt", pickleLong, false, t0)
			ckpt(t, d, "no-pickle.ckpt", "", false, t0)
		}, []found{{1 << 40, "b.ckpt"}, {70000, "a.ckpt"}, {-1, "no-pickle.ckpt"}}, nil, ""},
		{"deepspeed: latest names the newest, a newer tag is partial", checkpoint.Finder{Layout: checkpoint.LayoutDeepSpeed}, func(t *testing.T, d string) {
			file(t, d, "global_step100/mp_rank_00_model_states.pt", "m", t0)
			file(t, d, "global_step200/mp_rank_00_model_states.pt", "m", t0.Add(time.Minute))
			file(t, d, "global_step200/zero_pp_rank_0_mp_rank_00_optim_states.pt", "o", t0.Add(time.Minute))
			file(t, d, "latest", "global_step200\n", t0.Add(time.Minute))
			file(t, d, "global_step300/mp_rank_00_model_states.pt", "m", t0.Add(2*time.Minute))
			file(t, d, "zero_to_fp32.py", "#", t0)
		}, []found{{200, "global_step200"}, {100, "global_step100"}}, []string{"global_step300"}, "still names global_step200"},
		{"deepspeed: no latest file, nothing complete", checkpoint.Finder{Layout: checkpoint.LayoutDeepSpeed}, func(t *testing.T, d string) {
			file(t, d, "global_step100/mp_rank_00_model_states.pt", "m", t0)
		}, nil, []string{"global_step100"}, "no latest file"},
		{"deepspeed: latest names a tag without model states", checkpoint.Finder{Layout: checkpoint.LayoutDeepSpeed}, func(t *testing.T, d string) {
			file(t, d, "latest", "global_step50", t0)
			file(t, d, "global_step50/zero_pp_rank_0_mp_rank_00_optim_states.pt", "o", t0)
		}, nil, []string{"global_step50"}, "no model states"},
		{"marker: default .metadata", checkpoint.Finder{Layout: checkpoint.LayoutMarker}, func(t *testing.T, d string) {
			file(t, d, "step-10/__0_0.distcp", "x", t0)
			file(t, d, "step-10/.metadata", "x", t0)
			file(t, d, "step-20/__0_0.distcp", "x", t0)
		}, []found{{10, "step-10"}}, []string{"step-20"}, "no .metadata marker"},
		{"marker: own marker name", checkpoint.Finder{Layout: checkpoint.LayoutMarker, Marker: "COMMITTED"}, func(t *testing.T, d string) {
			file(t, d, "ckpt_000300/COMMITTED", "", t0)
			file(t, d, "ckpt_000400/state.bin", "", t0)
		}, []found{{300, "ckpt_000300"}}, []string{"ckpt_000400"}, "no COMMITTED marker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			s, err := tt.finder.Find(dir)
			require.NoError(t, err)
			var got []found
			for _, c := range s.Complete {
				got = append(got, found{c.Step, c.Name})
				assert.Equal(t, filepath.Join(dir, c.Name), c.Path)
				assert.False(t, c.CompletedAt.IsZero())
			}
			assert.Equal(t, tt.complete, got)
			var partial []string
			for _, p := range s.Partial {
				partial = append(partial, p.Name)
			}
			assert.Equal(t, tt.partial, partial)
			if tt.why != "" {
				assert.Contains(t, s.Partial[0].Why, tt.why)
			}
			n, ok := s.Newest()
			assert.Equal(t, len(tt.complete) > 0, ok)
			if ok {
				assert.Equal(t, tt.complete[0].name, n.Name)
			}
		})
	}
}

// pickleLongStep is a protocol 2 pickle {'global_step': step} with a
// BININT2 value, as CPython writes steps of 256 to 65535.
func pickleLongStep(step int) string {
	return "\x80\x02}q\x00X\x0b\x00\x00\x00global_stepq\x01M" + string([]byte{byte(step), byte(step >> 8)}) + "s."
}

// TestCompletedAt: the completion time is the file written last, which is
// what tells whether a save landed during a stop grace.
func TestCompletedAt(t *testing.T) {
	dir := t.TempDir()
	file(t, dir, "checkpoint-5/model.safetensors", "w", t0)
	file(t, dir, "checkpoint-5/trainer_state.json", hfState(5), t0.Add(3*time.Second))
	s, err := checkpoint.Finder{Layout: checkpoint.LayoutHF}.Find(dir)
	require.NoError(t, err)
	n, _ := s.Newest()
	assert.True(t, n.CompletedAt.Equal(t0.Add(3*time.Second)), "%v", n.CompletedAt)

	dir = t.TempDir()
	file(t, dir, "global_step7/mp_rank_00_model_states.pt", "m", t0)
	file(t, dir, "latest", "global_step7", t0.Add(5*time.Second))
	s, err = checkpoint.Finder{Layout: checkpoint.LayoutDeepSpeed}.Find(dir)
	require.NoError(t, err)
	n, _ = s.Newest()
	assert.True(t, n.CompletedAt.Equal(t0.Add(5*time.Second)), "latest is rewritten last: %v", n.CompletedAt)
}

func TestFindBadInput(t *testing.T) {
	_, err := checkpoint.Finder{Layout: "orbax", Marker: "a/b"}.Find(t.TempDir())
	require.ErrorIs(t, err, checkpoint.ErrInvalid)
	assert.Contains(t, err.Error(), `layout "orbax"`)
	assert.Contains(t, err.Error(), `marker "a/b"`)
	_, err = checkpoint.Finder{Layout: checkpoint.LayoutHF}.Find(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
