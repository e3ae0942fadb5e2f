package containerd

// Create: validate, resolve CDI devices and the image, build the OCI
// spec, then make the snapshot and the container under a lease.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/isolation"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

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
		var errs []error
		spec.GPUs, errs = r.resolveGPUs(spec.GPUs)
		problems = append(problems, errs...)
		devs = validDevices(spec.GPUs)
	}
	if err := spec.Validate(); err != nil {
		problems = append(problems, err)
	}
	pol := r.opts.tenancy.For(spec.Tenant)
	s := pol.Apply(spec).WithDefaults()
	if err := pol.Check(s); err != nil {
		problems = append(problems, err)
	}
	ref := isolation.Ref{Tenant: s.Tenant, ID: s.ID}
	if s.Network == isolation.NetworkBridge {
		if err := r.net.available(); err != nil {
			problems = append(problems, err)
		}
	}
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
	slot, err := r.tenantSlot(nctx, s.Tenant)
	if err != nil {
		return isolation.Info{}, err
	}
	var ids uint32 // the tenant's first host id; 0 without user namespaces
	if r.opts.userns {
		ids = idBase(slot)
		if err := giveMounts(s, ids); err != nil {
			return isolation.Info{}, err
		}
	}
	// The whole OCI spec, CDI edits included, is built before anything
	// exists, so its errors (a device node missing on the host) cost nothing.
	ociSpec, err := r.buildSpec(nctx, s, meta.config, ids)
	if err != nil {
		return isolation.Info{}, err
	}
	labels := s.ContainerLabels()
	if s.Limits.MemoryBytes > 0 {
		labels[labelMemory] = strconv.FormatInt(s.Limits.MemoryBytes, 10)
	}
	if s.Network == isolation.NetworkBridge {
		labels[labelNetwork] = string(isolation.NetworkBridge)
	}

	ctr, err := r.newContainer(nctx, s, ociSpec, meta, img, labels, ids)
	if errdefs.IsNotFound(err) {
		// The image's unpacked layers went away since they were cached
		// (images pruned): unpack again, once.
		r.forgetImage(nctx, img)
		if meta, err = r.imageMeta(nctx, img); err != nil {
			return isolation.Info{}, err
		}
		ctr, err = r.newContainer(nctx, s, ociSpec, meta, img, labels, ids)
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
func (r *Runtime) newContainer(ctx context.Context, s isolation.Spec, ociSpec *oci.Spec, meta imageMeta, img images.Image, labels map[string]string, idBase uint32) (ctrd.Container, error) {
	ls := r.client.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(createLeaseExpiry),
		leases.WithLabel(leaseLabel, s.ID))
	if err != nil {
		return nil, err
	}
	snapshot := r.withSnapshot(s.ID, meta.chainID, img.Name)
	if idBase > 0 {
		snapshot = r.withRemappedSnapshot(s.ID, meta, img.Name, idBase)
	}
	ctr, err := r.client.NewContainer(leases.WithLease(ctx, lease.ID), s.ID,
		snapshot,
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
	config       imagespec.ImageConfig
	configDigest digest.Digest
	chainID      string
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
	// Creates of the same image at once (the miners of a whole rig) read
	// and unpack it once. The shared work outlives a caller that gives up,
	// since the others still wait for it; each caller waits as long as its
	// own ctx allows.
	ch := r.unpacks.DoChan(key, func() (any, error) {
		return r.loadImageMeta(context.WithoutCancel(ctx), key, i)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return imageMeta{}, res.Err
		}
		return res.Val.(imageMeta), nil
	case <-ctx.Done():
		return imageMeta{}, mapErr(ctx.Err(), "read image %q", i.Name)
	}
}

// loadImageMeta reads an image's config and layers, unpacks it if need be,
// and caches the result.
func (r *Runtime) loadImageMeta(ctx context.Context, key string, i images.Image) (imageMeta, error) {
	ctx, cancel := context.WithTimeout(ctx, unpackTimeout)
	defer cancel()
	img := ctrd.NewImage(r.client, i)
	cfg, cfgDigest, err := imageConfig(ctx, img)
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
	m := imageMeta{config: cfg, configDigest: cfgDigest, chainID: identity.ChainID(diffIDs).String()}
	r.imagesMu.Lock()
	r.images[key] = m
	r.imagesMu.Unlock()
	return m, nil
}

// unpackTimeout bounds the unpack that concurrent Creates share: no one
// caller's deadline applies to it.
const unpackTimeout = 30 * time.Minute

func (r *Runtime) forgetImage(ctx context.Context, img images.Image) {
	r.imagesMu.Lock()
	delete(r.images, imageKey(ctx, img))
	r.imagesMu.Unlock()
}

// resolveGPUs gives each GPU the UUID its CDI name resolves to, expands a
// name that stands for several GPUs ("all") into their UUID names, and
// refuses a UUID the caller gave that is not the one the name resolves
// to: the labels, which later decide who holds which GPU, come from what
// is injected, never from the caller's word.
func (r *Runtime) resolveGPUs(gpus []isolation.GPU) ([]isolation.GPU, []error) {
	var out []isolation.GPU
	var errs []error
	for i, g := range gpus {
		vendorClass, _, ok := strings.Cut(g.Device, "=")
		if !ok {
			out = append(out, g) // malformed: Validate names it
			continue
		}
		uuids := r.cdi.uuidsOf(g.Device)
		switch {
		case len(uuids) == 0:
			out = append(out, g) // unknown, or no GPU of its own: Resolve or Validate names it
		case g.UUID != "" && (len(uuids) > 1 || uuids[0] != g.UUID):
			errs = append(errs, fmt.Errorf("%w: spec.GPUs[%d]: %q is GPU %s, not %q: name the GPU you mean", isolation.ErrInvalid, i,
				g.Device, strings.Join(uuids, ", "), g.UUID))
		case len(uuids) == 1:
			out = append(out, isolation.GPU{Device: g.Device, UUID: uuids[0]})
		default:
			for _, u := range uuids {
				out = append(out, isolation.GPU{Device: vendorClass + "=" + u, UUID: u})
			}
		}
	}
	return out, errs
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
