package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/internal/logfile"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/image-spec/identity"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
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

	imagesMu sync.Mutex
	images   map[string]imageMeta

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
		staleLease: time.Minute, stopHook: func(string) {}}
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

// Close stops the log cap enforcement and closes the connection it
// dialled. Containers keep running. It is idempotent.
func (r *Runtime) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.done)
		r.wg.Wait()
		if r.ownsClient {
			err = r.client.Close()
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

// Create validates spec, resolves its CDI devices and its image, builds
// the OCI spec, and only then creates the snapshot and the container,
// under a lease, so a failure at any step leaves nothing behind.
//
// The container is hardened whatever the image says: the spec's user
// (nobody by default; the image's USER is ignored), no new privileges,
// every capability dropped, containerd's default seccomp profile, a
// read-only root filesystem with a tmpfs /tmp, and a network namespace of
// its own unless Spec.Network is NetworkHost. Its device cgroup allows only
// the standard pseudo-devices and its CDI devices.
func (r *Runtime) Create(ctx context.Context, spec isolation.Spec) (isolation.Info, error) {
	if err := r.closed(); err != nil {
		return isolation.Info{}, err
	}
	var problems []error
	devs := validDevices(spec.GPUs)
	if len(devs) > 0 {
		if err := r.cdi.Refresh(); err != nil {
			r.log.Warn("some CDI specs do not load; their devices are unavailable", "err", err)
		}
		spec.GPUs = r.withUUIDs(spec.GPUs)
	}
	if err := spec.Validate(); err != nil {
		problems = append(problems, err)
	}
	s := spec.WithDefaults()
	ref := isolation.Ref{Tenant: s.Tenant, ID: s.ID}
	var img images.Image
	if isolation.ValidateTenant(s.Tenant) == nil {
		nctx := namespaces.WithNamespace(ctx, isolation.Namespace(s.Tenant))
		if len(devs) > 0 {
			if err := r.cdi.Resolve(devs...); err != nil {
				problems = append(problems, err)
			}
		}
		if s.Image != "" {
			i, err := r.client.ImageService().Get(nctx, s.Image)
			switch {
			case errdefs.IsNotFound(err):
				problems = append(problems, fmt.Errorf("%w: image %q is not in tenant %q: import or pull it for this tenant first: %w",
					isolation.ErrNotFound, s.Image, s.Tenant, err))
			case err != nil:
				problems = append(problems, mapErr(err, "image %q", s.Image))
			default:
				img = i
			}
		}
	}
	if err := errors.Join(problems...); err != nil {
		return isolation.Info{}, err
	}
	nctx := namespaces.WithNamespace(ctx, isolation.Namespace(s.Tenant))
	meta, err := r.imageMeta(nctx, img)
	if err != nil {
		return isolation.Info{}, err
	}
	// The whole OCI spec, CDI edits included, is built before anything
	// exists, so its errors (a device node missing on the host) cost nothing.
	ociSpec, err := r.buildSpec(nctx, s, meta.config)
	if err != nil {
		return isolation.Info{}, err
	}
	labels := s.ContainerLabels()
	if s.Limits.MemoryBytes > 0 {
		labels[labelMemory] = strconv.FormatInt(s.Limits.MemoryBytes, 10)
	}

	ctr, err := r.newContainer(nctx, s, ociSpec, meta, img, labels)
	if errdefs.IsNotFound(err) {
		// The image's unpacked layers went away since they were cached
		// (images pruned): unpack again, once.
		r.forgetImage(nctx, img)
		if meta, err = r.imageMeta(nctx, img); err != nil {
			return isolation.Info{}, err
		}
		ctr, err = r.newContainer(nctx, s, ociSpec, meta, img, labels)
	}
	if errdefs.IsAlreadyExists(err) {
		return isolation.Info{}, fmt.Errorf("%w: container %s: delete it or choose another ID: %w", isolation.ErrExists, ref, err)
	}
	if err != nil {
		return isolation.Info{}, mapErr(err, "create container %s", ref)
	}
	r.log.Info("container created", "container", ref.String(), "image", s.Image, "gpus", s.DeviceNames(),
		"user", s.User, "network", string(s.Network))
	info := isolation.InfoFromLabels(ref, labels)
	info.CreatedAt, info.LogPath = ctrCreatedAt(nctx, ctr), r.logPath(ref)
	return info, nil
}

// newContainer makes the snapshot and the container under a lease; on
// failure it deletes the lease synchronously, which collects the snapshot
// if it was made.
func (r *Runtime) newContainer(ctx context.Context, s isolation.Spec, ociSpec *oci.Spec, meta imageMeta, img images.Image, labels map[string]string) (ctrd.Container, error) {
	ls := r.client.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(createLeaseExpiry),
		leases.WithLabel(leaseLabel, s.ID))
	if err != nil {
		return nil, err
	}
	ctr, err := r.client.NewContainer(leases.WithLease(ctx, lease.ID), s.ID,
		r.withSnapshot(s.ID, meta.chainID, img.Name),
		ctrd.WithSpec(ociSpec),
		ctrd.WithRuntime(r.opts.runtimeName, nil),
		ctrd.WithContainerLabels(labels),
	)
	del := []leases.DeleteOpt{}
	if err != nil {
		del = append(del, leases.SynchronousDelete)
	}
	if derr := ls.Delete(context.WithoutCancel(ctx), lease, del...); derr != nil {
		r.log.Warn("remove create lease", "container", s.Tenant+"/"+s.ID, "err", derr)
	}
	return ctr, err
}

