package process

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

// DefaultLogCapBytes caps each process's log when WithLogCapBytes is not
// given.
const DefaultLogCapBytes = 10 << 20

// minLogCapBytes is the smallest cap: half of it is kept, and half a byte
// is nothing.
const minLogCapBytes = 2

// Option configures New.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	clock      gpu.Clock
	logDir     string
	logDirSet  bool
	logCap     int64
	tenancy    isolation.Tenancy
	unsafeRoot bool
}

// buildOptions applies opts over the defaults and reports every bad value
// at once, wrapping isolation.ErrInvalid, instead of replacing it.
func buildOptions(opts []Option) (options, error) {
	o := options{logCap: DefaultLogCapBytes, tenancy: isolation.DefaultTenancy(isolation.DefaultMiningTenant)}
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
		errs = append(errs, fmt.Errorf("%w: %s", isolation.ErrInvalid, fmt.Sprintf(format, args...)))
	}
	switch {
	case !o.logDirSet:
		// Development machines have no directory every user can write.
		bad("the process runtime needs WithLogDir: give a directory this user can write, e.g. under os.UserCacheDir()")
	case o.logDir == "" || !filepath.IsAbs(o.logDir):
		bad("WithLogDir(%q): give an absolute directory", o.logDir)
	}
	if o.logCap < minLogCapBytes {
		bad("WithLogCapBytes(%d): give at least %d bytes (the default is %d)", o.logCap, minLogCapBytes, DefaultLogCapBytes)
	}
	if err := o.tenancy.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("WithTenancy: %w", err))
	}
	return o, errors.Join(errs...)
}

// WithLogger is where the runtime logs; nothing is logged without it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock stamps creation and exit times. Grace periods are always real
// time: the processes are real.
func WithClock(c gpu.Clock) Option { return func(o *options) { o.clock = c } }

// WithLogDir is where process logs go, one file per process: an absolute
// directory, created if missing. It is required.
func WithLogDir(dir string) Option {
	return func(o *options) { o.logDir, o.logDirSet = dir, true }
}

// WithTenancy sets what each tenant may ask for; Create refuses a spec
// that breaks its tenant's policy, as the containerd runtime does, though
// this runtime enforces none of it. The default is
// isolation.DefaultTenancy(isolation.DefaultMiningTenant).
func WithTenancy(t isolation.Tenancy) Option { return func(o *options) { o.tenancy = t } }

// WithUnsafeRoot lets the runtime run as root. This runtime isolates
// nothing, so its workloads then run as root on the host, with every
// file, device and process in reach: use it only for programs you trust,
// on a machine you can throw away (a test container, a CI runner). New
// refuses root without it.
func WithUnsafeRoot() Option { return func(o *options) { o.unsafeRoot = true } }

// WithLogCapBytes caps each process's log, at least 2 bytes;
// DefaultLogCapBytes when not given.
func WithLogCapBytes(n int64) Option { return func(o *options) { o.logCap = n } }
