package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Format is what a job writes its progress in.
type Format string

const (
	FormatHF        Format = "hf"
	FormatLightning Format = "lightning"
	FormatDeepSpeed Format = "deepspeed"
	FormatJSONLines Format = "jsonl"
)

// Formats lists the known formats.
var Formats = []Format{FormatHF, FormatLightning, FormatDeepSpeed, FormatJSONLines}

// ErrInvalid is wrapped by the error of an unknown format.
var ErrInvalid = errors.New("invalid progress format")

// Progress is what is known of a job's progress. Zero values of the
// optional fields mean unknown, except where a Has field says.
type Progress struct {
	Step  int // optimizer steps done (see the formats for Lightning)
	Total int // steps in all; 0 when unknown
	// Loss is the latest training loss, valid when HasLoss.
	Loss    float64
	HasLoss bool
	// Epoch is fractional (1.5: half way through the second), valid when
	// HasEpoch.
	Epoch            float64
	HasEpoch         bool
	LearningRate     float64
	StepsPerSecond   float64
	SamplesPerSecond float64
	// ETA is the time left, valid when HasETA.
	ETA    time.Duration
	HasETA bool
	// EpochSteps says that Step and Total count the batches of the
	// current epoch, not of the run (a Lightning bar without global_step).
	EpochSteps bool
}

// Summary says the throughput and the time left in words, for a record:
// "3.33 steps/s, 1000 samples/s, ETA 20m27s".
func (p Progress) Summary() string {
	var parts []string
	if p.StepsPerSecond > 0 {
		parts = append(parts, strconv.FormatFloat(p.StepsPerSecond, 'g', 3, 64)+" steps/s")
	}
	if p.SamplesPerSecond > 0 {
		parts = append(parts, strconv.FormatFloat(p.SamplesPerSecond, 'g', 4, 64)+" samples/s")
	}
	if p.HasETA {
		parts = append(parts, "ETA "+p.ETA.Round(time.Second).String())
	}
	return strings.Join(parts, ", ")
}

// Parser reads the lines of one job in one format. It is not safe for
// concurrent use.
type Parser struct {
	format Format
	p      Progress
	seen   bool
}

// NewParser returns a parser of format f.
func NewParser(f Format) (*Parser, error) {
	if !slices.Contains(Formats, f) {
		return nil, fmt.Errorf("%w: %q: want one of %v", ErrInvalid, f, Formats)
	}
	return &Parser{format: f}, nil
}

// Progress returns what the lines so far said, and false when none said
// anything of progress. A Tracker fills in what they did not.
func (p *Parser) Progress() (Progress, bool) { return p.p, p.seen }

// Feed reads a chunk of output: lines end at '\n' or '\r' (progress bars
// redraw themselves with '\r').
func (p *Parser) Feed(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			p.Line(string(b))
			return
		}
		p.Line(string(b[:i]))
		b = b[i+1:]
	}
}

// Line reads one line and reports whether it said anything of progress.
func (p *Parser) Line(line string) bool {
	var ok bool
	switch p.format {
	case FormatHF:
		ok = p.hfDict(line) || p.bar(line)
		if !ok {
			ok = p.deepSpeed(line) // the Trainer's DeepSpeed integration logs these too
		}
	case FormatLightning:
		ok = p.bar(line)
	case FormatDeepSpeed:
		ok = p.deepSpeed(line)
	case FormatJSONLines:
		ok = p.jsonLine(line)
	}
	p.seen = p.seen || ok
	return ok
}