func ctrCreatedAt(ctx context.Context, ctr ctrd.Container) time.Time {
	c, err := ctr.Info(ctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return time.Time{}
	}
	return c.CreatedAt
}

// withSnapshot prepares the container's writable snapshot on the image's
// unpacked layers (ctrd.WithNewSnapshot, without re-reading the
// image each time).
func (r *Runtime) withSnapshot(key, parent, image string) ctrd.NewContainerOpts {
	return func(ctx context.Context, client *ctrd.Client, c *containers.Container) error {
		if _, err := client.SnapshotService(r.opts.snapshotter).Prepare(ctx, key, parent); err != nil {
			return err
		}
		c.Snapshotter, c.SnapshotKey, c.Image = r.opts.snapshotter, key, image
		return nil
	}
}

// imageMeta is what Create needs of an image, cached by namespace and
// manifest digest: an image's content never changes under its digest.
type imageMeta struct {
	config  imagespec.ImageConfig
	chainID string
}

func imageKey(ctx context.Context, img images.Image) string {
	ns, _ := namespaces.Namespace(ctx)
	return ns + "\x00" + img.Name + "\x00" + img.Target.Digest.String()
}

func (r *Runtime) imageMeta(ctx context.Context, i images.Image) (imageMeta, error) {
	key := imageKey(ctx, i)
	r.imagesMu.Lock()
	m, ok := r.images[key]
	r.imagesMu.Unlock()
	if ok {
		return m, nil
	}
	img := ctrd.NewImage(r.client, i)
	cfg, err := imageConfig(ctx, img)
	if err != nil {
		return imageMeta{}, mapErr(err, "read the config of image %q", i.Name)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return imageMeta{}, mapErr(err, "read the layers of image %q", i.Name)
	}
	unpacked, err := img.IsUnpacked(ctx, r.opts.snapshotter)
	if err != nil {
		return imageMeta{}, mapErr(err, "image %q", i.Name)
	}
	if !unpacked {
		if err := img.Unpack(ctx, r.opts.snapshotter); err != nil {
			return imageMeta{}, mapErr(err, "unpack image %q", i.Name)
		}
	}
	m = imageMeta{config: cfg, chainID: identity.ChainID(diffIDs).String()}
	r.imagesMu.Lock()
	r.images[key] = m
	r.imagesMu.Unlock()
	return m, nil
}

func (r *Runtime) forgetImage(ctx context.Context, img images.Image) {
	r.imagesMu.Lock()
	delete(r.images, imageKey(ctx, img))
	r.imagesMu.Unlock()
}

// withUUIDs fills the empty UUIDs the CDI specs tell, on a copy.
func (r *Runtime) withUUIDs(gpus []isolation.GPU) []isolation.GPU {
	out := append([]isolation.GPU(nil), gpus...)
	for i, g := range out {
		if g.UUID == "" && g.Device != "" {
			out[i].UUID = r.cdi.uuidOf(g.Device)
		}
	}
	return out
}

func validDevices(gpus []isolation.GPU) []string {
	var out []string
	for _, g := range gpus {
		if g.Device != "" {
			out = append(out, g.Device)
		}
	}
	return out
}

// taskState is what containerd's task service says of a container's task.
type taskState struct {
	exists   bool
	status   tasktypes.Status
	pid      uint32
	exitCode uint32
	exitedAt time.Time
}

