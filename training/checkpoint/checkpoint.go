package checkpoint

import (
	"archive/zip"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Layout is how a framework lays out its checkpoints in a folder.
type Layout string

const (
	LayoutHF        Layout = "hf"        // checkpoint-<step>/ with trainer_state.json
	LayoutLightning Layout = "lightning" // *.ckpt torch.save archives
	LayoutDeepSpeed Layout = "deepspeed" // <tag>/ folders and a latest file
	LayoutMarker    Layout = "marker"    // step folders with a marker file
)

// Layouts lists the known layouts.
var Layouts = []Layout{LayoutHF, LayoutLightning, LayoutDeepSpeed, LayoutMarker}

// DefaultMarker is the marker of LayoutMarker when none is given: PyTorch
// Distributed Checkpoint writes .metadata after every rank's data.
const DefaultMarker = ".metadata"

// Files of the layouts.
const (
	HFStateFile         = "trainer_state.json"
	DeepSpeedLatestFile = "latest"
)

// ErrInvalid is wrapped by every error of a bad Finder.
var ErrInvalid = errors.New("invalid checkpoint finder")

// Checkpoint is one complete checkpoint.
type Checkpoint struct {
	// Name is its file or folder name in the checkpoint folder, e.g.
	// "checkpoint-500", "epoch=0-step=500.ckpt", "global_step500".
	Name string
	// Path is Name joined to the folder that was read.
	Path string
	// Step is the optimizer step it was saved at, or -1 when it says
	// none.
	Step int
	// CompletedAt is when the framework finished it: the modification time
	// of what it writes last (trainer_state.json, the .ckpt file, latest,
	// the marker).
	CompletedAt time.Time
}

// Partial is a checkpoint whose save did not finish; a resume must skip it.
type Partial struct {
	Name    string
	Step    int // -1 when unknown
	Why     string
	ModTime time.Time // of the newest file in it
}

// Scan is what a Finder found in a folder.
type Scan struct {
	// Complete lists the complete checkpoints, newest first.
	Complete []Checkpoint
	// Partial lists the saves that did not finish, newest first.
	Partial []Partial
}

// Newest returns the newest complete checkpoint.
func (s Scan) Newest() (Checkpoint, bool) {
	if len(s.Complete) == 0 {
		return Checkpoint{}, false
	}
	return s.Complete[0], true
}

// Finder reads a checkpoint folder of one layout.
type Finder struct {
	Layout Layout
	// Marker is the file that marks a LayoutMarker checkpoint complete;
	// DefaultMarker when empty.
	Marker string
}

// Validate reports a Finder that cannot read anything.
func (f Finder) Validate() error {
	var probs []string
	if !slices.Contains(Layouts, f.Layout) {
		probs = append(probs, fmt.Sprintf("layout %q: want one of %v", f.Layout, Layouts))
	}
	if f.Marker != "" && (f.Layout != LayoutMarker || strings.ContainsRune(f.Marker, '/') || f.Marker == "." || f.Marker == "..") {
		probs = append(probs, fmt.Sprintf("marker %q: a plain file name, for the %q layout only", f.Marker, LayoutMarker))
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(probs, "; "))
	}
	return nil
}

// Find reads dir. A folder that does not exist is an error wrapping
// fs.ErrNotExist.
func (f Finder) Find(dir string) (Scan, error) {
	if err := f.Validate(); err != nil {
		return Scan{}, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Scan{}, fmt.Errorf("read checkpoint folder: %w", err)
	}
	var s Scan
	switch f.Layout {
	case LayoutHF:
		s = findHF(dir, ents)
	case LayoutLightning:
		s = findLightning(dir, ents)
	case LayoutDeepSpeed:
		s = findDeepSpeed(dir, ents)
	case LayoutMarker:
		s = findMarker(dir, ents, cmp.Or(f.Marker, DefaultMarker))
	}
	slices.SortStableFunc(s.Complete, func(a, b Checkpoint) int { return newer(a.Step, b.Step, a.CompletedAt, b.CompletedAt) })
	slices.SortStableFunc(s.Partial, func(a, b Partial) int { return newer(a.Step, b.Step, a.ModTime, b.ModTime) })
	return s, nil
}

// newer orders by step, newest first, and by time where a step is unknown.
func newer(sa, sb int, ta, tb time.Time) int {
	if sa >= 0 && sb >= 0 && sa != sb {
		return cmp.Compare(sb, sa)
	}
	return tb.Compare(ta)
}

