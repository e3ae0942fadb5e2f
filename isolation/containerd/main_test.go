package containerd_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/internal/syncbuf"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// One containerd for the package, started by the first test that needs it.
var daemon containerdtest.Shared

func TestMain(m *testing.M) {
	code := daemon.Run(m)
	images.cleanup()
	os.Exit(code)
}

const (
	probeRef   = "gpufarm.test/probe:latest"
	trainerRef = "gpufarm.test/faketrainer:latest"
)

// images are the test images, built once per package run.
var images imageSet

type imageSet struct {
	once sync.Once
	dir  string
	tars map[string]string // ref -> tar
	err  error
}

func (s *imageSet) tar(t testing.TB, ref string) string {
	t.Helper()
	s.once.Do(func() {
		s.dir, s.err = os.MkdirTemp("", "isolation-images-")
		if s.err != nil {
			return
		}
		s.tars = map[string]string{}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for ref, pkg := range map[string]string{
			probeRef:   "github.com/gpufarm/gpufarm/internal/probe",
			trainerRef: "github.com/gpufarm/gpufarm/internal/faketrainer",
		} {
			p := filepath.Join(s.dir, filepath.Base(pkg)+".tar")
			if s.err = ociimage.BuildFile(ctx, ociimage.Spec{Package: pkg, Ref: ref, SetuidCopy: true}, p); s.err != nil {
				return
			}
			s.tars[ref] = p
		}
	})
	require.NoError(t, s.err, "build test images")
	return s.tars[ref]
}

func (s *imageSet) cleanup() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// simulatedGPUs are two GPUs as the simulator would report them.
var simulatedGPUs = []gpu.Device{
	{Index: 0, UUID: "GPU-11111111-2222-3333-4444-000000000000", Name: "NVIDIA GeForce RTX 3080", Minor: 0, PCIBusID: "0000:01:00.0"},
	{Index: 1, UUID: "GPU-11111111-2222-3333-4444-000000000001", Name: "NVIDIA GeForce RTX 3080", Minor: 1, PCIBusID: "0000:02:00.0"},
}

// fixture is a runtime on the package's daemon with simulated GPUs.
type fixture struct {
	d      *containerdtest.Daemon
	client *ctrd.Client
	rt     *containerd.Runtime
	logDir string
	cdi    containerd.SimulatedCDI
	opts   []containerd.Option
	logw   *syncbuf.Buffer
	// runtimes are closed when the test ends, after its containers are gone.
	runtimes []*containerd.Runtime
}

// logText is what the runtimes of this fixture logged.
func (f *fixture) logText() string { return f.logw.String() }

func newFixture(t testing.TB, extra ...containerd.Option) *fixture {
	t.Helper()
	d := daemon.Daemon(t)
	f := &fixture{d: d, client: d.Client(t), logDir: filepath.Join(t.TempDir(), "logs"), logw: &syncbuf.Buffer{}}
	var err error
	f.cdi, err = containerd.WriteSimulatedCDI(filepath.Join(t.TempDir(), "cdi"), simulatedGPUs)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(f.logw, nil))
	f.opts = append([]containerd.Option{
		containerd.WithTenancy(testTenancy()),
		containerd.WithAddress(d.Address),
		containerd.WithLogDir(f.logDir),
		containerd.WithCDISpecDirs(f.cdi.SpecDir),
		containerd.WithLogger(logger),
		containerd.WithNetwork(testNetwork(d)),
	}, extra...)
	// Registered before any container's cleanup, so it runs after them all.
	t.Cleanup(func() {
		for _, rt := range f.runtimes {
			_ = rt.Close()
		}
	})
	f.rt = f.newRuntime(t)
	return f
}

// testNetwork is the daemon's own tenant network.
func testNetwork(d *containerdtest.Daemon) containerd.NetworkConfig {
	n := d.Network()
	return containerd.NetworkConfig{Subnet: n.Subnet, BridgePrefix: n.BridgePrefix,
		PluginDirs: containerd.DefaultCNIPluginDirs(), StateDir: n.StateDir}
}

