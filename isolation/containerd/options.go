package containerd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/gpufarm/gpufarm/isolation"

	ctrd "github.com/containerd/containerd/v2/client"
)

// Defaults of the runtime options.
const (
	DefaultAddress = "/run/containerd/containerd.sock"
	// DefaultLogDir is the log directory when WithLogDir is not given.
	DefaultLogDir           = "/var/log/gpufarm"
	DefaultLogCapBytes      = 10 << 20
	DefaultLogCheckInterval = time.Second
	DefaultSnapshotter      = "overlayfs"
	DefaultRuntimeName      = "io.containerd.runc.v2"
)

// minLogCapBytes is the smallest cap: half of it is kept, and half a byte
// is nothing.
const minLogCapBytes = 2

// Option configures New.
type Option func(*options)

type options struct {
	address     string
	client      *ctrd.Client
	logger      *slog.Logger
	logDir      string
	logCap      int64
	logEvery    time.Duration
	cdiDirs     []string
	snapshotter string
	runtimeName string
	tenancy     isolation.Tenancy
	userns      bool
	network     NetworkConfig
}

// buildOptions applies opts over the defaults and reports every bad value
// at once, wrapping isolation.ErrInvalid, instead of replacing it.
func buildOptions(opts []Option) (options, error) {
	o := options{
		address:     DefaultAddress,
		tenancy:     isolation.DefaultTenancy(isolation.DefaultMiningTenant),
		userns:      true,
		network:     DefaultNetworkConfig(),
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
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", isolation.ErrInvalid, fmt.Sprintf(format, args...)))
	}
	if o.logDir == "" || !filepath.IsAbs(o.logDir) {
		bad("WithLogDir(%q): give an absolute directory", o.logDir)
	}
	if o.logCap < minLogCapBytes {
		bad("WithLogCapBytes(%d): give at least %d bytes (the default is %d)", o.logCap, minLogCapBytes, DefaultLogCapBytes)
	}
	if o.logEvery <= 0 {
		bad("WithLogCheckInterval(%v): give a positive interval (the default is %v)", o.logEvery, DefaultLogCheckInterval)
	}
	if o.client == nil && o.address == "" {
		bad("WithAddress(\"\"): give containerd's socket (the default is %s)", DefaultAddress)
	}
	if o.snapshotter == "" {
		bad("WithSnapshotter(\"\"): name a snapshotter (the default is %s)", DefaultSnapshotter)
	}
	if err := o.tenancy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("WithTenancy: %w", err))
	}
	for _, p := range o.network.validate() {
		bad("WithNetwork: %s", p)
	}
	if o.runtimeName == "" {
		bad("WithRuntimeName(\"\"): name a runtime (the default is %s)", DefaultRuntimeName)
	}
	return o, errors.Join(errs...)
}

// WithTenancy sets what each tenant's containers may ask for; Create
// refuses a spec that breaks its tenant's policy, every rule named, and
// fills in the policy's default limits. The default is
// isolation.DefaultTenancy(isolation.DefaultMiningTenant).
func WithTenancy(t isolation.Tenancy) Option { return func(o *options) { o.tenancy = t } }

// WithUserNamespaces runs each tenant's containers in a user namespace of
// their own, with a range of host ids no other tenant has (default on).
// Off, every tenant runs as the same host user (nobody): only for kernels
// without user namespaces.
func WithUserNamespaces(on bool) Option { return func(o *options) { o.userns = on } }

// WithAddress is containerd's socket; DefaultAddress when not given.
func WithAddress(address string) Option { return func(o *options) { o.address = address } }

// WithClient uses an existing containerd client instead of dialling.
// The runtime does not close it.
func WithClient(c *ctrd.Client) Option { return func(o *options) { o.client = c } }

// WithLogger is where the runtime logs; nothing is logged without it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithLogDir is where container logs go, one file per container: an
// absolute directory, created if missing; DefaultLogDir when not given.
func WithLogDir(dir string) Option { return func(o *options) { o.logDir = dir } }

// WithLogCapBytes caps each container's log (see Logs), at least 2 bytes;
// DefaultLogCapBytes when not given.
func WithLogCapBytes(n int64) Option { return func(o *options) { o.logCap = n } }

// WithLogCheckInterval is how often the runtime enforces the log cap, a positive interval; DefaultLogCheckInterval when not given.
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