func (r *Runtime) taskState(ctx context.Context, id string) (taskState, error) {
	resp, err := r.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
	if err != nil {
		err = errgrpc.ToNative(err)
		if errdefs.IsNotFound(err) {
			return taskState{}, nil
		}
		return taskState{}, mapErr(err, "task of %s", id)
	}
	p := resp.GetProcess()
	ts := taskState{exists: true, status: p.GetStatus(), pid: p.GetPid(), exitCode: p.GetExitStatus()}
	if p.GetExitedAt() != nil {
		ts.exitedAt = p.GetExitedAt().AsTime()
	}
	return ts, nil
}

func (r *Runtime) deleteTask(ctx context.Context, id string) error {
	_, err := r.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if err = errgrpc.ToNative(err); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// Start starts a created container, or restarts a stopped one. Its output
// goes to its log file, written by containerd's shim.
func (r *Runtime) Start(ctx context.Context, ref isolation.Ref) error {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	path := r.logPath(ref)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("isolation: log dir: %w", err)
	}
	task, err := ctr.NewTask(nctx, cio.LogFile(path))
	if errdefs.IsAlreadyExists(err) {
		ts, serr := r.taskState(nctx, ref.ID)
		if serr != nil {
			return serr
		}
		switch ts.status {
		case tasktypes.Status_CREATED:
			// Prepared: only the process is left to run.
			task, err = ctr.Task(nctx, nil)
		case tasktypes.Status_STOPPED:
			// Restart a task that has exited.
			if err := r.deleteTask(nctx, ref.ID); err != nil {
				return mapErr(err, "remove the old task of %s", ref)
			}
			if err := ctr.Update(nctx, withoutLabels(labelStop, labelOOM)); err != nil {
				return mapErr(err, "reset labels of %s", ref)
			}
			task, err = ctr.NewTask(nctx, cio.LogFile(path))
		default:
			return fmt.Errorf("%w: container %s is %s, not created or stopped", isolation.ErrState, ref, strings.ToLower(ts.status.String()))
		}
	}
	if err != nil {
		return mapErr(err, "create task of %s", ref)
	}
	if err := task.Start(nctx); err != nil {
		if derr := r.deleteTask(context.WithoutCancel(nctx), ref.ID); derr != nil {
			r.log.Warn("remove failed task", "container", ref.String(), "err", derr)
		}
		return mapErr(err, "start %s", ref)
	}
	r.log.Info("container started", "container", ref.String(), "pid", task.Pid())
	return nil
}

// Prepare makes the container's task, its shim, namespaces, cgroups and
// device rules, without running its process: the slow half of Start, done
// ahead so that Start only runs the process. Nothing of the image runs
// until Start. Preparing a prepared container does nothing.
func (r *Runtime) Prepare(ctx context.Context, ref isolation.Ref) error {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	path := r.logPath(ref)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("isolation: log dir: %w", err)
	}
	_, err = ctr.NewTask(nctx, cio.LogFile(path))
	if errdefs.IsAlreadyExists(err) {
		ts, serr := r.taskState(nctx, ref.ID)
		if serr != nil {
			return serr
		}
		if ts.status == tasktypes.Status_CREATED {
			return nil
		}
		return fmt.Errorf("%w: container %s is %s, not created", isolation.ErrState, ref, strings.ToLower(ts.status.String()))
	}
	if err != nil {
		return mapErr(err, "prepare task of %s", ref)
	}
	r.log.Debug("container prepared", "container", ref.String())
	return nil
}

// Signal sends sig to the container's main process.
func (r *Runtime) Signal(ctx context.Context, ref isolation.Ref, sig syscall.Signal) error {
	_, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	return r.kill(nctx, ref, sig, false)
}

func (r *Runtime) kill(ctx context.Context, ref isolation.Ref, sig syscall.Signal, all bool) error {
	_, err := r.client.TaskService().Kill(ctx, &tasks.KillRequest{ContainerID: ref.ID, Signal: uint32(sig), All: all})
	return taskErr(errgrpc.ToNative(err), ref)
}

func taskErr(err error, ref isolation.Ref) error {
	if err == nil {
		return nil
	}
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: container %s is not running (never started or already exited): %w", isolation.ErrState, ref, err)
	}
	return mapErr(err, "task of %s", ref)
}

