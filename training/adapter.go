package training

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training/checkpoint"
	"github.com/gpufarm/gpufarm/training/progress"
	"github.com/gpufarm/gpufarm/workload"
)

// Manager is what the Adapter uses of a workload.Manager.
type Manager interface {
	Watch(ctx context.Context, after uint64) <-chan workload.Event
	List(f workload.Filter) []workload.Workload
	Logs(ctx context.Context, id string) ([]byte, error)
	ReportProgress(ctx context.Context, id string, p workload.Progress) error
	MarkReady(ctx context.Context, id string) error
}

var _ Manager = (*workload.Manager)(nil)

// Adapter carries out the training contract for every workload this
// package built, on one node: it is the Manager's AttemptHook (resume
// arguments from the newest complete checkpoint, the GPU order) and its
// ExitReporter (what landed on disk during the stop grace, and how the
// exit is classified), and its Run reports progress and marks inference
// servers ready. A Manager takes one of each: one Adapter serves all its
// workloads, and passes those it did not build through unchanged. It
// keeps nothing of its own that a restart would lose: what it needs of a
// workload is in the spec's LabelConfig label.
//
//	adapter, _ := training.NewAdapter(gpus.Devices())
//	m, _ := workload.New(gpus, rt, workload.WithAttemptHook(adapter), workload.WithExitReporter(adapter))
//	go adapter.Run(ctx, m)
type Adapter struct {
	devs     map[string]gpu.Device
	log      *slog.Logger
	clock    gpu.Clock
	poll     time.Duration
	stopWait time.Duration
	client   *http.Client

	mu     sync.Mutex
	m      Manager             // set while Run runs
	seen   uint64              // the last event Run has taken in
	seenCh chan struct{}       // closed and replaced at every event taken in
	stops  map[string]stopMark // when each workload's current attempt was asked to stop
	jobs   map[string]*tracked // progress state of running training workloads
}

// stopMark is when the manager decided to stop an attempt: the time of
// its preempting or stopping event, just before the signal.
type stopMark struct {
	attempt int
	at      time.Time
}

// tracked is the progress state of one attempt.
type tracked struct {
	attempt  int
	tracker  progress.Tracker
	last     workload.Progress
	reported bool
}

// Option configures an Adapter; it refuses a bad value.
type Option func(*Adapter) error

// WithLogger sets the logger; nil discards, as the default does.
func WithLogger(l *slog.Logger) Option {
	return func(a *Adapter) error {
		if l != nil {
			a.log = l
		}
		return nil
	}
}

// WithClock sets the clock of the throughput estimates; the system clock by
// default. Stop times come from the manager's events, on its clock, and are
// compared with the checkpoint files' modification times: give the
// manager a clock that follows the wall clock (its default does).
func WithClock(c gpu.Clock) Option {
	return func(a *Adapter) error {
		if c == nil {
			return errors.New("WithClock(nil): pass a clock, or leave the option out for the system clock")
		}
		a.clock = c
		return nil
	}
}

// WithPollInterval sets how often Run reads progress and probes servers
// (default 2 s).
func WithPollInterval(d time.Duration) Option {
	return func(a *Adapter) error {
		if d <= 0 {
			return fmt.Errorf("WithPollInterval(%v): want a positive interval", d)
		}
		a.poll = d
		return nil
	}
}

// WithStopWait bounds how long an exit report waits for Run to take in the
// event that stopped the workload (default 2 s); past it, the stop is taken
// to be one grace before the exit.
func WithStopWait(d time.Duration) Option {
	return func(a *Adapter) error {
		if d < 0 {
			return fmt.Errorf("WithStopWait(%v): want 0 or more", d)
		}
		a.stopWait = d
		return nil
	}
}

// WithHTTPClient sets the client of the health probes; by default one with
// no proxy whose requests time out with the poll interval.
func WithHTTPClient(c *http.Client) Option {
	return func(a *Adapter) error {
		if c == nil {
			return errors.New("WithHTTPClient(nil): pass a client, or leave the option out for the default")
		}
		a.client = c
		return nil
	}
}

