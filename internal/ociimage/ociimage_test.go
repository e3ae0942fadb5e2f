package ociimage_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/internal/ociimage"
)

const minerPkg = "github.com/gpufarm/gpufarm/internal/fakeminer"

func minerSpec() ociimage.Spec {
	return ociimage.Spec{
		Package: minerPkg,
		Ref:     "gpufarm.test/fakeminer:v1",
		Files: map[string][]byte{
			"/etc/gpufarm/miner.json": []byte(`{"pool":"none"}`),
			"data/readme.txt":         []byte("hello"),
		},
		Env:  []string{"MINER_MODE=test"},
		Args: []string{"-listen", "127.0.0.1:4067"},
	}
}

// The miner image is built once per test binary and shared: a build links
// a fresh binary, which is the slow part.
var (
	minerOnce sync.Once
	minerTar  []byte
	minerErr  error
)

func builtMiner(t *testing.T) []byte {
	t.Helper()
	minerOnce.Do(func() {
		var buf bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		minerErr = ociimage.Build(ctx, minerSpec(), &buf)
		minerTar = buf.Bytes()
	})
	require.NoError(t, minerErr)
	return minerTar
}

// layout is an OCI image layout tar read back into memory.
type layout struct {
	files map[string][]byte
	names []string // in tar order
}

func readLayout(t *testing.T, b []byte) layout {
	t.Helper()
	l := layout{files: map[string][]byte{}}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		l.names = append(l.names, h.Name)
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			require.NoError(t, err)
			l.files[h.Name] = data
		}
	}
	return l
}

// blob returns a blob by digest, checking its content matches the digest.
func (l layout) blob(t *testing.T, digest string) []byte {
	t.Helper()
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	require.True(t, ok, digest)
	b, ok := l.files["blobs/sha256/"+hexDigest]
	require.True(t, ok, "blob %s missing", digest)
	sum := sha256.Sum256(b)
	require.Equal(t, hexDigest, hex.EncodeToString(sum[:]), "blob content matches its digest")
	return b
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	} `json:"platform"`
}

type layerEntry struct {
	hdr  *tar.Header
	data []byte
}

// image is the decoded content of a one-manifest layout.
type image struct {
	index struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}
	manifest struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
	config struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			User       string   `json:"User"`
			Env        []string `json:"Env"`
			Entrypoint []string `json:"Entrypoint"`
			Cmd        []string `json:"Cmd"`
		} `json:"config"`
		RootFS struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	layerTar []byte
	layer    map[string]layerEntry
}

func decode(t *testing.T, b []byte) image {
	t.Helper()
	l := readLayout(t, b)
	var img image
	assert.JSONEq(t, `{"imageLayoutVersion":"1.0.0"}`, string(l.files["oci-layout"]))
	require.NoError(t, json.Unmarshal(l.files["index.json"], &img.index))
	require.Len(t, img.index.Manifests, 1)
	require.NoError(t, json.Unmarshal(l.blob(t, img.index.Manifests[0].Digest), &img.manifest))
	require.NoError(t, json.Unmarshal(l.blob(t, img.manifest.Config.Digest), &img.config))
	require.Len(t, img.manifest.Layers, 1)
	gz := l.blob(t, img.manifest.Layers[0].Digest)
	assert.Len(t, gz, img.manifest.Layers[0].Size)
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	img.layerTar, err = io.ReadAll(zr)
	require.NoError(t, err)

	img.layer = map[string]layerEntry{}
	tr := tar.NewReader(bytes.NewReader(img.layerTar))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		img.layer[strings.TrimSuffix(h.Name, "/")] = layerEntry{hdr: h, data: data}
	}
	return img
}