// Stop sends the container's stop signal, waits up to its grace period,
// then kills every process of the container. It records which of the two
// ended it in the container's labels, so Wait (here or in a later
// Runtime) reports ReasonStopped or ReasonKilled. A signal is recorded only
// once containerd has delivered it: a process that exits on its own before
// the signal reaches it, or a Stop whose ctx ends before the signal is
// sent, leaves no record, and the exit is reported as ReasonExited. If ctx
// ends first, Stop returns ctx's error; a signal already delivered stays
// recorded, since the exit it causes is a stop.
func (r *Runtime) Stop(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	ts, err := r.taskState(nctx, ref.ID)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	if !ts.exists {
		return isolation.ExitStatus{}, fmt.Errorf("%w: container %s was never started", isolation.ErrState, ref)
	}
	if ts.status == tasktypes.Status_STOPPED {
		return r.Wait(ctx, ref)
	}
	labels, err := ctr.Labels(nctx)
	if err != nil {
		return isolation.ExitStatus{}, mapErr(err, "labels of %s", ref)
	}
	stop := isolation.InfoFromLabels(ref, labels)
	sig, grace := stop.StopSignal, stop.StopGrace
	exited := make(chan waitResult, 1)
	wctx, cancel := context.WithCancel(nctx)
	defer cancel()
	go func() { // ends with wctx at the latest
		code, at, err := r.waitExit(wctx, ref)
		exited <- waitResult{code, at, err} // buffered: never blocks
	}()
	r.log.Info("stopping container", "container", ref.String(), "signal", sig.String(), "grace", grace.String())
	if err := r.signalStop(nctx, ctr, ref, sig, false, "requested"); err != nil && !errors.Is(err, isolation.ErrState) {
		return isolation.ExitStatus{}, err
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var res waitResult
	select {
	case res = <-exited:
	case <-ctx.Done():
		return isolation.ExitStatus{}, ctx.Err()
	case <-timer.C:
		r.log.Warn("grace period over, killing container", "container", ref.String(), "grace", grace.String())
		if err := r.signalStop(nctx, ctr, ref, syscall.SIGKILL, true, "killed"); err != nil && !errors.Is(err, isolation.ErrState) {
			return isolation.ExitStatus{}, err
		}
		select {
		case res = <-exited:
		case <-ctx.Done():
			return isolation.ExitStatus{}, ctx.Err()
		}
	}
	if res.err != nil {
		return isolation.ExitStatus{}, res.err
	}
	return r.exitStatus(nctx, ctr, ref, res.code, res.at)
}

// signalStop sends sig and, once containerd has delivered it, records mark
// in the stop label. isolation.ErrState means the process had already exited: no
// signal, no record. Readers of the label (exitStatus) wait for the
// record, so an exit the signal causes at once is not mistaken for a
// natural one.
func (r *Runtime) signalStop(ctx context.Context, ctr ctrd.Container, ref isolation.Ref, sig syscall.Signal, all bool, mark string) error {
	r.stopHook("before-signal")
	unlock := r.stopLocks.lock(ref)
	defer unlock()
	if err := r.kill(ctx, ref, sig, all); err != nil {
		return err
	}
	r.stopHook("signalled")
	// The signal is out: record it even if ctx ends now.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := ctr.SetLabels(lctx, map[string]string{labelStop: mark}); err != nil {
		return mapErr(err, "label %s", ref)
	}
	return nil
}

type waitResult struct {
	code uint32
	at   time.Time
	err  error
}

// waitExit blocks in containerd until the task exits.
func (r *Runtime) waitExit(ctx context.Context, ref isolation.Ref) (uint32, time.Time, error) {
	resp, err := r.client.TaskService().Wait(ctx, &tasks.WaitRequest{ContainerID: ref.ID})
	if err != nil {
		if ctx.Err() != nil {
			return 0, time.Time{}, ctx.Err()
		}
		return 0, time.Time{}, taskErr(errgrpc.ToNative(err), ref)
	}
	var at time.Time
	if resp.GetExitedAt() != nil {
		at = resp.GetExitedAt().AsTime()
	}
	return resp.GetExitStatus(), at, nil
}

// Wait blocks until the container's process exits and says how. It
// returns at once for a container that already exited.
func (r *Runtime) Wait(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	code, at, err := r.waitExit(nctx, ref)
	if err != nil {
		if errors.Is(err, isolation.ErrState) {
			return isolation.ExitStatus{}, fmt.Errorf("%w: container %s was never started", isolation.ErrState, ref)
		}
		return isolation.ExitStatus{}, err
	}
	return r.exitStatus(nctx, ctr, ref, code, at)
}