// testTenancy lets the tests' tenants mount the temp dir, writable, and use
// the host network: the tests of those features need them. The policy's
// own rules are tested with the default tenancy.
func testTenancy() isolation.Tenancy {
	t := isolation.DefaultTenancy(isolation.DefaultMiningTenant)
	t.Default.MountRoots, t.Default.WritableMounts = []string{os.TempDir()}, true
	t.Default.Networks = append(t.Default.Networks, isolation.NetworkHost)
	t.Default.Kinds = nil
	t.Tenants["strict"] = isolation.DefaultTenancy(isolation.DefaultMiningTenant).Default
	return t
}

// newRuntime makes another runtime of the fixture's options and extra.
func (f *fixture) newRuntime(t testing.TB, extra ...containerd.Option) *containerd.Runtime {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := containerd.New(ctx, append(append([]containerd.Option(nil), f.opts...), extra...)...)
	require.NoError(t, err)
	f.runtimes = append(f.runtimes, rt)
	return rt
}

// importImage imports a test image for tenant.
func (f *fixture) importImage(t testing.TB, tenant, ref string) {
	t.Helper()
	tar := images.tar(t, ref)
	r, err := os.Open(tar)
	require.NoError(t, err)
	defer r.Close()
	names, err := f.rt.Import(ctx(t), tenant, r)
	require.NoError(t, err)
	require.Contains(t, names, ref)
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// run creates and starts spec, waits for it to exit and returns its exit
// status and output. The container is deleted when the test ends.
func (f *fixture) run(t testing.TB, spec isolation.Spec) (isolation.ExitStatus, string) {
	t.Helper()
	c := ctx(t)
	ref := f.start(t, spec)
	es, err := f.rt.Wait(c, ref)
	require.NoError(t, err)
	return es, f.output(t, ref)
}

func (f *fixture) start(t testing.TB, spec isolation.Spec) isolation.Ref {
	t.Helper()
	c := ctx(t)
	info, err := f.rt.Create(c, spec)
	require.NoError(t, err)
	t.Logf("created %s: image %s args %q gpus %v", info.Ref, spec.Image, spec.Args, info.Devices)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if st, err := f.rt.Inspect(c, info.Ref); err == nil && st.State == isolation.StateRunning {
			_ = f.rt.Signal(c, info.Ref, unix.SIGKILL)
			_, _ = f.rt.Wait(c, info.Ref)
		}
		_ = f.rt.Delete(c, info.Ref)
	})
	require.NoError(t, f.rt.Start(c, info.Ref))
	return info.Ref
}

func (f *fixture) output(t testing.TB, ref isolation.Ref) string {
	t.Helper()
	rc, err := f.rt.Logs(ctx(t), ref)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return string(b)
}

// waitOutput waits until the container's output contains s.
func (f *fixture) waitOutput(t testing.TB, ref isolation.Ref, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(f.output(t, ref), s) },
		20*time.Second, 20*time.Millisecond, "output of %s never contained %q", ref, s)
}

// Report is the JSON line "probe report" prints.
type Report struct {
	UID        int               `json:"uid"`
	GID        int               `json:"gid"`
	CapEff     string            `json:"capEff"`
	CapBnd     string            `json:"capBnd"`
	NoNewPrivs string            `json:"noNewPrivs"`
	Seccomp    string            `json:"seccomp"`
	Open       map[string]string `json:"open"`
	Write      map[string]string `json:"write"`
	Interfaces []string          `json:"interfaces"`
	Env        []string          `json:"env"`
	Cwd        string            `json:"cwd"`
}

func parseReport(t testing.TB, out string) Report {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			var r Report
			require.NoError(t, json.Unmarshal([]byte(line), &r), line)
			return r
		}
	}
	t.Fatalf("no report in output %q", out)
	return Report{}
}
