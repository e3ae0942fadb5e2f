package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/internal/logfile"
)

// Runtime runs each "container" as a plain child process of the SDK, for
// development machines without containerd. IT ISOLATES NOTHING: the
// process runs as the SDK's user, sees every GPU, every file and the host
// network, and no limit is enforced. It says so in a warning when it is
// made and again for every spec it cannot honour.
//
// What it does honour: Args (Args[0] is a host executable, looked up in a
// PATH of /usr/local/bin:/usr/bin:/bin unless Env sets PATH), Env (the
// process gets only these variables, plus CUDA_VISIBLE_DEVICES and
// NVIDIA_VISIBLE_DEVICES naming the spec's GPU UUIDs, which Env cannot
// override, so CUDA programs use only their GPUs by convention),
// WorkingDir, stop signal and grace, labels, tenants (as a name only, with
// their policy checked) and capped logs. Image is recorded, not used.
// Processes do not outlive the SDK: Close kills those still running, and a
// parent-death signal kills each one if the SDK dies first; there is
// nothing to recover. It refuses to run as root without WithUnsafeRoot.
type Runtime struct {
	opts options
	log  *slog.Logger

	mu     sync.Mutex
	procs  map[isolation.Ref]*proc
	closed bool
	wg     sync.WaitGroup // one per running process's waiter
}

var _ isolation.Runtime = (*Runtime)(nil)

type proc struct {
	spec    isolation.Spec // defaulted
	created time.Time
	logPath string

	// Set by Start; gone, exit and stop under Process.mu; done closed at exit.
	cmd  *exec.Cmd
	logw *logfile.Capped
	done chan struct{}
	exit *isolation.ExitStatus
	stop string
	// gone: the process has exited and may be reaped at any moment, after
	// which its PID (and process group ID) can be reused. Nothing signals
	// it once gone is set; see reap.
	gone bool
}

// New makes the non-isolating runtime and warns that it isolates
// nothing. WithLogDir is required (there is no default a non-root user can
// write); bad options fail with isolation.ErrInvalid, every one listed.
func New(opts ...Option) (*Runtime, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 && !o.unsafeRoot {
		return nil, fmt.Errorf("%w: the process runtime isolates nothing, so as root its workloads would own the host: "+
			"run as an unprivileged user, use the containerd runtime, or pass WithUnsafeRoot for programs you trust", isolation.ErrPermission)
	}
	if err := os.MkdirAll(o.logDir, 0o750); err != nil {
		return nil, fmt.Errorf("isolation: log dir: %w", err)
	}
	o.logger.Warn("process runtime: NOTHING IS ISOLATED; workloads run as host processes of this user, " +
		"see every GPU, file and network, and no limit is enforced; use it on development machines only")
	return &Runtime{opts: o, log: o.logger, procs: map[isolation.Ref]*proc{}}, nil
}

// Create validates spec and records it; nothing runs until Start.
func (p *Runtime) Create(ctx context.Context, spec isolation.Spec) (isolation.Info, error) {
	errs := []error{spec.Validate()}
	pol := p.opts.tenancy.For(spec.Tenant)
	s := pol.Apply(spec).WithDefaults()
	errs = append(errs, pol.Check(s))
	if len(s.Args) == 0 {
		errs = append(errs, fmt.Errorf("%w: spec.Args is empty: the process runtime runs Args[0] on the host", isolation.ErrInvalid))
	} else if _, err := p.lookPath(s); err != nil {
		errs = append(errs, fmt.Errorf("%w: spec.Args[0] %q: %v", isolation.ErrNotFound, s.Args[0], err))
	}
	if err := errors.Join(errs...); err != nil {
		return isolation.Info{}, err
	}
	ref := isolation.Ref{Tenant: s.Tenant, ID: s.ID}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return isolation.Info{}, fmt.Errorf("%w: runtime closed", isolation.ErrUnavailable)
	}
	if _, ok := p.procs[ref]; ok {
		return isolation.Info{}, fmt.Errorf("%w: container %s: delete it or choose another ID", isolation.ErrExists, ref)
	}
	var ignored []string
	if s.User != isolation.DefaultUser {
		ignored = append(ignored, "user")
	}
	if s.Limits != (isolation.Limits{}) {
		ignored = append(ignored, "limits")
	}
	if len(s.Mounts) > 0 {
		ignored = append(ignored, "mounts (the process sees host paths)")
	}
	if s.Network != isolation.NetworkHost {
		ignored = append(ignored, "network "+string(s.Network)+" (the process has the host network)")
	}
	if len(ignored) > 0 {
		p.log.Warn("process runtime: not isolated; spec settings ignored", "container", ref.String(), "ignored", strings.Join(ignored, ", "))
	} else {
		// New already warned that nothing is isolated.
		p.log.Info("process runtime: not isolated", "container", ref.String())
	}
	pr := &proc{spec: s, created: p.opts.clock.Now(), logPath: filepath.Join(p.opts.logDir, isolation.Namespace(s.Tenant), s.ID+".log")}
	p.procs[ref] = pr
	return p.infoLocked(ref, pr), nil
}