// exitStatus reads the labels as they are after the exit and derives the
// reason. It waits for a Stop of this runtime that is between its signal
// and the record of it.
func (r *Runtime) exitStatus(ctx context.Context, ctr ctrd.Container, ref isolation.Ref, code uint32, at time.Time) (isolation.ExitStatus, error) {
	unlock := r.stopLocks.rlock(ref)
	defer unlock()
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return isolation.ExitStatus{}, mapErr(err, "labels of %s", ref)
	}
	return r.reason(ctx, ctr, labels, code, at), nil
}

// reason derives why the process ended from the labels Stop wrote and,
// for a SIGKILL death of a container with a memory limit, from its memory
// cgroup's OOM-kill counter, which the shim reports until the task is
// deleted. A seen OOM kill is written to the labels, so it is reported
// the same way later.
func (r *Runtime) reason(ctx context.Context, ctr ctrd.Container, labels map[string]string, code uint32, at time.Time) isolation.ExitStatus {
	es := isolation.ExitStatus{Code: int(code), ExitedAt: at, Reason: isolation.ReasonExited}
	oom := labels[labelOOM] == "true"
	if !oom && code == 128+uint32(syscall.SIGKILL) && labels[labelMemory] != "" {
		if oom = r.oomKilled(ctx, ctr.ID()); oom {
			if _, err := ctr.SetLabels(ctx, map[string]string{labelOOM: "true"}); err != nil {
				r.log.Warn("record OOM kill", "container", ctr.ID(), "err", err)
			}
		}
	}
	switch {
	case oom:
		es.Reason, es.OOMKilled = isolation.ReasonOOMKilled, true
	case labels[labelStop] == "killed":
		es.Reason = isolation.ReasonKilled
	case labels[labelStop] == "requested":
		es.Reason = isolation.ReasonStopped
	}
	return es
}

// oomKilled reads the OOM-kill counter of the task's memory cgroup
// (memory.oom_control on cgroup v1, memory.events on v2).
func (r *Runtime) oomKilled(ctx context.Context, id string) bool {
	resp, err := r.client.TaskService().Metrics(ctx, &tasks.MetricsRequest{Filters: []string{"id==" + id}})
	if err != nil {
		return false
	}
	for _, m := range resp.GetMetrics() {
		if m.GetID() != id || m.GetData() == nil {
			continue
		}
		v, err := typeurl.UnmarshalAny(m.GetData())
		if err != nil {
			continue
		}
		switch t := v.(type) {
		case *cgroup1stats.Metrics:
			return t.GetMemoryOomControl().GetOomKill() > 0
		case *cgroup2stats.Metrics:
			return t.GetMemoryEvents().GetOomKill() > 0
		}
	}
	return false
}

// Delete removes a container that is not running, its snapshot and its logs.
func (r *Runtime) Delete(ctx context.Context, ref isolation.Ref) error {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	ts, err := r.taskState(nctx, ref.ID)
	if err != nil {
		return err
	}
	if ts.exists {
		if ts.status != tasktypes.Status_STOPPED && ts.status != tasktypes.Status_CREATED {
			return fmt.Errorf("%w: container %s is %s: stop it before deleting", isolation.ErrState, ref, strings.ToLower(ts.status.String()))
		}
		if err := r.deleteTask(nctx, ref.ID); err != nil {
			return mapErr(err, "delete task of %s", ref)
		}
	}
	c, err := ctr.Info(nctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return mapErr(err, "container %s", ref)
	}
	if err := r.client.ContainerService().Delete(nctx, ref.ID); err != nil {
		return mapErr(err, "delete %s", ref)
	}
	if c.SnapshotKey != "" {
		if err := r.client.SnapshotService(c.Snapshotter).Remove(nctx, c.SnapshotKey); err != nil && !errdefs.IsNotFound(err) {
			r.log.Warn("remove snapshot; containerd's garbage collector will", "container", ref.String(), "err", err)
		}
	}
	if err := logfile.Remove(r.logPath(ref)); err != nil {
		r.log.Warn("remove logs", "container", ref.String(), "err", err)
	}
	r.log.Info("container deleted", "container", ref.String())
	return nil
}

// Inspect describes one container.
func (r *Runtime) Inspect(ctx context.Context, ref isolation.Ref) (isolation.Info, error) {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return isolation.Info{}, err
	}
	return r.info(nctx, ref, ctr)
}

