package containerdtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Binaries a daemon needs, looked up in PATH.
var binaries = []string{"containerd", "containerd-shim-runc-v2", "runc"}

// ErrUnavailable: this machine cannot run a daemon (not root, or a binary
// is missing). Install the Debian packages containerd and runc and run as root.
var ErrUnavailable = errors.New("containerdtest: containerd cannot run here")

// Available reports why a daemon cannot run here, or nil.
func Available() error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "not root")
	}
	for _, b := range binaries {
		if _, err := exec.LookPath(b); err != nil {
			problems = append(problems, b+" not in PATH")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s (install the Debian packages containerd and runc, run as root)",
			ErrUnavailable, strings.Join(problems, ", "))
	}
	return nil
}

// InCI reports whether the tests run in CI (CI=true), where a missing
// daemon fails instead of skipping.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips t (fails it in CI) when a daemon cannot run here.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if InCI() {
			t.Fatalf("CI=true and %v", err)
		}
		t.Skip(err)
	}
}

// Daemon is a running private containerd.
type Daemon struct {
	// Address is the daemon's gRPC socket.
	Address string
	// Dir holds everything of this daemon: Root, State, the config and the log.
	Dir   string
	Root  string
	State string
	// Log is the daemon's combined stdout and stderr.
	Log string

	config string
	logf   func(format string, args ...any)
	net    TenantNetwork
	netMu  *os.File // holds the network's index while the daemon lives

	mu       sync.Mutex // guards cmd and exited, which Restart replaces
	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// Start starts a daemon for t and stops it when t ends. It skips t when
// the machine cannot run containerd (fails it with CI=true), and fails t
// when the daemon does not come up.
func Start(t testing.TB) *Daemon {
	t.Helper()
	Require(t)
	d, err := Launch(context.Background(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})
	return d
}

// Launch starts a daemon and waits until it answers. logf (may be nil)
// receives what was run. The caller must call Stop.
func Launch(ctx context.Context, logf func(format string, args ...any)) (*Daemon, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("/tmp", "ctrd-")
	if err != nil {
		return nil, fmt.Errorf("containerdtest: temp dir: %w", err)
	}
	// Traversable by everyone, as /var/lib and /run are: a container in a
	// user namespace is a stranger to root and must reach its bundle.
	if err := os.Chmod(dir, 0o711); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("containerdtest: temp dir: %w", err)
	}
	d := paths(dir)
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(Config(dir)), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("containerdtest: write config: %w", err)
	}
	d.config, d.logf = config, logf
	if d.net, d.netMu, err = takeNetwork(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := d.run(ctx); err != nil {
		_ = d.Stop()
		return nil, err
	}
	return d, nil
}

// run starts the daemon process and waits until it answers.
func (d *Daemon) run(ctx context.Context) error {
	logFile, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("containerdtest: log file: %w", err)
	}
	bin, _ := exec.LookPath("containerd")
	cmd := exec.Command(bin, "--config", d.config, "--log-level", "warn")
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group, so a ^C of the test does not hit it before
	// Stop has cleaned up its containers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.logf("containerdtest: running %s", strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("containerdtest: start containerd: %w", err)
	}
	exited := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	go func() { // owned by d; ends when the daemon exits
		_ = cmd.Wait()
		_ = logFile.Close()
		close(exited)
	}()
	if err := d.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}
	d.logf("containerdtest: containerd pid %d answers on %s", cmd.Process.Pid, d.Address)
	return nil
}

// Restart stops the daemon process (SIGTERM) and starts it again on the
// same folder, as an upgrade or a crash-loop would: the containers run on
// in their shims, and the new daemon finds them.
func (d *Daemon) Restart(ctx context.Context) error {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	terminate(cmd, exited)
	d.logf("containerdtest: containerd pid %d stopped for a restart", cmd.Process.Pid)
	return d.run(ctx)
}