func TestBuildWritesImportableLayout(t *testing.T) {
	b := builtMiner(t)
	t.Logf("built %s from %s: %d bytes", minerSpec().Ref, minerPkg, len(b))
	l := readLayout(t, b)
	assert.Equal(t, []string{"blobs/", "blobs/sha256/"}, l.names[:2], "directories first")
	assert.Equal(t, []string{"index.json", "oci-layout"}, l.names[len(l.names)-2:], "entries sorted")

	img := decode(t, b)
	assert.Equal(t, 2, img.index.SchemaVersion)
	assert.Equal(t, ociimage.MediaTypeIndex, img.index.MediaType)
	m := img.index.Manifests[0]
	assert.Equal(t, ociimage.MediaTypeManifest, m.MediaType)
	assert.Equal(t, map[string]string{
		"io.containerd.image.name":          "gpufarm.test/fakeminer:v1",
		"org.opencontainers.image.ref.name": "v1",
	}, m.Annotations)
	require.NotNil(t, m.Platform)
	assert.Equal(t, runtime.GOARCH, m.Platform.Architecture)
	assert.Equal(t, "linux", m.Platform.OS)

	assert.Equal(t, ociimage.MediaTypeManifest, img.manifest.MediaType)
	assert.Equal(t, ociimage.MediaTypeConfig, img.manifest.Config.MediaType)
	assert.Equal(t, ociimage.MediaTypeLayer, img.manifest.Layers[0].MediaType)

	c := img.config
	assert.Equal(t, runtime.GOARCH, c.Architecture)
	assert.Equal(t, "linux", c.OS)
	assert.Equal(t, []string{"/app/fakeminer"}, c.Config.Entrypoint)
	assert.Equal(t, []string{"-listen", "127.0.0.1:4067"}, c.Config.Cmd)
	assert.Equal(t, ociimage.DefaultUser, c.Config.User)
	assert.Contains(t, c.Config.Env, "MINER_MODE=test")
	assert.Contains(t, c.Config.Env, "PATH=/app:/usr/local/bin:/usr/bin:/bin", "a default PATH when none is given")
	assert.Equal(t, "layers", c.RootFS.Type)
	sum := sha256.Sum256(img.layerTar)
	assert.Equal(t, []string{"sha256:" + hex.EncodeToString(sum[:])}, c.RootFS.DiffIDs, "diff_id is the uncompressed layer's digest")
}

func TestBuildLayerContent(t *testing.T) {
	img := decode(t, builtMiner(t))
	tests := []struct {
		path string
		typ  byte
		mode int64
	}{
		{"app", tar.TypeDir, 0o755},
		{"app/fakeminer", tar.TypeReg, 0o755},
		{"etc", tar.TypeDir, 0o755},
		{"etc/passwd", tar.TypeReg, 0o644},
		{"etc/group", tar.TypeReg, 0o644},
		{"tmp", tar.TypeDir, 0o1777},
		{"etc/gpufarm", tar.TypeDir, 0o755},
		{"etc/gpufarm/miner.json", tar.TypeReg, 0o644},
		{"data", tar.TypeDir, 0o755},
		{"data/readme.txt", tar.TypeReg, 0o644},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			e, ok := img.layer[tc.path]
			require.True(t, ok, "missing %s", tc.path)
			assert.Equal(t, tc.typ, e.hdr.Typeflag)
			assert.Equal(t, tc.mode, e.hdr.Mode, "mode %o", e.hdr.Mode)
			assert.Equal(t, time.Unix(0, 0).UTC(), e.hdr.ModTime.UTC(), "fixed mtime")
			assert.Zero(t, e.hdr.Uid)
			assert.Zero(t, e.hdr.Gid)
		})
	}
	assert.Len(t, img.layer, len(tests), "nothing else in the layer")
	assert.Contains(t, string(img.layer["etc/passwd"].data), "nobody:x:65534:65534:")
	assert.Contains(t, string(img.layer["etc/group"].data), ":x:65534:")
	assert.Equal(t, `{"pool":"none"}`, string(img.layer["etc/gpufarm/miner.json"].data))

	f, err := elf.NewFile(bytes.NewReader(img.layer["app/fakeminer"].data))
	require.NoError(t, err, "the binary is ELF")
	defer f.Close()
	wantMachine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]
	if wantMachine != 0 {
		assert.Equal(t, wantMachine, f.Machine)
	}
	assert.Equal(t, elf.ET_EXEC, f.Type, "a plain static executable")
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "no dynamic loader")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	assert.Empty(t, libs, "no shared libraries")
}

