package containerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	ctrdimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// TestImagesArePrivateToTheirTenant: an image one tenant imported cannot be
// run by another, neither by its name nor by claiming its digest with an
// image record of its own: the daemon keeps content per namespace
// (content_sharing_policy = "isolated", as isolation/containerd's doc
// says a node must be configured).
func TestImagesArePrivateToTheirTenant(t *testing.T) {
	f := newFixture(t)
	f.importImage(t, "owner", probeRef)
	c := ctx(t)

	_, err := f.rt.Create(c, isolation.Spec{ID: "by-name", Tenant: "thief", Image: probeRef, Args: []string{"report"}})
	require.ErrorIs(t, err, isolation.ErrNotFound, "another tenant's image by its name")

	// The thief knows the digests: it tries to claim every blob of the
	// image without sending it (a content writer expecting the digest, as
	// containerd's shared policy honours), then writes an image record.
	owner := namespaces.WithNamespace(c, isolation.Namespace("owner"))
	owned, err := f.client.ImageService().Get(owner, probeRef)
	require.NoError(t, err)
	thief := namespaces.WithNamespace(c, isolation.Namespace("thief"))
	cs := f.client.ContentStore()
	var blobs []ocispec.Descriptor
	require.NoError(t, ctrdimages.Walk(owner, ctrdimages.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		blobs = append(blobs, d)
		return ctrdimages.Children(ctx, cs, d)
	}), owned.Target))
	claimed := 0
	for _, d := range blobs {
		w, err := cs.Writer(thief, content.WithRef("steal-"+d.Digest.String()), content.WithDescriptor(d))
		if errdefs.IsAlreadyExists(err) {
			claimed++ // shared content: the digest alone was enough
			continue
		}
		require.NoError(t, err)
		err = w.Commit(thief, d.Size, d.Digest)
		_ = w.Close()
		if err == nil {
			claimed++
		}
	}
	assert.Zero(t, claimed, "no blob of %d is the thief's without its bytes", len(blobs))
	_, err = f.client.ImageService().Create(thief, ctrdimages.Image{Name: "stolen:latest", Target: owned.Target})
	require.NoError(t, err, "an image record is only a name")
	t.Cleanup(func() { _ = f.client.ImageService().Delete(thief, "stolen:latest") })
	_, err = f.rt.Create(c, isolation.Spec{ID: "by-digest", Tenant: "thief", Image: "stolen:latest", Args: []string{"report"}})
	require.Error(t, err, "the content behind the digest is not the thief's")
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	t.Logf("by digest: %v", err)
	infos, err := f.rt.List(c, isolation.Filter{Tenant: "thief"})
	require.NoError(t, err)
	assert.Empty(t, infos, "no container was made")
}

// hostUID is the host uid a container's first process runs as.
func (f *fixture) hostUID(t *testing.T, ref isolation.Ref) uint32 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", f.taskPID(t, ref)))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, err := strconv.ParseUint(strings.Fields(rest)[1], 10, 32) // effective
			require.NoError(t, err)
			return uint32(uid)
		}
	}
	t.Fatalf("no Uid line in the status of %s", ref)
	return 0
}

// owner is the host uid that owns path.
func owner(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Uid
}

// TestTenantsHaveTheirOwnHostIDs: containers of different tenants run as
// different host users, from ranges no other tenant has; what a tenant
// writes to its mount is owned by it on the host; a tenant cannot mount
// what another owns; the ranges survive a restart of the runtime.
func TestTenantsHaveTheirOwnHostIDs(t *testing.T) {
	f := newFixture(t)
	uids, dirs := map[string]uint32{}, map[string]string{}
	for _, tenant := range []string{"ids-a", "ids-b"} {
		f.importImage(t, tenant, probeRef)
		dirs[tenant] = t.TempDir()
		spec := isolation.Spec{ID: "sleeper", Tenant: tenant, Image: probeRef, Args: []string{"sleep"},
			Mounts: []isolation.Mount{{Source: dirs[tenant], Target: "/data"}}}
		ref := f.start(t, spec)
		f.waitOutput(t, ref, "sleeping")
		uids[tenant] = f.hostUID(t, ref)
		t.Logf("tenant %s: uid 65534 inside is host uid %d", tenant, uids[tenant])

		spec.ID, spec.Args = "writer", []string{"try", "write", "/data/secret"}
		es, out := f.run(t, spec)
		require.Zero(t, es.Code, out)
		assert.Contains(t, out, `"result":"ok"`)
		assert.Equal(t, uids[tenant], owner(t, filepath.Join(dirs[tenant], "secret")), "the file is the tenant's on the host")
	}
	assert.NotEqual(t, uids["ids-a"], uids["ids-b"])
	for tenant, uid := range uids {
		assert.GreaterOrEqual(t, uid, uint32(containerd.IDBase), "tenant %s is nobody else on the host", tenant)
		assert.NotEqual(t, uint32(65534), uid, "tenant %s is not the host's nobody", tenant)
	}

	// Tenant b asks for a's folder: refused before anything is made.
	_, err := f.rt.Create(ctx(t), isolation.Spec{ID: "thief", Tenant: "ids-b", Image: probeRef, Args: []string{"report"},
		Mounts: []isolation.Mount{{Source: dirs["ids-a"], Target: "/data", ReadOnly: true}}})
	require.ErrorIs(t, err, isolation.ErrDenied)
	assert.Contains(t, err.Error(), "belongs to another tenant")
	_, err = f.rt.Inspect(ctx(t), isolation.Ref{Tenant: "ids-b", ID: "thief"})
	assert.ErrorIs(t, err, isolation.ErrNotFound)

	// A new runtime, as after an upgrade of the SDK, keeps the ranges.
	rt := f.newRuntime(t)
	f.rt = rt
	ref := f.start(t, isolation.Spec{ID: "again", Tenant: "ids-a", Image: probeRef, Args: []string{"sleep"}})
	f.waitOutput(t, ref, "sleeping")
	assert.Equal(t, uids["ids-a"], f.hostUID(t, ref))
}
