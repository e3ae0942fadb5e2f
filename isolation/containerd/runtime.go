package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/gpufarm/gpufarm/isolation"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// Runtime runs each container in containerd (1.6 or newer) through the
// v2 Go client, hardened by default (see Create), with its GPUs injected
// through CDI and each tenant in its own namespace. Containers, their
// labels and their logs live in containerd and on disk, not in this value:
// a new Runtime finds them again (Recover).
type Runtime struct {
	client     *ctrd.Client
	ownsClient bool
	opts       options
	log        *slog.Logger
	cdi        *CDIRegistry

	staleLease time.Duration // a create lease older than this is an interrupted Create's

	slots slots // each tenant's host ids and network
	net   *network

	imagesMu sync.Mutex
	images   map[string]imageMeta
	unpacks  singleflight.Group // one read and unpack per image at a time

	// stopLocks order a Stop's signal and its record against readers of
	// the record; stopHook (tests) runs at Stop's steps.
	stopLocks refLocks
	stopHook  func(step string)

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	_ isolation.Runtime    = (*Runtime)(nil)
	_ isolation.Recoverer  = (*Runtime)(nil)
	_ isolation.Preparer   = (*Runtime)(nil)
	_ isolation.ImageStore = (*Runtime)(nil)
)

// Labels of this runtime's own, beside the SDK's (isolation.LabelPrefix).
const (
	labelStop   = isolation.LabelPrefix + "stop"         // "requested" or "killed", set by Stop
	labelOOM    = isolation.LabelPrefix + "oom"          // "true" once an OOM kill was seen
	labelMemory = isolation.LabelPrefix + "memory-bytes" // Limits.MemoryBytes, when set
)

// leaseLabel marks the lease that holds a container's new snapshot while
// Create runs; Recover removes those an interrupted Create left.
const leaseLabel = isolation.LabelPrefix + "create"

// createLeaseExpiry bounds how long an interrupted Create's snapshot can
// outlive it even if Recover never runs: containerd collects it then.
const createLeaseExpiry = 10 * time.Minute

// New connects to containerd and starts enforcing the log cap.
// It fails with isolation.ErrInvalid listing every bad option, and with
// isolation.ErrUnavailable when containerd does not answer.
func New(ctx context.Context, opts ...Option) (*Runtime, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	r := &Runtime{opts: o, log: o.logger, done: make(chan struct{}), client: o.client, images: map[string]imageMeta{},
		staleLease: time.Minute, stopHook: func(string) {}, net: newNetwork(o.network)}
	r.slots.known = map[string]int{}
	if r.client == nil {
		if _, err := os.Stat(o.address); err != nil && !strings.Contains(o.address, "://") {
			return nil, fmt.Errorf("%w: no containerd socket at %s (is containerd running? is the address right?): %w", isolation.ErrUnavailable, o.address, err)
		}
		c, err := ctrd.New(o.address, ctrd.WithTimeout(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("%w: connect to containerd at %s (is it running? is the address right?): %w", isolation.ErrUnavailable, o.address, err)
		}
		r.client, r.ownsClient = c, true
	}
	v, err := r.client.Version(ctx)
	if err != nil {
		r.closeClient()
		return nil, fmt.Errorf("%w: containerd at %s does not answer: %w", isolation.ErrUnavailable, o.address, err)
	}
	cdi, err := NewCDIRegistry(o.cdiDirs...)
	if err != nil {
		r.closeClient()
		return nil, err
	}
	if err := cdi.Refresh(); err != nil {
		r.log.Warn("some CDI specs do not load; their devices are unavailable", "err", err)
	}
	r.cdi = cdi
	if err := os.MkdirAll(o.logDir, 0o750); err != nil {
		r.closeClient()
		return nil, fmt.Errorf("isolation: log dir: %w", err)
	}
	r.log.Info("containerd runtime ready", "containerd", v.Version, "address", o.address,
		"snapshotter", o.snapshotter, "runtime", o.runtimeName, "cdi_dirs", o.cdiDirs,
		"cdi_devices", len(cdi.Devices()), "log_dir", o.logDir, "log_cap_bytes", o.logCap)
	r.wg.Add(1)
	go r.keepLogs() // stops at Close
	return r, nil
}

func (r *Runtime) closeClient() {
	if r.ownsClient {
		_ = r.client.Close()
	}
}

// Close stops the log cap enforcement, removes the tenant network's
// firewall if no container is on it, and closes the connection it
// dialled. Containers keep running. It is idempotent.
func (r *Runtime) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.done)
		r.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), networkTimeout)
		defer cancel()
		err = r.net.removeFirewall(ctx)
		if r.ownsClient {
			err = errors.Join(err, r.client.Close())
		}
	})
	return err
}

// CDI is the runtime's device registry.
func (r *Runtime) CDI() *CDIRegistry { return r.cdi }

func (r *Runtime) closed() error {
	select {
	case <-r.done:
		return fmt.Errorf("%w: runtime closed", isolation.ErrUnavailable)
	default:
		return nil
	}
}

func (r *Runtime) nsContext(ctx context.Context, tenant string) (context.Context, error) {
	if err := r.closed(); err != nil {
		return nil, err
	}
	if err := isolation.ValidateTenant(tenant); err != nil {
		return nil, err
	}
	return namespaces.WithNamespace(ctx, isolation.Namespace(tenant)), nil
}

// load finds one of this SDK's containers; others are isolation.ErrNotFound.
func (r *Runtime) load(ctx context.Context, ref isolation.Ref) (ctrd.Container, context.Context, error) {
	nctx, err := r.nsContext(ctx, ref.Tenant)
	if err != nil {
		return nil, nil, err
	}
	ctr, err := r.client.LoadContainer(nctx, ref.ID)
	if err != nil {
		return nil, nil, mapErr(err, "container %s", ref)
	}
	info, err := ctr.Info(nctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return nil, nil, mapErr(err, "container %s", ref)
	}
	if info.Labels[isolation.LabelManaged] != "true" {
		return nil, nil, fmt.Errorf("%w: container %s was not created by gpufarm", isolation.ErrNotFound, ref)
	}
	return ctr, nctx, nil
}

func (r *Runtime) logPath(ref isolation.Ref) string {
	return filepath.Join(r.opts.logDir, isolation.Namespace(ref.Tenant), ref.ID+".log")
}
