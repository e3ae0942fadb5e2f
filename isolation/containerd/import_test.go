package containerd_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
)

var (
	corruptBytes  = []byte("this is not a gzip stream")
	corruptDigest = digest.FromBytes(corruptBytes)
)

// corruptLayer rewrites an OCI layout tar so its layer is not gzip, with
// every digest and size made to match: containerd imports it, and
// unpacking it fails.
func corruptLayer(t *testing.T, layoutTar string) string {
	t.Helper()
	f, err := os.Open(layoutTar)
	require.NoError(t, err)
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			files[h.Name] = b
		}
	}
	blob := func(digest string) string { return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") }
	put := func(b []byte) (string, int64) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		files[blob(d)] = b
		return d, int64(len(b))
	}
	var index map[string]any
	require.NoError(t, json.Unmarshal(files["index.json"], &index))
	mdesc := index["manifests"].([]any)[0].(map[string]any)
	var manifest map[string]any
	require.NoError(t, json.Unmarshal(files[blob(mdesc["digest"].(string))], &manifest))
	ldesc := manifest["layers"].([]any)[0].(map[string]any)
	delete(files, blob(ldesc["digest"].(string)))
	ldesc["digest"], ldesc["size"] = put(corruptBytes)
	// The config names the layer by the same digest, so no snapshot of the
	// good image stands in for it.
	cdesc := manifest["config"].(map[string]any)
	var config map[string]any
	require.NoError(t, json.Unmarshal(files[blob(cdesc["digest"].(string))], &config))
	config["rootfs"].(map[string]any)["diff_ids"] = []string{corruptDigest.String()}
	cb, err := json.Marshal(config)
	require.NoError(t, err)
	delete(files, blob(cdesc["digest"].(string)))
	cdesc["digest"], cdesc["size"] = put(cb)
	mb, err := json.Marshal(manifest)
	require.NoError(t, err)
	delete(files, blob(mdesc["digest"].(string)))
	mdesc["digest"], mdesc["size"] = put(mb)
	files["index.json"], err = json.Marshal(index)
	require.NoError(t, err)

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for name, b := range files {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(b)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	p := filepath.Join(t.TempDir(), "corrupt.tar")
	require.NoError(t, os.WriteFile(p, out.Bytes(), 0o644))
	return p
}

// An import whose layer does not unpack leaves the tenant as it was: a new
// tenant gets no namespace, an existing one keeps the image it had under
// that name, and the damaged image is not left behind.
func TestImportOfACorruptLayerLeavesNothing(t *testing.T) {
	f := newFixture(t)
	bad := corruptLayer(t, images.tar(t, probeRef))
	importBad := func(t *testing.T, tenant string) {
		t.Helper()
		r, err := os.Open(bad)
		require.NoError(t, err)
		defer r.Close()
		_, err = f.rt.Import(ctx(t), tenant, r)
		require.Error(t, err)
		t.Logf("import of a corrupt layer: %v", err)
		assert.Contains(t, err.Error(), "unpack "+probeRef)
	}

	t.Run("new tenant", func(t *testing.T) {
		before := namespaceList(t, f)
		importBad(t, "corrupt-new")
		assert.Equal(t, before, namespaceList(t, f), "no namespace left")
	})

	t.Run("tenant with the good image under that name", func(t *testing.T) {
		f.importImage(t, "corrupt-old", probeRef)
		nctx := namespaces.WithNamespace(ctx(t), isolation.Namespace("corrupt-old"))
		good, err := f.client.ImageService().Get(nctx, probeRef)
		require.NoError(t, err)
		importBad(t, "corrupt-old")
		img, err := f.client.ImageService().Get(nctx, probeRef)
		require.NoError(t, err, "the tenant keeps its image")
		assert.Equal(t, good.Target.Digest, img.Target.Digest, "pointing at the good content again")
		assert.Contains(t, namespaceList(t, f), isolation.Namespace("corrupt-old"))
		es, out := f.run(t, isolation.Spec{ID: "still-good", Tenant: "corrupt-old", Image: probeRef, Args: []string{"exit", "-code", "0"}})
		assert.Equal(t, 0, es.Code, out)
	})

	t.Run("tenant with other images", func(t *testing.T) {
		f.importImage(t, "corrupt-other", trainerRef)
		importBad(t, "corrupt-other")
		nctx := namespaces.WithNamespace(ctx(t), isolation.Namespace("corrupt-other"))
		imgs, err := f.client.ImageService().List(nctx)
		require.NoError(t, err)
		var names []string
		for _, i := range imgs {
			names = append(names, i.Name)
		}
		assert.Equal(t, []string{trainerRef}, names, "the damaged image is deleted, the other kept")
		_, err = f.client.ContentStore().Info(nctx, corruptDigest)
		assert.True(t, errdefs.IsNotFound(err), "the damaged layer's content is collected: %v", err)
	})
}