func (p *Runtime) lookPath(s isolation.Spec) (string, error) {
	name := s.Args[0]
	if strings.Contains(name, "/") {
		st, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", errors.New("not an executable file")
		}
		return name, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, e := range s.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		c := filepath.Join(dir, name)
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("not found in PATH %s", path)
}

func (p *Runtime) get(ref isolation.Ref) (*proc, error) {
	if p.closed {
		return nil, fmt.Errorf("%w: runtime closed", isolation.ErrUnavailable)
	}
	pr, ok := p.procs[ref]
	if !ok {
		return nil, fmt.Errorf("%w: container %s", isolation.ErrNotFound, ref)
	}
	return pr, nil
}

// idleLocked finds a process that is not running (created, or exited and
// reaped); hint says what to do about a running one. The caller holds p.mu.
func (p *Runtime) idleLocked(ref isolation.Ref, hint string) (*proc, error) {
	pr, err := p.get(ref)
	if err != nil {
		return nil, err
	}
	if pr.done != nil && pr.exit == nil {
		return nil, fmt.Errorf("%w: container %s is running: %s", isolation.ErrState, ref, hint)
	}
	return pr, nil
}

// Start runs the process, or runs it again once it has exited.
func (p *Runtime) Start(ctx context.Context, ref isolation.Ref) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, err := p.idleLocked(ref, "stop it first")
	if err != nil {
		return err
	}
	bin, err := p.lookPath(pr.spec)
	if err != nil {
		return fmt.Errorf("%w: spec.Args[0] %q: %v", isolation.ErrNotFound, pr.spec.Args[0], err)
	}
	if err := os.MkdirAll(filepath.Dir(pr.logPath), 0o750); err != nil {
		return fmt.Errorf("isolation: log dir: %w", err)
	}
	logw, err := logfile.NewCapped(pr.logPath, p.opts.logCap)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, pr.spec.Args[1:]...)
	cmd.Env = processEnv(pr.spec)
	cmd.Dir = pr.spec.WorkingDir
	cmd.Stdout, cmd.Stderr = logw, logw
	// Stop signals the whole group; and the process dies with the SDK, as
	// nothing here could find it again.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second // a leftover child holding stdout must not block the exit
	if err := cmd.Start(); err != nil {
		_ = logw.Close()
		return fmt.Errorf("isolation: start %s: %w", ref, err)
	}
	pr.cmd, pr.logw, pr.done, pr.exit, pr.stop, pr.gone = cmd, logw, make(chan struct{}), nil, "", false
	p.wg.Add(1)
	go p.reap(pr) // ends when the process exits
	p.log.Info("process started", "container", ref.String(), "pid", cmd.Process.Pid)
	return nil
}

// processEnv is the process's whole environment: a PATH, the spec's Env,
// and last the SDK's GPU variables, which the spec cannot override: they
// are all that keeps a process of this runtime to its GPUs.
func processEnv(s isolation.Spec) []string {
	var uuids []string
	for _, g := range s.GPUs {
		if g.UUID != "" {
			uuids = append(uuids, g.UUID)
		}
	}
	visible := strings.Join(uuids, ",")
	if visible == "" {
		visible = "void"
	}
	gpuVars := []string{"CUDA_VISIBLE_DEVICES=" + visible, "NVIDIA_VISIBLE_DEVICES=" + visible}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	for _, e := range s.Env {
		k, _, _ := strings.Cut(e, "=")
		if k != "CUDA_VISIBLE_DEVICES" && k != "NVIDIA_VISIBLE_DEVICES" {
			env = append(env, e) // later entries win, PATH included
		}
	}
	return append(env, gpuVars...)
}

// reap waits for the process and records its end.
//
// PIDs are recycled once a process is reaped, so a signal sent by PID
// after the reap could hit a stranger. To close that gap, reap first
// waits for the exit without reaping (waitid WNOWAIT: the process stays a
// zombie, its PID and process group ID stay taken), then sets gone under
// p.mu, and only then reaps (cmd.Wait). Every signal is sent under p.mu
// after checking gone, so it reaches the process, its group, or a zombie,
// never a recycled PID.
func (p *Runtime) reap(pr *proc) {
	defer p.wg.Done()
	pid := pr.cmd.Process.Pid
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			// Any other error (none is expected for our own child) falls
			// through to cmd.Wait, which reports it.
			break
		}
	}
	p.mu.Lock()
	pr.gone = true
	p.mu.Unlock()
	err := pr.cmd.Wait()
	code := 0
	if pr.cmd.ProcessState != nil {
		code = pr.cmd.ProcessState.ExitCode()
		if ws, ok := pr.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	} else if err != nil {
		code = -1
	}
	_ = pr.logw.Close()
	p.mu.Lock()
	es := isolation.ExitStatus{Code: code, Reason: isolation.ReasonExited, ExitedAt: p.opts.clock.Now()}
	switch pr.stop {
	case "killed":
		es.Reason = isolation.ReasonKilled
	case "requested":
		es.Reason = isolation.ReasonStopped
	}
	pr.exit = &es
	close(pr.done)
	p.mu.Unlock()
}