func (r *Runtime) info(ctx context.Context, ref isolation.Ref, ctr ctrd.Container) (isolation.Info, error) {
	c, err := ctr.Info(ctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return isolation.Info{}, mapErr(err, "container %s", ref)
	}
	info := isolation.InfoFromLabels(ref, c.Labels)
	info.CreatedAt, info.LogPath = c.CreatedAt, r.logPath(ref)
	ts, err := r.taskState(ctx, ref.ID)
	if err != nil || !ts.exists {
		return info, err
	}
	info.PID = int(ts.pid)
	switch ts.status {
	case tasktypes.Status_RUNNING:
		info.State = isolation.StateRunning
	case tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
		info.State = isolation.StatePaused
	case tasktypes.Status_CREATED:
		info.State = isolation.StateCreated
	case tasktypes.Status_STOPPED:
		info.State = isolation.StateStopped
		es, err := r.exitStatus(ctx, ctr, ref, ts.exitCode, ts.exitedAt)
		if err != nil {
			return isolation.Info{}, err
		}
		info.Exit = &es
	default:
		info.State = isolation.StateUnknown
	}
	return info, nil
}

// List describes the SDK's containers that match filter, tenant by tenant.
func (r *Runtime) List(ctx context.Context, filter isolation.Filter) ([]isolation.Info, error) {
	if err := r.closed(); err != nil {
		return nil, err
	}
	tenants, err := r.tenants(ctx, filter.Tenant)
	if err != nil {
		return nil, err
	}
	var out []isolation.Info
	for _, tenant := range tenants {
		nctx := namespaces.WithNamespace(ctx, isolation.Namespace(tenant))
		ctrs, err := r.client.Containers(nctx, `labels."`+isolation.LabelManaged+`"==true`)
		if err != nil {
			return nil, mapErr(err, "list containers of tenant %q", tenant)
		}
		for _, ctr := range ctrs {
			c, err := ctr.Info(nctx, ctrd.WithoutRefreshedMetadata)
			if err != nil || !filter.Match(tenant, c.Labels) {
				continue
			}
			info, err := r.info(nctx, isolation.Ref{Tenant: tenant, ID: ctr.ID()}, ctr)
			if errdefs.IsNotFound(err) || errors.Is(err, isolation.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			out = append(out, info)
		}
	}
	return out, nil
}

// tenants lists the tenants with a namespace, or checks the one asked for.
func (r *Runtime) tenants(ctx context.Context, only string) ([]string, error) {
	if only != "" {
		if err := isolation.ValidateTenant(only); err != nil {
			return nil, err
		}
	}
	nss, err := r.client.NamespaceService().List(ctx)
	if err != nil {
		return nil, mapErr(err, "list namespaces")
	}
	var out []string
	for _, ns := range nss {
		tenant, ok := strings.CutPrefix(ns, isolation.NamespacePrefix)
		if !ok || (only != "" && tenant != only) {
			continue
		}
		out = append(out, tenant)
	}
	return out, nil
}

// Logs reads the container's output: the newest bytes, at most the log cap.
func (r *Runtime) Logs(ctx context.Context, ref isolation.Ref) (io.ReadCloser, error) {
	if _, _, err := r.load(ctx, ref); err != nil {
		return nil, err
	}
	path := r.logPath(ref)
	if err := logfile.Rotate(path, r.opts.logCap); err != nil {
		r.log.Warn("cap log", "path", path, "err", err)
	}
	return logfile.Open(path)
}

// keepLogs enforces the log cap on every log file under the log dir until Close.
func (r *Runtime) keepLogs() {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.logEvery)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		paths, _ := filepath.Glob(filepath.Join(r.opts.logDir, isolation.NamespacePrefix+"*", "*.log"))
		for _, p := range paths {
			if err := logfile.Rotate(p, r.opts.logCap); err != nil {
				r.log.Warn("cap log", "path", p, "err", err)
			}
		}
	}
}