// NewAdapter makes an Adapter for the node whose GPUs are devs (from
// gpu.Manager.Devices: their PCI addresses give DeepSpeed's device order).
func NewAdapter(devs []gpu.Device, opts ...Option) (*Adapter, error) {
	a := &Adapter{
		devs: map[string]gpu.Device{}, log: slog.New(slog.DiscardHandler), clock: gpu.SystemClock{},
		poll: 2 * time.Second, stopWait: 2 * time.Second,
		seenCh: make(chan struct{}), stops: map[string]stopMark{}, jobs: map[string]*tracked{},
	}
	for _, d := range devs {
		a.devs[d.UUID] = d
	}
	var errs []error
	for _, o := range opts {
		if err := o(a); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errorf(ErrInvalid, "training adapter: %w", err)
	}
	if a.client == nil {
		a.client = &http.Client{Timeout: a.poll, Transport: &http.Transport{Proxy: nil}}
	}
	return a, nil
}

// PrepareAttempt is the workload.AttemptHook: each attempt gets the GPU
// order in its environment (CUDA_VISIBLE_DEVICES by UUID in the order the
// manager injects the GPUs, so cuda:i is Workload.GPUs[i]; DeepSpeed sets
// its own list, so it gets PCI order instead, which CUDA_DEVICE_ORDER makes
// CUDA follow; GPUFARM_GPU_UUIDS names the GPUs in CUDA's order either
// way). A restarted training job (Attempt > 1) gets the resume arguments
// of the newest complete checkpoint on disk after its own; partial ones
// are skipped. A job's first attempt runs as submitted.
func (a *Adapter) PrepareAttempt(ctx context.Context, w workload.Workload) (workload.Attempt, error) {
	at := workload.Attempt{Command: slices.Clone(w.Spec.Command), Env: slices.Clone(w.Spec.Env), Mounts: slices.Clone(w.Spec.Mounts)}
	cfg, ok, err := configOf(w.Spec)
	if !ok || err != nil {
		return at, err
	}
	uuids := slices.Clone(w.GPUs)
	add := []string{"CUDA_DEVICE_ORDER=PCI_BUS_ID", "GPUFARM_ATTEMPT=" + strconv.Itoa(w.Attempt)}
	if cfg.Launcher == DeepSpeed {
		slices.SortStableFunc(uuids, func(x, y string) int { return strings.Compare(a.devs[x].PCIBusID, a.devs[y].PCIBusID) })
	} else if len(uuids) > 0 {
		add = append(add, "CUDA_VISIBLE_DEVICES="+strings.Join(uuids, ","))
	}
	add = append(add, "GPUFARM_GPU_UUIDS="+strings.Join(uuids, ","))
	at.Env = mergeEnv(add, at.Env) // the job's own settings win
	if cfg.Role != roleTraining || w.Attempt <= 1 {
		return at, nil
	}
	scan, err := cfg.finder().Find(cfg.HostDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return at, errorf(ErrInvalid, "workload %q: its checkpoint folder %s is gone: %v", w.Spec.ID, cfg.HostDir, err)
	case err != nil:
		return at, fmt.Errorf("workload %q: read its checkpoint folder to resume: %w", w.Spec.ID, err)
	}
	for _, p := range scan.Partial {
		a.log.Warn("partial checkpoint skipped", "id", w.Spec.ID, "checkpoint", p.Name, "why", p.Why)
	}
	ck, ok := scan.Newest()
	if !ok {
		a.log.Info("no complete checkpoint: the attempt starts over", "id", w.Spec.ID, "attempt", w.Attempt)
		return at, nil
	}
	at.Command = append(at.Command, resumeArgs(cfg, ck)...)
	a.log.Info("resuming from the newest complete checkpoint", "id", w.Spec.ID, "attempt", w.Attempt, "checkpoint", ck.Name, "step", ck.Step)
	return at, nil
}

// resumeArgs fills the resume template with a checkpoint.
func resumeArgs(cfg config, ck checkpoint.Checkpoint) []string {
	r := strings.NewReplacer("{path}", path.Join(cfg.Dir, ck.Name), "{dir}", cfg.Dir, "{name}", ck.Name, "{step}", strconv.Itoa(ck.Step))
	out := make([]string, len(cfg.Resume))
	for i, s := range cfg.Resume {
		out[i] = r.Replace(s)
	}
	return out
}