var (
	hfDir     = regexp.MustCompile(`^checkpoint-([0-9]+)$`)
	hfTempDir = regexp.MustCompile(`^tmp-checkpoint-([0-9]+)$`)
	stepInNam = regexp.MustCompile(`step=([0-9]+)`)
	lastDigit = regexp.MustCompile(`([0-9]+)$`)
	dsTag     = regexp.MustCompile(`^global_step[0-9]+$`)
)

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// newestIn is the newest modification time of the entries of a folder (or
// of the file itself).
func newestIn(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	t := fi.ModTime()
	if !fi.IsDir() {
		return t
	}
	ents, _ := os.ReadDir(path)
	for _, e := range ents {
		if i, err := e.Info(); err == nil && i.ModTime().After(t) {
			t = i.ModTime()
		}
	}
	return t
}

func findHF(dir string, ents []fs.DirEntry) Scan {
	var s Scan
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if m := hfTempDir.FindStringSubmatch(e.Name()); m != nil {
			s.Partial = append(s.Partial, Partial{Name: e.Name(), Step: atoi(m[1]), Why: "a temporary folder of a save that did not finish", ModTime: newestIn(path)})
			continue
		}
		m := hfDir.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		step := atoi(m[1])
		bad := func(why string) {
			s.Partial = append(s.Partial, Partial{Name: e.Name(), Step: step, Why: why, ModTime: newestIn(path)})
		}
		state := filepath.Join(path, HFStateFile)
		fi, err := os.Stat(state)
		if err != nil {
			bad("no " + HFStateFile + ": the save did not finish")
			continue
		}
		b, err := os.ReadFile(state)
		var st struct {
			GlobalStep *int `json:"global_step"`
		}
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		switch {
		case err != nil:
			bad(HFStateFile + " is not whole JSON: the save did not finish")
		case st.GlobalStep == nil:
			bad(HFStateFile + " has no global_step")
		case *st.GlobalStep != step:
			bad(fmt.Sprintf("%s says step %d, the folder step %d", HFStateFile, *st.GlobalStep, step))
		default:
			s.Complete = append(s.Complete, Checkpoint{Name: e.Name(), Path: path, Step: step, CompletedAt: fi.ModTime()})
		}
	}
	return s
}

func findLightning(dir string, ents []fs.DirEntry) Scan {
	var s Scan
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".ckpt") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		step := -1
		if m := stepInNam.FindStringSubmatch(e.Name()); m != nil {
			step = atoi(m[1])
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed while we read
		}
		gs, err := lightningStep(path, fi.Size())
		if err != nil {
			s.Partial = append(s.Partial, Partial{Name: e.Name(), Step: step, Why: err.Error(), ModTime: fi.ModTime()})
			continue
		}
		if gs >= 0 {
			step = gs
		}
		s.Complete = append(s.Complete, Checkpoint{Name: e.Name(), Path: path, Step: step, CompletedAt: fi.ModTime()})
	}
	return s
}

// maxPickleBytes bounds the data.pkl read from a .ckpt: it holds the
// checkpoint's structure, the tensors are separate entries.
const maxPickleBytes = 64 << 20

// lightningStep opens a torch.save archive and returns the global_step of
// its pickle, or -1 when it has none. An archive that does not open, or
// lacks its data.pkl, is a save that did not finish.
func lightningStep(path string, size int64) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return -1, fmt.Errorf("cannot open: %v", err)
	}
	defer f.Close()
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return -1, fmt.Errorf("not a whole torch.save archive (%v): the save did not finish", err)
	}
	for _, zf := range zr.File {
		if zf.Name != "data.pkl" && !strings.HasSuffix(zf.Name, "/data.pkl") {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			return -1, fmt.Errorf("data.pkl unreadable: %v", err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, maxPickleBytes))
		rc.Close()
		if err != nil {
			return -1, fmt.Errorf("data.pkl unreadable: %v", err)
		}
		return pickleInt(b, "global_step"), nil
	}
	return -1, errors.New("the archive holds no data.pkl: not a torch.save checkpoint")
}

