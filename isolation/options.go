package isolation

import (
	"io"
	"log/slog"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/gpufarm/gpufarm/gpu"
)

// Defaults of the runtime options.
const (
	DefaultAddress          = "/run/containerd/containerd.sock"
	DefaultLogDir           = "/var/log/gpufarm"
	DefaultLogCapBytes      = 10 << 20
	DefaultLogCheckInterval = time.Second
	DefaultSnapshotter      = "overlayfs"
	DefaultRuntimeName      = "io.containerd.runc.v2"
)

// Option configures NewContainerd and NewProcess. Options that make no
// sense for the process runtime (address, snapshotter, CDI) are ignored by it.
type Option func(*options)

type options struct {
	address     string
	client      *containerd.Client
	logger      *slog.Logger
	clock       gpu.Clock
	logDir      string
	logCap      int64
	logEvery    time.Duration
	cdiDirs     []string
	snapshotter string
	runtimeName string
}

func buildOptions(opts []Option) options {
	o := options{
		address:     DefaultAddress,
		logDir:      DefaultLogDir,
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
		o.clock = systemClock{}
	}
	if o.logCap < 2 {
		o.logCap = DefaultLogCapBytes
	}
	if o.logEvery <= 0 {
		o.logEvery = DefaultLogCheckInterval
	}
	return o
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

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

// WithLogDir is where container logs go, one file per container;
// DefaultLogDir when not given.
func WithLogDir(dir string) Option { return func(o *options) { o.logDir = dir } }

// WithLogCapBytes caps each container's log (see Logs); DefaultLogCapBytes
// when not given.
func WithLogCapBytes(n int64) Option { return func(o *options) { o.logCap = n } }

// WithLogCheckInterval is how often the containerd runtime enforces the
// log cap; DefaultLogCheckInterval when not given.
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