// ExitReport is the workload.ExitReporter: it says how the workload ended
// (ClassifyExit's class first, then the evidence) and, for a training
// job, what its checkpoint folder holds: after a stop, "checkpoint saved
// at step N during grace" or "no checkpoint written during grace (last at
// step M)", read from disk, never assumed from the job's own word.
func (a *Adapter) ExitReport(ctx context.Context, w workload.Workload, exit *isolation.ExitStatus) string {
	cfg, ok, err := configOf(w.Spec)
	if !ok {
		return ""
	}
	if err != nil {
		return err.Error()
	}
	a.mu.Lock()
	delete(a.jobs, w.Spec.ID)
	m := a.m
	a.mu.Unlock()
	in := ExitInput{Exit: exit, Stopped: w.State == workload.StatePreempting || w.State == workload.StateStopping}
	if m != nil {
		in.Log, _ = m.Logs(ctx, w.Spec.ID)
	}
	var detail string
	if cfg.Role == roleTraining {
		in.Checkpointing = true
		scan, err := cfg.finder().Find(cfg.HostDir)
		switch {
		case err != nil:
			detail = "checkpoint folder unreadable: " + err.Error()
		case in.Stopped:
			at, estimated := a.stopTime(ctx, w, exit)
			g := graceOf(scan, at)
			in.Saved = g.saved
			detail = g.String()
			if estimated {
				detail += " (the stop was not seen: taken as one grace before the exit)"
			}
		default:
			detail = lastText(scan)
		}
	}
	v := ClassifyExit(in)
	var parts []string
	for _, s := range []string{v.Evidence, detail} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	note := string(v.Class)
	if len(parts) > 0 {
		note += ": " + strings.Join(parts, "; ")
	}
	if v.Advice != "" {
		note += " (" + v.Advice + ")"
	}
	a.log.Info("workload ended", "id", w.Spec.ID, "attempt", w.Attempt, "note", note)
	return note
}

// stopTime is when the manager decided to stop w's attempt, and whether
// it had to be estimated because the event was not seen.
func (a *Adapter) stopTime(ctx context.Context, w workload.Workload, exit *isolation.ExitStatus) (time.Time, bool) {
	if !w.StopAskedAt.IsZero() {
		return w.StopAskedAt, false // the record says when the grace began
	}
	a.waitSeen(ctx, w.Seq)
	a.mu.Lock()
	s, ok := a.stops[w.Spec.ID]
	a.mu.Unlock()
	if ok && s.attempt == w.Attempt {
		return s.at, false
	}
	grace := cmp.Or(w.Spec.StopGrace, isolation.DefaultStopGrace)
	if exit != nil && !exit.ExitedAt.IsZero() {
		return exit.ExitedAt.Add(-grace), true
	}
	return a.clock.Now().Add(-grace), true
}