// terminate stops a daemon process: SIGTERM, then SIGKILL after 10 s.
func terminate(cmd *exec.Cmd, exited chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Config is the configuration file of a daemon whose folder is dir, as
// Launch writes it: root, state and sockets under dir, the CRI plugin and
// the snapshotters and tracing a test does not use disabled, and no debug
// or metrics listener, so daemons of parallel test packages never collide;
// content is isolated per namespace, as a node's containerd must be
// configured (see isolation/containerd).
func Config(dir string) string {
	q := strconv.Quote
	p := paths(dir)
	return `version = 2
root = ` + q(p.Root) + `
state = ` + q(p.State) + `
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = ` + q(p.Address) + `

[ttrpc]
  address = ` + q(p.Address+".ttrpc") + `

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ` + q(filepath.Join(dir, "opt")) + `

# A namespace sees only the content it brought: one tenant cannot claim
# another's private image by its digest.
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
`
}

// paths are the places of a daemon whose folder is dir.
func paths(dir string) *Daemon {
	return &Daemon{
		Address: filepath.Join(dir, "c.sock"),
		Dir:     dir,
		Root:    filepath.Join(dir, "root"),
		State:   filepath.Join(dir, "state"),
		Log:     filepath.Join(dir, "containerd.log"),
	}
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (d *Daemon) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	d.mu.Lock()
	exited := d.exited
	d.mu.Unlock()
	var last error
	for {
		if isDone(exited) {
			return fmt.Errorf("containerdtest: containerd exited during start-up: %s", d.logTail())
		}
		if _, err := os.Stat(d.Address); err == nil {
			c, err := containerd.New(d.Address, containerd.WithTimeout(2*time.Second))
			if err == nil {
				_, err = c.Version(ctx)
				_ = c.Close()
				if err == nil {
					return nil
				}
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerdtest: containerd did not answer within %v (last error %v): %s", limit, last, d.logTail())
		case <-exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Daemon) logTail() string {
	b, _ := os.ReadFile(d.Log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// Client returns a client of the daemon, closed when t ends.
func (d *Daemon) Client(t testing.TB) *containerd.Client {
	t.Helper()
	c, err := containerd.New(d.Address, containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("containerdtest: connect to %s: %v", d.Address, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills every task of the daemon, stops it (SIGTERM, then SIGKILL
// after 10 s), ends the shims it left by process id, detaches the mounts
// under its folder and removes the folder. It is idempotent.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop() })
	return d.stopErr
}

func (d *Daemon) stop() error {
	var errs []error
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	switch {
	case cmd == nil: // never started
	case isDone(exited):
	default:
		d.cleanContainers()
		terminate(cmd, exited)
	}
	for _, pid := range d.shimPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	d.removeBridges()
	if d.netMu != nil {
		_ = d.netMu.Close()
	}
	for _, m := range mountsUnder(d.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanContainers kills and deletes every task and container, so the
// shims exit and runc removes their cgroups.
func (d *Daemon) cleanContainers() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := containerd.New(d.Address, containerd.WithTimeout(2*time.Second))
	if err != nil {
		return
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		return
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := c.Containers(nctx)
		if err != nil {
			continue
		}
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				if st, err := task.Wait(nctx); err == nil {
					_ = task.Kill(nctx, syscall.SIGKILL, containerd.WithKillAll)
					select {
					case <-st:
					case <-time.After(5 * time.Second):
					}
				}
				_, _ = task.Delete(nctx, containerd.WithProcessKill)
			}
			_ = ctr.Delete(nctx, containerd.WithSnapshotCleanup)
		}
	}
}

// shimPIDs lists the processes started for this daemon: shims carry its
// address on their command line.
func (d *Daemon) shimPIDs() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for _, a := range args {
			if a == d.Address || a == d.Address+".ttrpc" {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Shared is one daemon for a whole test package, started on first use
// and stopped when Run's tests end. The zero value is ready to use.
type Shared struct {
	once sync.Once
	d    *Daemon
	err  error
	logs []string
	mu   sync.Mutex
}

// Run runs the package's tests and stops the daemon after them. Use it
// as os.Exit(shared.Run(m)) in TestMain.
func (s *Shared) Run(m *testing.M) int {
	code := m.Run()
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d != nil {
		if err := d.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "containerdtest: stop: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Daemon returns the package's daemon, starting it on first call. It
// skips t when the machine cannot run containerd (fails it with CI=true)
// and fails t when the daemon did not come up.
func (s *Shared) Daemon(t testing.TB) *Daemon {
	t.Helper()
	Require(t)
	s.once.Do(func() {
		d, err := Launch(context.Background(), func(format string, args ...any) {
			s.logs = append(s.logs, fmt.Sprintf(format, args...))
		})
		s.mu.Lock()
		s.d, s.err = d, err
		s.mu.Unlock()
	})
	for _, l := range s.logs {
		t.Log(l)
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.d
}