var (
	dictEntry = regexp.MustCompile(`'([A-Za-z0-9_/.-]+)':\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?|nan|inf|-inf)`)
	// A tqdm bar: "desc:  8%|███ | 1999/24128 [1:52:09<20:27:23,  3.33s/it, k=v, ...]".
	barRE   = regexp.MustCompile(`(?:(Epoch\s+([0-9]+))\s*:\s*)?\s*[0-9]+%\|[^|]*\|\s*([0-9]+)/([0-9]+)\s*\[([0-9:]+)<([0-9:?]+),\s*([0-9.?]+)\s*(it/s|s/it)((?:,\s*[^\]]*)?)\]`)
	postfix = regexp.MustCompile(`([A-Za-z0-9_/.-]+)=(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)`)
	// DeepSpeed.
	dsStep    = regexp.MustCompile(`\] step=([0-9]+), skipped=[0-9]+, lr=\[([-0-9.eE+]+)`)
	dsTimer   = regexp.MustCompile(`epoch=([0-9]+)/micro_step=[0-9]+/global_step=([0-9]+), RunningAvgSamplesPerSec=([0-9.eE+-]+)`)
	dsTimerV0 = regexp.MustCompile(`\] ([0-9]+)/([0-9]+), SamplesPerSec=([0-9.eE+-]+)`)
	megatron  = regexp.MustCompile(`iteration\s+([0-9]+)/\s*([0-9]+)\s*\|`)
	mgLoss    = regexp.MustCompile(`\|\s*lm_loss:\s*([-0-9.eE+]+)`)
	mgTime    = regexp.MustCompile(`elapsed time per iteration \(ms\):\s*([0-9.]+)`)
	mgLR      = regexp.MustCompile(`learning rate:\s*([-0-9.eE+]+)`)
)

func float(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// hfDict reads a Trainer log dict. The end-of-training summary
// (train_runtime, train_loss) is not progress and is skipped.
func (p *Parser) hfDict(line string) bool {
	s := strings.TrimSpace(line)
	if i := strings.IndexByte(s, '{'); i > 0 {
		s = s[i:] // a bar redrawn on the same line before the dict
	}
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") || strings.Contains(s, "'train_runtime'") {
		return false
	}
	ok := false
	for _, m := range dictEntry.FindAllStringSubmatch(s, -1) {
		v, valid := float(m[2])
		if !valid {
			continue
		}
		switch m[1] {
		case "loss":
			p.p.Loss, p.p.HasLoss, ok = v, true, true
		case "epoch":
			p.p.Epoch, p.p.HasEpoch, ok = v, true, true
		case "learning_rate":
			p.p.LearningRate, ok = v, true
		}
	}
	return ok
}

// bar reads a tqdm progress bar, with Lightning's postfix.
func (p *Parser) bar(line string) bool {
	ms := barRE.FindAllStringSubmatch(line, -1)
	if ms == nil {
		return false
	}
	m := ms[len(ms)-1] // the last redraw on the line
	n, total := atoi(m[3]), atoi(m[4])
	if total == 0 {
		return false
	}
	p.p.Step, p.p.Total = n, total
	if rate, ok := float(m[7]); ok && rate > 0 {
		if m[8] == "s/it" {
			rate = 1 / rate
		}
		p.p.StepsPerSecond = rate
	}
	if left, ok := clock(m[6]); ok && p.format == FormatHF {
		p.p.ETA, p.p.HasETA = left, true
	}
	p.p.EpochSteps = m[1] != ""
	if p.p.EpochSteps { // Lightning: "Epoch N"
		p.p.Epoch, p.p.HasEpoch = float64(atoi(m[2]))+float64(n)/float64(total), true
		p.p.HasETA = false // the time left of this epoch only
	}
	for _, kv := range postfix.FindAllStringSubmatch(m[9], -1) {
		v, ok := float(kv[2])
		if !ok {
			continue
		}
		switch {
		case kv[1] == "global_step":
			p.p.Step, p.p.Total, p.p.EpochSteps = int(v), 0, false
		case kv[1] == "train_loss" || kv[1] == "loss" || kv[1] == "train_loss_step" || kv[1] == "reduced_train_loss":
			p.p.Loss, p.p.HasLoss = v, true
		}
	}
	return true
}