// waitSeen waits, within the stop wait, until Run has taken in the event
// seq; it returns at once when Run does not run.
func (a *Adapter) waitSeen(ctx context.Context, seq uint64) {
	timer := time.NewTimer(a.stopWait)
	defer timer.Stop()
	for {
		a.mu.Lock()
		if a.m == nil || a.seen >= seq {
			a.mu.Unlock()
			return
		}
		ch := a.seenCh
		a.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// grace is what a checkpoint folder shows of a stop grace.
type grace struct {
	saved   bool
	ck      checkpoint.Checkpoint // saved during the grace
	after   time.Duration         // from the stop to ck's completion
	last    *checkpoint.Checkpoint
	partial []checkpoint.Partial // begun during the grace, not finished
}

// mtimeSlack is how far a file's modification time may lag the moment it
// was written: Linux stamps files from its coarse clock, which is up to a
// tick (1 to 10 ms) behind. A save stamped within it before the stop is
// taken as one of the grace.
const mtimeSlack = 10 * time.Millisecond

// graceOf reads the scan against the time of the stop.
func graceOf(s checkpoint.Scan, stopAt time.Time) grace {
	var g grace
	stopAt = stopAt.Add(-mtimeSlack)
	for _, c := range s.Complete {
		if !c.CompletedAt.Before(stopAt) {
			if !g.saved {
				g.saved, g.ck, g.after = true, c, max(c.CompletedAt.Sub(stopAt)-mtimeSlack, 0)
			}
			continue
		}
		c := c
		g.last = &c
		break
	}
	for _, p := range s.Partial {
		if !p.ModTime.Before(stopAt) {
			g.partial = append(g.partial, p)
		}
	}
	return g
}

func (g grace) String() string {
	var s string
	switch {
	case g.saved:
		s = fmt.Sprintf("checkpoint saved%s during grace (%s, %v after the stop)", atStep(g.ck.Step), g.ck.Name, g.after.Round(time.Millisecond))
	case g.last != nil:
		s = fmt.Sprintf("no checkpoint written during grace (last%s, %s)", atStep(g.last.Step), g.last.Name)
	default:
		s = "no checkpoint written during grace (none on disk)"
	}
	for _, p := range g.partial {
		s += fmt.Sprintf("; partial %s ignored: %s", p.Name, p.Why)
	}
	return s
}

// lastText names the newest complete checkpoint of a job that ended on
// its own.
func lastText(s checkpoint.Scan) string {
	if c, ok := s.Newest(); ok {
		return fmt.Sprintf("last checkpoint%s (%s)", atStep(c.Step), c.Name)
	}
	return "no checkpoint on disk"
}

func atStep(step int) string {
	if step < 0 {
		return ""
	}
	return " at step " + strconv.Itoa(step)
}

// Run follows m until ctx ends: it takes in the events that stop
// workloads (for ExitReport), reports the progress of running training
// jobs from their logs or metrics files (ReportProgress, so Get shows it),
// and marks inference servers ready once their health endpoint answers
// (MarkReady). Start it when the manager runs; it returns ctx's error.
func (a *Adapter) Run(ctx context.Context, m Manager) error {
	a.mu.Lock()
	if a.m != nil {
		a.mu.Unlock()
		return errorf(ErrInvalid, "training adapter: Run is already running")
	}
	a.m = m
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.m = nil
		close(a.seenCh) // an exit report waiting stops waiting
		a.seenCh = make(chan struct{})
		a.mu.Unlock()
	}()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { a.watch(ctx, m); return nil })
	g.Go(func() error { a.pollLoop(ctx, m); return nil })
	_ = g.Wait()
	return ctx.Err()
}

// watch takes in the manager's events until ctx ends or the manager
// closes.
func (a *Adapter) watch(ctx context.Context, m Manager) {
	for ev := range m.Watch(ctx, 0) {
		a.mu.Lock()
		switch ev.Type {
		case workload.EventPreempting, workload.EventStopping:
			if s, ok := a.stops[ev.ID]; !ok || s.attempt != ev.Attempt { // the first ask is when the signal went
				a.stops[ev.ID] = stopMark{attempt: ev.Attempt, at: ev.Time}
			}
		case workload.EventCancelled, workload.EventExited, workload.EventFailed:
			delete(a.stops, ev.ID) // its exit report has run

		}
		a.seen = max(a.seen, ev.Seq)
		close(a.seenCh)
		a.seenCh = make(chan struct{})
		a.mu.Unlock()
	}
	if ctx.Err() == nil {
		a.log.Warn("the workload manager's event stream ended: stop times are estimated from here on")
	}
}

