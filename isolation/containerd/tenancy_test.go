package containerd_test

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	ctrdimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
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