func TestBuildIsDeterministic(t *testing.T) {
	first := builtMiner(t)
	var again bytes.Buffer
	require.NoError(t, ociimage.Build(context.Background(), minerSpec(), &again))
	assert.True(t, bytes.Equal(first, again.Bytes()), "same inputs give the same bytes")
	a, b := decode(t, first), decode(t, again.Bytes())
	assert.Equal(t, a.index.Manifests[0].Digest, b.index.Manifests[0].Digest, "same manifest digest")

	// A different input changes the digest.
	spec := minerSpec()
	spec.Args = []string{"-listen", "127.0.0.1:9999"}
	var other bytes.Buffer
	require.NoError(t, ociimage.Build(context.Background(), spec, &other))
	c := decode(t, other.Bytes())
	assert.NotEqual(t, a.index.Manifests[0].Digest, c.index.Manifests[0].Digest)
	assert.Equal(t, a.manifest.Layers[0].Digest, c.manifest.Layers[0].Digest, "the layer does not depend on the args")
}

func TestRefWithoutTagGetsLatest(t *testing.T) {
	var buf bytes.Buffer
	spec := ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/faketrainer", Ref: "localhost:5000/gpufarm/faketrainer", User: "1000:1000"}
	require.NoError(t, ociimage.Build(context.Background(), spec, &buf))
	img := decode(t, buf.Bytes())
	assert.Equal(t, "localhost:5000/gpufarm/faketrainer:latest", img.index.Manifests[0].Annotations["io.containerd.image.name"])
	assert.Equal(t, "latest", img.index.Manifests[0].Annotations["org.opencontainers.image.ref.name"])
	assert.Equal(t, "1000:1000", img.config.Config.User)
	assert.Equal(t, []string{"/app/faketrainer"}, img.config.Config.Entrypoint)
	assert.Nil(t, img.config.Config.Cmd)
}

func TestSpecValidationReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		spec ociimage.Spec
		want []string
	}{
		{"empty", ociimage.Spec{}, []string{"package is empty", "ref is empty"}},
		{"uppercase path", ociimage.Spec{Package: minerPkg, Ref: "gpufarm.test/FakeMiner:v1"}, []string{"is malformed"}},
		{"empty tag", ociimage.Spec{Package: minerPkg, Ref: "gpufarm.test/x:"}, []string{"is malformed"}},
		{"digest", ociimage.Spec{Package: minerPkg, Ref: "gpufarm.test/x@sha256:" + strings.Repeat("a", 64)}, []string{"has a digest"}},
		{"flag as package", ociimage.Spec{Package: "-toolexec=x", Ref: "a/b:c"}, []string{"not a single import path"}},
		{"pattern", ociimage.Spec{Package: "github.com/gpufarm/gpufarm/...", Ref: "a/b:c"}, []string{"not a single import path"}},
		{"bad env and user", ociimage.Spec{Package: minerPkg, Ref: "a/b:c", Env: []string{"NOVALUE", "=x"}, User: "no body"},
			[]string{`env entry "NOVALUE"`, `env entry "=x"`, "user \"no body\""}},
		{"bad files", ociimage.Spec{Package: minerPkg, Ref: "a/b:c", Files: map[string][]byte{
			"../escape":      nil,
			"/":              nil,
			"/app/fakeminer": nil,
			"/tmp":           nil,
			"/x":             nil,
			"/x/y":           nil,
		}}, []string{"leaves the image root", "names no file", "would replace the binary", `"/tmp" is also a directory`, `"/x" is also a directory`}},
		{"all at once", ociimage.Spec{Ref: "NOPE", Env: []string{"X"}}, []string{"package is empty", "is malformed", "env entry"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := ociimage.Build(context.Background(), tc.spec, &buf)
			require.ErrorIs(t, err, ociimage.ErrInvalid)
			for _, w := range tc.want {
				assert.ErrorContains(t, err, w)
			}
			assert.Len(t, strings.Split(err.Error(), "\n"), len(tc.want), "one line per problem: %v", err)
			assert.Zero(t, buf.Len(), "nothing written")

			dir := t.TempDir()
			err = ociimage.BuildFile(context.Background(), tc.spec, filepath.Join(dir, "img.tar"))
			require.ErrorIs(t, err, ociimage.ErrInvalid)
			assertEmptyDir(t, dir)
		})
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, ents, "nothing left behind")
}