func (a *Adapter) pollLoop(ctx context.Context, m Manager) {
	t := time.NewTicker(a.poll)
	defer t.Stop()
	for {
		a.pollOnce(ctx, m)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollOnce reads the progress of every running training job and probes
// every server not yet ready.
func (a *Adapter) pollOnce(ctx context.Context, m Manager) {
	live := map[string]bool{}
	for _, w := range m.List(workload.Filter{States: []workload.State{workload.StateRunning, workload.StatePreempting}}) {
		cfg, ok, err := configOf(w.Spec)
		if !ok || err != nil {
			continue
		}
		live[w.Spec.ID] = true
		switch {
		case cfg.Role == roleTraining:
			a.reportProgress(ctx, m, w, cfg)
		case cfg.Health != "" && !w.Ready && w.State == workload.StateRunning:
			a.probe(ctx, m, w, cfg)
		}
	}
	a.mu.Lock()
	for id := range a.jobs {
		if !live[id] {
			delete(a.jobs, id)
		}
	}
	a.mu.Unlock()
}

// maxMetricsBytes is how much of a metrics file's end is read.
const maxMetricsBytes = 64 << 10

func (a *Adapter) reportProgress(ctx context.Context, m Manager, w workload.Workload, cfg config) {
	var data []byte
	var err error
	if cfg.Metrics != "" {
		data, err = tail(cfg.Metrics, maxMetricsBytes)
	} else {
		data, err = m.Logs(ctx, w.Spec.ID)
	}
	if err != nil {
		a.log.Debug("no progress to read yet", "id", w.Spec.ID, "err", err)
		return
	}
	p, err := progress.NewParser(cfg.Format)
	if err != nil {
		return
	}
	p.Feed(data)
	got, ok := p.Progress()
	if !ok {
		return
	}
	if got.Total == 0 && !got.EpochSteps {
		got.Total = cfg.Total
	}
	a.mu.Lock()
	t := a.jobs[w.Spec.ID]
	if t == nil || t.attempt != w.Attempt {
		t = &tracked{attempt: w.Attempt}
		a.jobs[w.Spec.ID] = t
	}
	got = t.tracker.Observe(got, a.clock.Now())
	wp := workload.Progress{Step: got.Step, Total: got.Total, Loss: got.Loss, HasLoss: got.HasLoss, Epoch: got.Epoch, Message: got.Summary()}
	switch {
	case got.SamplesPerSecond > 0:
		wp.Throughput, wp.ThroughputUnit = got.SamplesPerSecond, "samples"
	case got.StepsPerSecond > 0:
		wp.Throughput, wp.ThroughputUnit = got.StepsPerSecond, "steps"
	}
	if got.HasETA {
		wp.ETA = got.ETA
	}
	same := t.reported && t.last.Step == wp.Step && t.last.Loss == wp.Loss && t.last.Epoch == wp.Epoch
	a.mu.Unlock()
	if same {
		return
	}
	if err := m.ReportProgress(ctx, w.Spec.ID, wp); err != nil {
		a.log.Debug("report progress", "id", w.Spec.ID, "err", err)
		return
	}
	a.mu.Lock()
	t.last, t.reported = wp, true
	a.mu.Unlock()
}

// tail reads the last max bytes of a file.
func tail(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off := fi.Size() - max; off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}

func (a *Adapter) probe(ctx context.Context, m Manager, w workload.Workload, cfg config) {
	pctx, cancel := context.WithTimeout(ctx, a.poll)
	defer cancel()
	url := healthURL(cfg.Health, w.Address)
	if err := Probe(pctx, a.client, url); err != nil {
		a.log.Debug("server not ready yet", "id", w.Spec.ID, "err", err)
		return
	}
	if err := m.MarkReady(ctx, w.Spec.ID); err != nil {
		a.log.Debug("mark ready", "id", w.Spec.ID, "err", err)
		return
	}
	a.log.Info("inference server answers its health endpoint", "id", w.Spec.ID, "url", url)
}

// healthURL is the health endpoint to ask: the plan's, at the container's
// address when it has one (the tenant network).
func healthURL(planned string, addr netip.Addr) string {
	u, err := url.Parse(planned)
	if err != nil || !addr.IsValid() {
		return planned
	}
	u.Host = net.JoinHostPort(addr.String(), u.Port())
	return u.String()
}

// Probe asks a server's health endpoint once: nil when it answers 200 OK,
// as vLLM's and TGI's /health do once the model is loaded.
func Probe(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return errorf(ErrInvalid, "health probe %q: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("health probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health probe %s: %s", url, resp.Status)
	}
	return nil
}