// pickleInt finds the first dict key named key in a pickle and returns the
// integer stored under it, or -1. It understands the opcodes torch.save's
// protocol 2 (and later protocols) write for a string key followed by an
// integer: BINUNICODE or SHORT_BINUNICODE, optional memo opcodes, then
// BININT1, BININT2, BININT or LONG1.
func pickleInt(b []byte, key string) int {
	for _, prefix := range [][]byte{
		append([]byte{'X'}, binary.LittleEndian.AppendUint32(nil, uint32(len(key)))...), // BINUNICODE
		{0x8c, byte(len(key))}, // SHORT_BINUNICODE
	} {
		i := bytes.Index(b, append(prefix, key...))
		if i < 0 {
			continue
		}
		rest := b[i+len(prefix)+len(key):]
		for len(rest) > 0 { // memo opcodes between key and value
			switch rest[0] {
			case 'q': // BINPUT
				rest = rest[min(2, len(rest)):]
				continue
			case 'r': // LONG_BINPUT
				rest = rest[min(5, len(rest)):]
				continue
			case 0x94: // MEMOIZE
				rest = rest[1:]
				continue
			}
			break
		}
		switch {
		case len(rest) >= 2 && rest[0] == 'K': // BININT1
			return int(rest[1])
		case len(rest) >= 3 && rest[0] == 'M': // BININT2
			return int(binary.LittleEndian.Uint16(rest[1:]))
		case len(rest) >= 5 && rest[0] == 'J': // BININT
			return int(int32(binary.LittleEndian.Uint32(rest[1:])))
		case len(rest) >= 2 && rest[0] == 0x8a: // LONG1
			n := int(rest[1])
			if n > 8 || len(rest) < 2+n {
				return -1
			}
			var v int64
			for j := n - 1; j >= 0; j-- {
				v = v<<8 | int64(rest[2+j])
			}
			return int(v)
		}
		return -1
	}
	return -1
}

func findDeepSpeed(dir string, ents []fs.DirEntry) Scan {
	var s Scan
	latestPath := filepath.Join(dir, DeepSpeedLatestFile)
	b, err := os.ReadFile(latestPath)
	latest := strings.TrimSpace(string(b))
	var latestAt time.Time
	if fi, err2 := os.Stat(latestPath); err2 == nil {
		latestAt = fi.ModTime()
	}
	latestStep := -1
	if err == nil && latest != "" {
		if m := lastDigit.FindStringSubmatch(latest); m != nil {
			latestStep = atoi(m[1])
		}
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		step := -1
		if m := lastDigit.FindStringSubmatch(e.Name()); m != nil {
			step = atoi(m[1])
		}
		states := modelStates(path)
		bad := func(why string) {
			s.Partial = append(s.Partial, Partial{Name: e.Name(), Step: step, Why: why, ModTime: newestIn(path)})
		}
		switch {
		case e.Name() != latest && len(states) == 0 && !dsTag.MatchString(e.Name()):
			continue // not a tag folder
		case latest == "":
			bad("no " + DeepSpeedLatestFile + " file names a finished save")
		case len(states) == 0:
			bad("no model states file: the save did not finish")
		case e.Name() == latest:
			s.Complete = append(s.Complete, Checkpoint{Name: e.Name(), Path: path, Step: step, CompletedAt: latestAt})
		case latestStep >= 0 && step > latestStep:
			bad(fmt.Sprintf("newer than %s, which still names %s: the save did not finish", DeepSpeedLatestFile, latest))
		default:
			// An earlier save that latest named before it moved on.
			fi, _ := os.Stat(states[0])
			var at time.Time
			if fi != nil {
				at = fi.ModTime()
			}
			s.Complete = append(s.Complete, Checkpoint{Name: e.Name(), Path: path, Step: step, CompletedAt: at})
		}
	}
	return s
}

// modelStates lists the model states files of a DeepSpeed tag folder
// (mp_rank_00_model_states.pt, or zero_pp_rank_0_mp_rank_00_model_states.pt
// under ZeRO-3).
func modelStates(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*model_states.pt"))
	return m
}

func findMarker(dir string, ents []fs.DirEntry, marker string) Scan {
	var s Scan
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		m := lastDigit.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		path, step := filepath.Join(dir, e.Name()), atoi(m[1])
		fi, err := os.Stat(filepath.Join(path, marker))
		if err != nil {
			s.Partial = append(s.Partial, Partial{Name: e.Name(), Step: step, Why: "no " + marker + " marker: the save did not finish", ModTime: newestIn(path)})
			continue
		}
		s.Complete = append(s.Complete, Checkpoint{Name: e.Name(), Path: path, Step: step, CompletedAt: fi.ModTime()})
	}
	return s
}
