package containerd

// Each tenant's containers run in a user namespace of their own: uids and
// gids 0 to 65535 inside map to a range of host ids that belongs to the
// tenant alone, so two tenants never share a host identity (files one
// writes to shared storage are not the other's), and root inside, where a
// policy allows it, is nobody outside.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gpufarm/gpufarm/isolation"
)

const (
	// IDBase is the first host uid and gid given to tenants: above the
	// subordinate ranges distributions hand to users (100000 and up).
	IDBase = 1 << 24
	// IDsPerTenant is the size of a tenant's range: ids 0 to 65535 inside.
	IDsPerTenant = 1 << 16
)

// idBase is the first host id of a tenant slot's range.
func idBase(slot int) uint32 { return IDBase + uint32(slot)*IDsPerTenant }

// idMap maps ids 0 to 65535 inside to the tenant's range.
func idMap(base uint32) []specs.LinuxIDMapping {
	return []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: IDsPerTenant}}
}

// withUserNamespace puts the container in a user namespace of the
// tenant's range. Apply it after CDI: device nodes cannot be made in a user
// namespace, so they are bound from the host (hostOf maps each container
// path to the host's node), the device cgroup still deciding which may be
// opened.
func withUserNamespace(base uint32, hostOf map[string]string) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		if err := oci.WithUserNamespace(idMap(base), idMap(base))(ctx, client, c, s); err != nil {
			return err
		}
		for _, d := range s.Linux.Devices {
			s.Mounts = append(s.Mounts, specs.Mount{
				Destination: d.Path, Type: "bind", Source: cmp.Or(hostOf[d.Path], d.Path),
				Options: []string{"bind", "nosuid", "noexec"},
			})
		}
		s.Linux.Devices = nil
		if !slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace && n.Path == "" }) {
			// A new sysfs needs a network namespace the container's user
			// namespace owns; in the host's or in one the runtime made
			// (the tenant network), the host's is bound, read-only.
			for i, m := range s.Mounts {
				if m.Destination == "/sys" {
					s.Mounts[i] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys",
						Options: []string{"rbind", "rprivate", "nosuid", "noexec", "nodev", "ro"}}
				}
			}
		}
		return nil
	}
}

// withRemappedSnapshot prepares the container's writable snapshot on the
// image's layers with their owners moved into the tenant's range. The
// remapped layers are made once per image and tenant, by copying the
// image's files up and changing their owners (containerd 1.6 has no
// idmapped mounts), and kept as long as the image: its config blob holds a
// garbage collection reference to them.
func (r *Runtime) withRemappedSnapshot(key string, meta imageMeta, image string, base uint32) ctrd.NewContainerOpts {
	return func(ctx context.Context, client *ctrd.Client, c *containers.Container) error {
		sn := client.SnapshotService(r.opts.snapshotter)
		remapped := fmt.Sprintf("%s-ids-%d", meta.chainID, base)
		lock, _ := r.slots.remaps.LoadOrStore(remapped, &sync.Mutex{})
		lock.(*sync.Mutex).Lock()
		_, err := sn.Stat(ctx, remapped)
		if errdefs.IsNotFound(err) {
			err = r.remap(ctx, sn, remapped, meta.chainID, base)
			if err == nil {
				ref := fmt.Sprintf("containerd.io/gc.ref.snapshot.%s/ids-%d", r.opts.snapshotter, base)
				_, err = client.ContentStore().Update(ctx, content.Info{Digest: meta.configDigest, Labels: map[string]string{ref: remapped}}, "labels."+ref)
			}
		}
		lock.(*sync.Mutex).Unlock()
		if err != nil {
			return err
		}
		if _, err := sn.Prepare(ctx, key, remapped); err != nil {
			return err
		}
		c.Snapshotter, c.SnapshotKey, c.Image = r.opts.snapshotter, key, image
		return nil
	}
}

// remap commits the image's layers, owners moved by base, as remapped.
func (r *Runtime) remap(ctx context.Context, sn snapshots.Snapshotter, remapped, chainID string, base uint32) error {
	work := remapped + "-remap"
	_ = sn.Remove(ctx, work) // what an interrupted remap left
	mounts, err := sn.Prepare(ctx, work, chainID)
	if err != nil {
		return err
	}
	err = mount.WithTempMount(ctx, mounts, func(root string) error {
		type inode struct{ dev, ino uint64 }
		seen := map[inode]bool{} // hard links: moved once
		return filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			st := info.Sys().(*syscall.Stat_t)
			if info.Mode().IsRegular() && st.Nlink > 1 {
				if seen[inode{st.Dev, st.Ino}] {
					return nil
				}
				seen[inode{st.Dev, st.Ino}] = true
			}
			if st.Uid >= IDsPerTenant || st.Gid >= IDsPerTenant {
				return fmt.Errorf("%s is owned by %d:%d, outside the ids a tenant maps", path, st.Uid, st.Gid)
			}
			// Lchown: a link is changed, never what it points to.
			if err := os.Lchown(path, int(base+st.Uid), int(base+st.Gid)); err != nil {
				return err
			}
			// chown clears set-id bits; the image's are the image's.
			if m := info.Mode(); m&os.ModeSymlink == 0 && m&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
				return os.Chmod(path, m)
			}
			return nil
		})
	})
	if err == nil {
		err = sn.Commit(ctx, remapped, work)
	}
	if err != nil {
		_ = sn.Remove(context.WithoutCancel(ctx), work)
		return fmt.Errorf("move the image's owners into the tenant's ids: %w", err)
	}
	return nil
}

// giveMounts checks that no mount of s is another tenant's and gives the
// tenant the sources of its writable mounts that root owns, so what it
// writes there is owned by its ids. Only the source itself changes owner,
// never what is in it.
func giveMounts(s isolation.Spec, base uint32) error {
	uid, gid, _ := isolation.ParseUser(s.User)
	var errs []error
	for i, m := range s.Mounts {
		var st syscall.Stat_t
		if err := syscall.Stat(m.Source, &st); err != nil {
			errs = append(errs, fmt.Errorf("%w: spec.Mounts[%d]: source %s: %w", isolation.ErrInvalid, i, m.Source, err))
			continue
		}
		switch {
		case st.Uid >= IDBase && (st.Uid < base || st.Uid >= base+IDsPerTenant):
			errs = append(errs, fmt.Errorf("%w: spec.Mounts[%d]: %s belongs to another tenant (host uid %d): mount only what is this tenant's", isolation.ErrDenied, i, m.Source, st.Uid))
		case st.Uid == 0 && !m.ReadOnly:
			if err := os.Chown(m.Source, int(base+uid), int(base+gid)); err != nil {
				errs = append(errs, fmt.Errorf("spec.Mounts[%d]: give %s to the tenant: %w", i, m.Source, err))
			}
		}
	}
	return errors.Join(errs...)
}
