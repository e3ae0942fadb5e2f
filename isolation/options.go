package isolation

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/gpufarm/gpufarm/gpu"
)

// Defaults of the runtime options.
const (
	DefaultAddress = "/run/containerd/containerd.sock"
	// DefaultLogDir is the containerd runtime's log directory when
	// WithLogDir is not given. The process runtime has no default: it runs
	// on development machines where /var/log is root's, so it asks.
	DefaultLogDir           = "/var/log/gpufarm"
	DefaultLogCapBytes      = 10 << 20
	DefaultLogCheckInterval = time.Second
	DefaultSnapshotter      = "overlayfs"
	DefaultRuntimeName      = "io.containerd.runc.v2"
)

// minLogCapBytes is the smallest cap: half of it is kept, and half a byte
// is nothing.
const minLogCapBytes = 2

// Option configures NewContainerd and NewProcess. Options that make no
// sense for the process runtime (address, snapshotter, CDI) are ignored by it.
type Option func(*options)

type options struct {
	address     string
	client      *containerd.Client
	logger      *slog.Logger
	clock       gpu.Clock
	logDir      string
	logDirSet   bool
	logCap      int64
	logEvery    time.Duration
	cdiDirs     []string
	snapshotter string
	runtimeName string
}

// runtimeKind says which runtime options are built for: only the
// containerd runtime has a default log directory.
type runtimeKind int

const (
	forContainerd runtimeKind = iota
	forProcess
)

// buildOptions applies opts over the defaults and reports every bad value
// at once, wrapping ErrInvalid, instead of replacing it.
func buildOptions(kind runtimeKind, opts []Option) (options, error) {
	o := options{
		address:     DefaultAddress,
		logCap:      DefaultLogCapBytes,
		logEvery:    DefaultLogCheckInterval,
		cdiDirs:     DefaultCDISpecDirs(),
		snapshotter: DefaultSnapshotter,
		runtimeName: DefaultRuntimeName,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.clock == nil {
		o.clock = gpu.SystemClock{}
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...)))
	}
	switch {
	case !o.logDirSet && kind == forProcess:
		bad("the process runtime needs WithLogDir: give a directory this user can write, e.g. under os.UserCacheDir()")
	case !o.logDirSet:
		o.logDir = DefaultLogDir
	case o.logDir == "" || !filepath.IsAbs(o.logDir):
		bad("WithLogDir(%q): give an absolute directory", o.logDir)
	}
	if o.logCap < minLogCapBytes {
		bad("WithLogCapBytes(%d): give at least %d bytes (the default is %d)", o.logCap, minLogCapBytes, DefaultLogCapBytes)
	}
	// Options a runtime ignores are still checked: a bad value is a bug
	// in the caller either way.
	if o.logEvery <= 0 {
		bad("WithLogCheckInterval(%v): give a positive interval (the default is %v)", o.logEvery, DefaultLogCheckInterval)
	}
	if o.client == nil && o.address == "" {
		bad("WithAddress(\"\"): give containerd's socket (the default is %s)", DefaultAddress)
	}
	if o.snapshotter == "" {
		bad("WithSnapshotter(\"\"): name a snapshotter (the default is %s)", DefaultSnapshotter)
	}
	if o.runtimeName == "" {
		bad("WithRuntimeName(\"\"): name a runtime (the default is %s)", DefaultRuntimeName)
	}
	return o, errors.Join(errs...)
}

// WithAddress is containerd's socket; DefaultAddress when not given.
func WithAddress(address string) Option { return func(o *options) { o.address = address } }

// WithClient uses an existing containerd client instead of dialling.
// The runtime does not close it.
func WithClient(c *containerd.Client) Option { return func(o *options) { o.client = c } }

// WithLogger is where the runtime logs; nothing is logged without it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock stamps creation and exit times of the process runtime. The
// containerd runtime takes its times from containerd. Grace periods are
// always real time: the processes are real.
func WithClock(c gpu.Clock) Option { return func(o *options) { o.clock = c } }

// WithLogDir is where container logs go, one file per container: an
// absolute directory, created if missing. The process runtime requires it;
// the containerd runtime uses DefaultLogDir when it is not given.
func WithLogDir(dir string) Option {
	return func(o *options) { o.logDir, o.logDirSet = dir, true }
}

// WithLogCapBytes caps each container's log (see Logs), at least 2 bytes;
// DefaultLogCapBytes when not given.
func WithLogCapBytes(n int64) Option { return func(o *options) { o.logCap = n } }

// WithLogCheckInterval is how often the containerd runtime enforces the
// log cap, a positive interval; DefaultLogCheckInterval when not given.
func WithLogCheckInterval(d time.Duration) Option { return func(o *options) { o.logEvery = d } }

// WithCDISpecDirs are the CDI spec directories, later ones taking
// precedence; DefaultCDISpecDirs when not given.
func WithCDISpecDirs(dirs ...string) Option {
	return func(o *options) { o.cdiDirs = append([]string(nil), dirs...) }
}

// WithSnapshotter is containerd's snapshotter; DefaultSnapshotter when not given.
func WithSnapshotter(name string) Option { return func(o *options) { o.snapshotter = name } }

// WithRuntimeName is containerd's runtime (shim); DefaultRuntimeName when not given.
func WithRuntimeName(name string) Option { return func(o *options) { o.runtimeName = name } }
