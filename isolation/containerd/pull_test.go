package containerd_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
)

// registry serves one OCI image layout tar as a Docker registry (v2 API)
// on loopback, behind basic auth.
type registry struct {
	blobs    map[string][]byte // digest -> content
	manifest string            // digest of the image manifest
	user     string
	secret   string
}

func newRegistry(t *testing.T, layoutTar, user, secret string) *httptest.Server {
	t.Helper()
	f, err := os.Open(layoutTar)
	require.NoError(t, err)
	defer f.Close()
	reg := &registry{blobs: map[string][]byte{}, user: user, secret: secret}
	tr := tar.NewReader(f)
	var index []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		switch {
		case h.Name == "index.json":
			index = b
		case strings.HasPrefix(h.Name, "blobs/sha256/") && h.Typeflag == tar.TypeReg:
			reg.blobs["sha256:"+strings.TrimPrefix(h.Name, "blobs/sha256/")] = b
		}
	}
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	require.NoError(t, json.Unmarshal(index, &idx))
	require.Len(t, idx.Manifests, 1)
	reg.manifest = idx.Manifests[0].Digest
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv
}

func (reg *registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != reg.user || p != reg.secret {
		w.Header().Set("WWW-Authenticate", `Basic realm="gpufarm-test"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	path := r.URL.Path
	if path == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	// /v2/<name>/manifests/<ref> or /v2/<name>/blobs/<digest>
	var ref string
	var isManifest bool
	if i := strings.LastIndex(path, "/manifests/"); i > 0 {
		ref, isManifest = path[i+len("/manifests/"):], true
		if !strings.HasPrefix(ref, "sha256:") {
			if ref != "v1" {
				http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
				return
			}
			ref = reg.manifest
		}
	} else if i := strings.LastIndex(path, "/blobs/"); i > 0 {
		ref = path[i+len("/blobs/"):]
	}
	b, ok := reg.blobs[ref]
	if !ok {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
		return
	}
	if isManifest {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Docker-Content-Digest", ref)
	w.Header().Set("Content-Length", itoa(int64(len(b))))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

// Pull by reference from a registry with credentials, then run the image;
// wrong credentials and unknown images are clear errors that leave nothing.
func TestPullWithCredentials(t *testing.T) {
	f := newFixture(t)
	srv := newRegistry(t, images.tar(t, probeRef), "farm", "s3cret")
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/gpufarm/probe:v1"
	t.Logf("registry on %s serving %s", srv.URL, ref)
	nsBefore := namespaceList(t, f)

	err := f.rt.Pull(ctx(t), "pullers", ref, isolation.PullOptions{Username: "farm", Secret: "wrong", PlainHTTP: true})
	require.Error(t, err, "wrong credentials")
	assert.ErrorIs(t, err, isolation.ErrPermission)
	t.Logf("wrong credentials: %v", err)
	assert.Equal(t, nsBefore, namespaceList(t, f), "a failed pull leaves no namespace")

	err = f.rt.Pull(ctx(t), "pullers", host+"/gpufarm/probe:v2", isolation.PullOptions{Username: "farm", Secret: "s3cret", PlainHTTP: true})
	require.Error(t, err, "unknown tag")
	assert.ErrorIs(t, err, isolation.ErrNotFound)
	t.Logf("unknown tag: %v", err)

	require.NoError(t, f.rt.Pull(ctx(t), "pullers", ref, isolation.PullOptions{Username: "farm", Secret: "s3cret", PlainHTTP: true}))
	es, out := f.run(t, isolation.Spec{ID: "pulled", Tenant: "pullers", Image: ref, Args: []string{"exit", "-code", "0"}})
	assert.Equal(t, 0, es.Code, out)
	assert.Contains(t, out, "exiting with 0")

	_, err = f.rt.Create(ctx(t), isolation.Spec{ID: "borrowed", Tenant: "others", Image: ref})
	assert.ErrorIs(t, err, isolation.ErrNotFound, "an image pulled for one tenant is not another's")
}
