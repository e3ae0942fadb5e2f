package ociimage_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/internal/containerdtest"
)

// containerd imports the layout Build writes and unpacks it, in a private
// daemon (skipped without root and containerd, failed in CI).
func TestContainerdImportsAndUnpacks(t *testing.T) {
	b := builtMiner(t)
	c := containerdtest.Start(t).Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, "gpufarm-test")

	imgs, err := c.Import(ctx, bytes.NewReader(b))
	require.NoError(t, err, "containerd imports the layout")
	require.Len(t, imgs, 1)
	assert.Equal(t, minerSpec().Ref, imgs[0].Name, "named by io.containerd.image.name")
	t.Logf("imported %s (%s) into containerd", imgs[0].Name, imgs[0].Target.Digest)

	listed, err := c.ListImages(ctx)
	require.NoError(t, err)
	var names []string
	for _, i := range listed {
		names = append(names, i.Name())
	}
	assert.Contains(t, names, minerSpec().Ref)

	img, err := c.GetImage(ctx, minerSpec().Ref)
	require.NoError(t, err)
	require.NoError(t, img.Unpack(ctx, "overlayfs"))
	unpacked, err := img.IsUnpacked(ctx, "overlayfs")
	require.NoError(t, err)
	assert.True(t, unpacked, "layer unpacked into the overlayfs snapshotter")

	spec, err := img.Spec(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"/app/fakeminer"}, spec.Config.Entrypoint)
	assert.Equal(t, "65534:65534", spec.Config.User)
	assert.Equal(t, "linux", spec.OS)
	diffIDs, err := img.RootFS(ctx)
	require.NoError(t, err)
	require.Len(t, diffIDs, 1)
	assert.Equal(t, decode(t, b).config.RootFS.DiffIDs[0], diffIDs[0].String())
}