// signalLocked sends sig to the process group unless the process is
// gone, and says whether it did. The caller holds p.mu.
func (pr *proc) signalLocked(sig syscall.Signal) bool {
	if pr.done == nil || pr.gone {
		return false
	}
	return syscall.Kill(-pr.cmd.Process.Pid, sig) == nil
}

// Signal sends sig to the process.
func (p *Runtime) Signal(ctx context.Context, ref isolation.Ref, sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, err := p.get(ref)
	if err != nil {
		return err
	}
	if pr.done == nil || pr.gone {
		return fmt.Errorf("%w: container %s is not running", isolation.ErrState, ref)
	}
	// Under p.mu and not gone: the PID is still this process's.
	if err := syscall.Kill(pr.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("isolation: signal %s: %w", ref, err)
	}
	return nil
}

// Stop signals the process group, waits the grace, then kills the group.
func (p *Runtime) Stop(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	p.mu.Lock()
	pr, err := p.get(ref)
	if err != nil {
		p.mu.Unlock()
		return isolation.ExitStatus{}, err
	}
	if pr.done == nil {
		p.mu.Unlock()
		return isolation.ExitStatus{}, fmt.Errorf("%w: container %s was never started", isolation.ErrState, ref)
	}
	done := pr.done
	// Recorded only if the signal went out: a process that exited on its
	// own was not stopped.
	if pr.signalLocked(pr.spec.StopSignal) {
		pr.stop = "requested"
	}
	p.mu.Unlock()
	timer := time.NewTimer(pr.spec.StopGrace)
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return isolation.ExitStatus{}, ctx.Err()
	case <-timer.C:
		p.mu.Lock()
		if pr.signalLocked(syscall.SIGKILL) {
			pr.stop = "killed"
		}
		p.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return isolation.ExitStatus{}, ctx.Err()
		}
	}
	return p.Wait(ctx, ref)
}

// Wait blocks until the process exits.
func (p *Runtime) Wait(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	p.mu.Lock()
	pr, err := p.get(ref)
	if err == nil && pr.done == nil {
		err = fmt.Errorf("%w: container %s was never started", isolation.ErrState, ref)
	}
	p.mu.Unlock()
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	select {
	case <-pr.done:
	case <-ctx.Done():
		return isolation.ExitStatus{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return *pr.exit, nil
}

// Delete forgets a process that is not running and removes its logs.
func (p *Runtime) Delete(ctx context.Context, ref isolation.Ref) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, err := p.idleLocked(ref, "stop it before deleting")
	if err != nil {
		return err
	}
	delete(p.procs, ref)
	return logfile.Remove(pr.logPath)
}

// Inspect describes one process.
func (p *Runtime) Inspect(ctx context.Context, ref isolation.Ref) (isolation.Info, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, err := p.get(ref)
	if err != nil {
		return isolation.Info{}, err
	}
	return p.infoLocked(ref, pr), nil
}

func (p *Runtime) infoLocked(ref isolation.Ref, pr *proc) isolation.Info {
	info := isolation.InfoFromLabels(ref, pr.spec.ContainerLabels())
	info.CreatedAt, info.LogPath = pr.created, pr.logPath
	switch {
	case pr.exit != nil:
		info.State = isolation.StateStopped
		es := *pr.exit
		info.Exit = &es
		info.PID = pr.cmd.Process.Pid
	case pr.done != nil:
		info.State = isolation.StateRunning
		info.PID = pr.cmd.Process.Pid
	}
	return info
}

// List describes the processes that match filter.
func (p *Runtime) List(ctx context.Context, filter isolation.Filter) ([]isolation.Info, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%w: runtime closed", isolation.ErrUnavailable)
	}
	var out []isolation.Info
	for ref, pr := range p.procs {
		if filter.Match(ref.Tenant, pr.spec.ContainerLabels()) {
			out = append(out, p.infoLocked(ref, pr))
		}
	}
	return out, nil
}

// Logs reads the process's output, at most the log cap.
func (p *Runtime) Logs(ctx context.Context, ref isolation.Ref) (io.ReadCloser, error) {
	p.mu.Lock()
	pr, err := p.get(ref)
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return logfile.Open(pr.logPath)
}

// Close kills the processes still running (they cannot be recovered) and
// waits for them. It is idempotent.
func (p *Runtime) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for ref, pr := range p.procs {
		if pr.signalLocked(syscall.SIGKILL) {
			p.log.Warn("process runtime closing: killed a running process", "container", ref.String())
			pr.stop = "killed"
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}
