package containerd

// Images per tenant: Import and Pull, which leave nothing behind when
// they fail.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gpufarm/gpufarm/isolation"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
)

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
	r.slots.mu.Lock()
	delete(r.slots.known, ns)
	r.slots.mu.Unlock()
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