// Recover finds the containers earlier instances created and reports each
// once, whatever its state: running ones keep running and their output
// keeps going to their log file (the shim writes it), stopped ones keep
// their exit status until Delete. It also removes what an interrupted
// Create or Delete left: snapshots held only by a create lease older than
// a minute, and log files of containers that no longer exist.
func (r *Runtime) Recover(ctx context.Context) ([]isolation.Info, error) {
	if err := r.closed(); err != nil {
		return nil, err
	}
	tenants, err := r.tenants(ctx, "")
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, tenant := range tenants {
		nctx := namespaces.WithNamespace(ctx, isolation.Namespace(tenant))
		ls := r.client.LeasesService()
		stale, err := ls.List(nctx, `labels."`+leaseLabel+`"`)
		if err != nil {
			errs = append(errs, mapErr(err, "list leases of tenant %q", tenant))
			continue
		}
		for _, l := range stale {
			if time.Since(l.CreatedAt) < r.staleLease {
				continue // a Create may still be running
			}
			if err := ls.Delete(nctx, l, leases.SynchronousDelete); err != nil {
				errs = append(errs, mapErr(err, "remove lease %s", l.ID))
			} else {
				r.log.Info("removed the lease of an interrupted create", "tenant", tenant, "container", l.Labels[leaseLabel])
			}
		}
	}
	infos, err := r.List(ctx, isolation.Filter{})
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	known := map[string]bool{}
	for _, i := range infos {
		known[r.logPath(i.Ref)] = true
	}
	paths, _ := filepath.Glob(filepath.Join(r.opts.logDir, isolation.NamespacePrefix+"*", "*.log"))
	for _, p := range paths {
		if !known[p] {
			if err := logfile.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	running := 0
	for _, i := range infos {
		if i.State == isolation.StateRunning {
			running++
		}
	}
	r.log.Info("recovered containers", "total", len(infos), "running", running)
	return infos, errors.Join(errs...)
}

// Import reads an OCI image layout or docker-save tar into the tenant's
// namespace and unpacks it. An import that fails leaves the tenant as it
// was: images it added are deleted, images it re-pointed get their old
// target back, and a namespace it created is removed.
func (r *Runtime) Import(ctx context.Context, tenant string, rd io.Reader) ([]string, error) {
	nctx, err := r.nsContext(ctx, tenant)
	if err != nil {
		return nil, err
	}
	existed := r.namespaceExists(ctx, isolation.Namespace(tenant))
	names, err := r.importLeased(nctx, tenant, existed, rd)
	if err != nil {
		r.dropNamespace(ctx, tenant, existed)
		return nil, err
	}
	r.log.Info("images imported", "tenant", tenant, "images", names)
	return names, nil
}

// importLeased imports under a lease that also holds the images the
// import may re-point, so that their content survives until they are
// restored; deleting the lease then collects whatever a failed import
// brought.
func (r *Runtime) importLeased(nctx context.Context, tenant string, existed bool, rd io.Reader) ([]string, error) {
	var before []images.Image
	if existed {
		var err error
		if before, err = r.client.ImageService().List(nctx); err != nil {
			return nil, mapErr(err, "list images of tenant %q", tenant)
		}
	}
	ls := r.client.LeasesService()
	// containerd's own default for a client lease: an import of a large
	// image on a slow disk must not lose its content half way.
	lease, err := ls.Create(nctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour))
	if err != nil {
		return nil, mapErr(err, "import image for tenant %q", tenant)
	}
	var failed bool
	defer func() {
		var opts []leases.DeleteOpt
		if failed {
			opts = append(opts, leases.SynchronousDelete)
		}
		if err := ls.Delete(context.WithoutCancel(nctx), lease, opts...); err != nil {
			r.log.Warn("remove import lease", "tenant", tenant, "err", err)
		}
	}()
	for _, i := range before {
		if err := ls.AddResource(nctx, lease, leases.Resource{ID: i.Target.Digest.String(), Type: "content"}); err != nil {
			failed = true
			return nil, mapErr(err, "hold image %s during the import", i.Name)
		}
	}
	lctx := leases.WithLease(nctx, lease.ID)
	imgs, err := r.client.Import(lctx, rd)
	if err == nil && len(imgs) == 0 {
		err = fmt.Errorf("%w: the tar names no image: tag it (annotation %s)", isolation.ErrInvalid, "io.containerd.image.name")
	}
	if err != nil {
		failed = true
		// Import writes image records last, after all content is in, so
		// a failure leaves none, unless writing a record itself fails.
		return nil, mapErr(err, "import image for tenant %q", tenant)
	}
	names := make([]string, 0, len(imgs))
	for _, i := range imgs {
		img := ctrd.NewImage(r.client, i)
		if err := img.Unpack(lctx, r.opts.snapshotter); err != nil {
			failed = true
			err = mapErr(err, "unpack %s for tenant %q: the image is damaged", i.Name, tenant)
			if uerr := r.undoImport(nctx, imgs, before); uerr != nil {
				err = errors.Join(err, uerr)
			}
			return nil, err
		}
		names = append(names, i.Name)
	}
	return names, nil
}

// undoImport deletes the images an import made and restores those it
// re-pointed; containerd then collects their content.
func (r *Runtime) undoImport(ctx context.Context, imported, before []images.Image) error {
	ctx = context.WithoutCancel(ctx)
	old := map[string]images.Image{}
	for _, i := range before {
		old[i.Name] = i
	}
	is := r.client.ImageService()
	var errs []error
	for _, i := range imported {
		prev, ok := old[i.Name]
		switch {
		case ok && prev.Target.Digest == i.Target.Digest:
			// The same image was there already: keep it.
		case ok:
			if _, err := is.Update(ctx, prev); err != nil {
				errs = append(errs, mapErr(err, "restore image %s", i.Name))
			}
		default:
			if err := is.Delete(ctx, i.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, mapErr(err, "delete the image %s a failed import left", i.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// Pull fetches ref into the tenant's namespace and unpacks it. A failed
// pull (unknown image, bad credentials) leaves no new namespace.
func (r *Runtime) Pull(ctx context.Context, tenant, ref string, opts isolation.PullOptions) error {
	nctx, err := r.nsContext(ctx, tenant)
	if err != nil {
		return err
	}
	if ref == "" {
		return fmt.Errorf("%w: image reference is empty", isolation.ErrInvalid)
	}
	regOpts := []docker.RegistryOpt{}
	if opts.Username != "" || opts.Secret != "" {
		user, secret := opts.Username, opts.Secret
		regOpts = append(regOpts, docker.WithAuthorizer(docker.NewDockerAuthorizer(
			docker.WithAuthCreds(func(string) (string, string, error) { return user, secret, nil }))))
	}
	if opts.PlainHTTP {
		regOpts = append(regOpts, docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(regOpts...)})
	existed := r.namespaceExists(ctx, isolation.Namespace(tenant))
	img, err := r.client.Pull(nctx, ref, ctrd.WithResolver(resolver), ctrd.WithPullUnpack,
		ctrd.WithPullSnapshotter(r.opts.snapshotter))
	if err != nil {
		r.dropNamespace(ctx, tenant, existed)
		var status remoteerrors.ErrUnexpectedStatus
		if errors.As(err, &status) && (status.StatusCode == 401 || status.StatusCode == 403) {
			return fmt.Errorf("%w: pull %q for tenant %q: the registry refused the credentials (%s): %w",
				isolation.ErrPermission, ref, tenant, status.Status, err)
		}
		return mapErr(err, "pull %q for tenant %q", ref, tenant)
	}
	r.log.Info("image pulled", "tenant", tenant, "image", img.Name())
	return nil
}

func (r *Runtime) namespaceExists(ctx context.Context, ns string) bool {
	nss, err := r.client.NamespaceService().List(ctx)
	if err != nil {
		return true // unknown: never delete
	}
	for _, n := range nss {
		if n == ns {
			return true
		}
	}
	return false
}

// dropNamespace removes a namespace a failed call created. containerd
// refuses to delete a namespace that holds anything, so a concurrent user
// of the tenant is safe.
func (r *Runtime) dropNamespace(ctx context.Context, tenant string, existed bool) {
	if existed {
		return
	}
	ctx = context.WithoutCancel(ctx)
	ns := isolation.Namespace(tenant)
	// The lease of a failed pull or import may still be going away.
	for i := 0; i < 10; i++ {
		err := r.client.NamespaceService().Delete(ctx, ns)
		if err == nil || errdefs.IsNotFound(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.log.Warn("could not remove the namespace a failed call created", "namespace", ns)
}

// refLocks are read-write locks by container, made on demand and dropped
// when unused.
type refLocks struct {
	mu sync.Mutex
	m  map[isolation.Ref]*refLock
}

type refLock struct {
	sync.RWMutex
	users int
}

func (l *refLocks) acquire(ref isolation.Ref) *refLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[isolation.Ref]*refLock{}
	}
	rl := l.m[ref]
	if rl == nil {
		rl = &refLock{}
		l.m[ref] = rl
	}
	rl.users++
	return rl
}

func (l *refLocks) release(ref isolation.Ref, rl *refLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rl.users--; rl.users == 0 {
		delete(l.m, ref)
	}
}

func (l *refLocks) lock(ref isolation.Ref) (unlock func()) {
	rl := l.acquire(ref)
	rl.Lock()
	return func() { rl.Unlock(); l.release(ref, rl) }
}

func (l *refLocks) rlock(ref isolation.Ref) (unlock func()) {
	rl := l.acquire(ref)
	rl.RLock()
	return func() { rl.RUnlock(); l.release(ref, rl) }
}