// clock reads tqdm's "1:52:09" or "08:00"; "?" is unknown.
func clock(s string) (time.Duration, bool) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, false
	}
	var d time.Duration
	for _, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil {
			return 0, false
		}
		d = d*60 + time.Duration(n)
	}
	return d * time.Second, true
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func (p *Parser) deepSpeed(line string) bool {
	ok := false
	if m := dsStep.FindStringSubmatch(line); m != nil {
		p.p.Step, ok = atoi(m[1]), true
		if lr, valid := float(m[2]); valid {
			p.p.LearningRate = lr
		}
	}
	if m := dsTimer.FindStringSubmatch(line); m != nil {
		p.p.Epoch, p.p.HasEpoch = float64(atoi(m[1])), true
		p.p.Step, ok = atoi(m[2]), true
		if r, valid := float(m[3]); valid {
			p.p.SamplesPerSecond = r
		}
	} else if m := dsTimerV0.FindStringSubmatch(line); m != nil {
		p.p.Epoch, p.p.HasEpoch = float64(atoi(m[1])), true
		p.p.Step, ok = atoi(m[2]), true
		if r, valid := float(m[3]); valid {
			p.p.SamplesPerSecond = r
		}
	}
	if m := megatron.FindStringSubmatch(line); m != nil {
		p.p.Step, p.p.Total, ok = atoi(m[1]), atoi(m[2]), true
		if l := mgLoss.FindStringSubmatch(line); l != nil {
			if v, valid := float(l[1]); valid {
				p.p.Loss, p.p.HasLoss = v, true
			}
		}
		if t := mgTime.FindStringSubmatch(line); t != nil {
			if ms, valid := float(t[1]); valid && ms > 0 {
				p.p.StepsPerSecond = 1000 / ms
			}
		}
		if l := mgLR.FindStringSubmatch(line); l != nil {
			if v, valid := float(l[1]); valid {
				p.p.LearningRate = v
			}
		}
	}
	return ok
}

// jsonLine reads one metrics line; lines that are not JSON objects are
// skipped.
func (p *Parser) jsonLine(line string) bool {
	s := strings.TrimSpace(line)
	if !strings.HasPrefix(s, "{") {
		return false
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return false
	}
	num := func(keys ...string) (float64, bool) {
		for _, k := range keys {
			if v, ok := m[k].(float64); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
				return v, true
			}
		}
		return 0, false
	}
	ok := false
	if v, has := num("step", "global_step"); has {
		p.p.Step, ok = int(v), true
	}
	if v, has := num("total_steps", "max_steps", "total"); has {
		p.p.Total, ok = int(v), true
	}
	if v, has := num("loss", "train_loss"); has {
		p.p.Loss, p.p.HasLoss, ok = v, true, true
	}
	if v, has := num("epoch"); has {
		p.p.Epoch, p.p.HasEpoch, ok = v, true, true
	}
	if v, has := num("learning_rate", "lr"); has {
		p.p.LearningRate, ok = v, true
	}
	if v, has := num("steps_per_second"); has {
		p.p.StepsPerSecond, ok = v, true
	}
	if v, has := num("samples_per_second"); has {
		p.p.SamplesPerSecond, ok = v, true
	}
	if v, has := num("eta_seconds"); has && v >= 0 {
		p.p.ETA, p.p.HasETA, ok = seconds(v), true, true
	}
	return ok
}

// Tracker works out the throughput and the time left of one job from
// successive observations, for output that says neither. Its zero value
// is ready.
type Tracker struct {
	firstStep int
	firstAt   time.Time
}

// Observe fills in StepsPerSecond (the average since the first
// observation) and the ETA (the steps left at that rate; not for counts
// of one epoch), where p lacks them, and returns the result. A step lower than the first (a restart) starts over.
func (t *Tracker) Observe(p Progress, now time.Time) Progress {
	if t.firstAt.IsZero() || p.Step < t.firstStep {
		t.firstStep, t.firstAt = p.Step, now
		return p
	}
	if p.StepsPerSecond == 0 && p.Step > t.firstStep {
		if dt := now.Sub(t.firstAt).Seconds(); dt > 0 {
			p.StepsPerSecond = float64(p.Step-t.firstStep) / dt
		}
	}
	if !p.HasETA && !p.EpochSteps && p.StepsPerSecond > 0 && p.Total > 0 && p.Step <= p.Total {
		p.ETA, p.HasETA = seconds(float64(p.Total-p.Step)/p.StepsPerSecond), true
	}
	return p
}