func TestBuildReportsCompileErrors(t *testing.T) {
	tests := []struct {
		name    string
		pkg     string
		is      error
		message string
	}{
		{"does not compile", "github.com/gpufarm/gpufarm/internal/ociimage/testdata/broken", ociimage.ErrCompile, "undefined: undefinedOnPurpose"},
		{"no such package", "github.com/gpufarm/gpufarm/internal/nosuchpackage", ociimage.ErrCompile, "nosuchpackage"},
		{"library package", "github.com/gpufarm/gpufarm/internal/ociimage", ociimage.ErrInvalid, "not a main package"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "img.tar")
			err := ociimage.BuildFile(context.Background(), ociimage.Spec{Package: tc.pkg, Ref: "gpufarm.test/x:1"}, dst)
			require.ErrorIs(t, err, tc.is)
			assert.ErrorContains(t, err, tc.message)
			assertEmptyDir(t, dir)
		})
	}
}

func TestBuildFile(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "miner.tar")
	require.NoError(t, ociimage.BuildFile(context.Background(), minerSpec(), dst))
	st, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	b, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(builtMiner(t), b), "same bytes as Build")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, 1, "no temp file left")
}

func TestBuildStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	err := ociimage.BuildFile(ctx, minerSpec(), filepath.Join(dir, "x.tar"))
	require.ErrorIs(t, err, context.Canceled)
	assertEmptyDir(t, dir)
}

func Example() {
	var buf bytes.Buffer
	spec := ociimage.Spec{
		Package: "github.com/gpufarm/gpufarm/internal/fakeminer",
		Ref:     "gpufarm.test/fakeminer:latest",
		Args:    []string{"-listen", "127.0.0.1:4067"},
	}
	if err := ociimage.Build(context.Background(), spec, &buf); err != nil {
		fmt.Println(err)
		return
	}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "index.json" {
			var idx struct {
				Manifests []struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			_ = json.NewDecoder(tr).Decode(&idx)
			fmt.Println("index.json names", idx.Manifests[0].Annotations["io.containerd.image.name"])
		}
	}
	// Output:
	// index.json names gpufarm.test/fakeminer:latest
}

// A setuid copy is the same binary, owned by root with the set-user-id bit.
func TestBuildSetuidCopy(t *testing.T) {
	spec := minerSpec()
	spec.SetuidCopy = true
	var buf bytes.Buffer
	require.NoError(t, ociimage.Build(context.Background(), spec, &buf))
	img := decode(t, buf.Bytes())
	e, ok := img.layer["app/fakeminer-setuid"]
	require.True(t, ok)
	assert.Equal(t, int64(0o4755), e.hdr.Mode, "mode %o", e.hdr.Mode)
	assert.Zero(t, e.hdr.Uid)
	assert.Equal(t, img.layer["app/fakeminer"].data, e.data)

	spec.Files = map[string][]byte{"/app/fakeminer-setuid": []byte("x")}
	assert.ErrorIs(t, ociimage.Build(context.Background(), spec, &bytes.Buffer{}), ociimage.ErrInvalid)
}
