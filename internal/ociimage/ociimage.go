package ociimage

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
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Error categories, matched with errors.Is.
var (
	// ErrInvalid: the Spec is malformed (missing package or ref, bad ref,
	// bad file path, not a main package). Nothing was written.
	ErrInvalid = errors.New("ociimage: invalid spec")
	// ErrCompile: go build failed; the error text carries its stderr.
	ErrCompile = errors.New("ociimage: go build failed")
)

// Media types and annotations of the OCI image spec and containerd.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// AnnotationRefName holds the tag part of the reference (OCI layout).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName holds the full reference; containerd's import
	// names the image after it.
	AnnotationImageName = "io.containerd.image.name"
)

// DefaultUser is the image config user when Spec.User is empty: nobody.
const DefaultUser = "65534:65534"

// defaultPath is added to the image env when Spec.Env sets no PATH, so the
// binary is found by name too.
const defaultPath = "PATH=/app:/usr/local/bin:/usr/bin:/bin"

// epoch is the fixed modification time of every tar entry, so identical
// inputs give identical digests.
var epoch = time.Unix(0, 0).UTC()

// Spec describes an image to build.
type Spec struct {
	// Package is the Go import path of a main package in this module, e.g.
	// "github.com/gpufarm/gpufarm/internal/fakeminer". It is built in the
	// current directory's module.
	Package string
	// Ref is the image reference, e.g. "gpufarm.test/fakeminer:latest".
	// A ref without a tag gets ":latest". Digest refs are rejected: the
	// digest is the build's result.
	Ref string
	// User is the image config user; DefaultUser when empty.
	User string
	// Files are extra regular files (path in image -> content), mode 0644.
	// They may replace /etc/passwd and /etc/group but not the binary.
	Files map[string][]byte
	// Env is the image config env ("KEY=value"). PATH defaults to
	// "/app:/usr/local/bin:/usr/bin:/bin" when not set here.
	Env []string
	// Args are the default arguments after the entrypoint (image Cmd).
	Args []string
	// SetuidCopy also puts a copy of the binary owned by root with the
	// set-user-id bit (mode 4755) at /app/NAME-setuid, for tests that check
	// a container cannot gain root through one.
	SetuidCopy bool
}

// plan is a validated, normalized Spec.
type plan struct {
	pkg     string
	name    string // binary name, last element of pkg
	ref     string // full reference with tag
	tag     string
	user    string
	env     []string
	args    []string
	files   map[string][]byte // cleaned absolute path -> content
	binPath string            // absolute path of the binary in the image
	setuid  bool
}

var (
	// Reference grammar of the distribution project (without digests).
	refPathComponent = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	refDomain        = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?`
	refTag           = `[\w][\w.-]{0,127}`
	refRE            = regexp.MustCompile(`^(?:` + refDomain + `/)?` + refPathComponent + `(?:/` + refPathComponent + `)*(?::` + refTag + `)?$`)
	binNameRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// validate checks every field and returns all problems at once.
func (s Spec) validate() (plan, error) {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
	}
	p := plan{pkg: s.Package, user: s.User, args: append([]string(nil), s.Args...), setuid: s.SetuidCopy}

	switch {
	case s.Package == "":
		bad("package is empty: set Spec.Package to the import path of a main package")
	case strings.HasPrefix(s.Package, "-") || strings.ContainsAny(s.Package, " \t\r\n") || strings.Contains(s.Package, "..."):
		bad("package %q is not a single import path", s.Package)
	default:
		p.name = path.Base(strings.TrimRight(s.Package, "/"))
		if !binNameRE.MatchString(p.name) || p.name == "." || p.name == ".." {
			bad("package %q does not end in a usable binary name", s.Package)
		} else {
			p.binPath = "/app/" + p.name
		}
	}

	switch {
	case s.Ref == "":
		bad("ref is empty: set Spec.Ref, e.g. \"gpufarm.test/name:latest\"")
	case strings.Contains(s.Ref, "@"):
		bad("ref %q has a digest: give a name and tag, the digest comes from the build", s.Ref)
	case len(s.Ref) > 255 || !refRE.MatchString(s.Ref):
		bad("ref %q is malformed: want [host[:port]/]lowercase/path[:tag]", s.Ref)
	default:
		p.ref = s.Ref
		if i := strings.LastIndex(s.Ref, ":"); i > strings.LastIndex(s.Ref, "/") {
			p.tag = s.Ref[i+1:]
		} else {
			p.tag = "latest"
			p.ref += ":latest"
		}
	}

	if p.user == "" {
		p.user = DefaultUser
	} else if strings.ContainsAny(p.user, " \t\r\n") {
		bad("user %q contains white space", p.user)
	}

	hasPath := false
	for _, e := range s.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			bad("env entry %q is not KEY=value", e)
			continue
		}
		if k == "PATH" {
			hasPath = true
		}
		p.env = append(p.env, e)
	}
	if !hasPath {
		p.env = append([]string{defaultPath}, p.env...)
	}

	p.files = make(map[string][]byte, len(s.Files))
	names := make([]string, 0, len(s.Files))
	for k := range s.Files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		clean := path.Clean("/" + k)
		switch {
		case k == "" || clean == "/":
			bad("file path %q names no file", k)
			continue
		case hasDotDot(k):
			bad("file path %q leaves the image root", k)
			continue
		case clean == p.binPath || (p.setuid && clean == p.binPath+"-setuid"):
			bad("file path %q would replace the binary", k)
			continue
		}
		if _, dup := p.files[clean]; dup {
			bad("file path %q is given twice (after cleaning: %s)", k, clean)
			continue
		}
		p.files[clean] = s.Files[k]
	}
	// A file must not sit where a directory is needed.
	dirs := map[string]bool{"/app": true, "/etc": true, "/tmp": true}
	for f := range p.files {
		for d := path.Dir(f); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, f := range sortedKeys(p.files) {
		if dirs[f] {
			bad("file path %q is also a directory of the image", f)
		}
	}

	if len(errs) > 0 {
		return plan{}, errors.Join(errs...)
	}
	return p, nil
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Build compiles spec.Package (GOOS=linux, GOARCH=runtime.GOARCH,
// CGO_ENABLED=0, -trimpath) and writes an OCI image layout tar (oci-layout,
// index.json, blobs/sha256/...) to w. The entrypoint is the binary.
//
// go build runs in the current directory, so Package must belong to the
// module around it. Nothing is written to w when the spec is invalid or the
// build fails.
func Build(ctx context.Context, spec Spec, w io.Writer) error {
	p, err := spec.validate()
	if err != nil {
		return err
	}
	bin, err := compile(ctx, p)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return writeLayout(p, bin, w)
}

// BuildFile is Build into a file path (created 0644), removing a partial
// file on error. The file appears under its name only when complete.
func BuildFile(ctx context.Context, spec Spec, dst string) (err error) {
	if _, err := spec.validate(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ociimage: create image file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := Build(ctx, spec, tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("ociimage: chmod image file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ociimage: write image file: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("ociimage: move image file into place: %w", err)
	}
	return nil
}

// compile runs go build for p and returns the binary's bytes.
func compile(ctx context.Context, p plan) ([]byte, error) {
	dir, err := os.MkdirTemp("", "ociimage-")
	if err != nil {
		return nil, fmt.Errorf("ociimage: temp dir for go build: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, p.name)
	if err := BuildBinary(ctx, p.pkg, out); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("ociimage: read built binary: %w", err)
	}
	// go build -o on a library package writes an ar archive, not a program.
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return nil, fmt.Errorf("%w: package %s is not a main package (go build made no executable)", ErrInvalid, p.pkg)
	}
	_ = f.Close()
	return bin, nil
}

// BuildBinary compiles the Go main package pkg into a static linux
// executable at out (CGO_ENABLED=0, -trimpath), the program Build puts in
// an image. Tests and examples that run the fake programs on the host, with
// the process runtime, use it directly.
func BuildBinary(ctx context.Context, pkg, out string) error {
	// -s -w shrink the binary (faster gzip); -buildvcs=false keeps VCS
	// state out of it so a dirty tree gives the same digest as a clean one.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("ociimage: go build %s: %w", pkg, ctxErr)
		}
		return fmt.Errorf("%w: go build %s: %w\n%s", ErrCompile, pkg, err,
			strings.TrimSpace(stderr.String()))
	}
	return nil
}

// OCI JSON documents, trimmed to the fields written here. Field order is
// fixed by the struct, so encoding is deterministic.
type (
	descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
		Platform    *platform         `json:"platform,omitempty"`
	}
	platform struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
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
	imageConfig struct {
		Created      string        `json:"created"`
		Architecture string        `json:"architecture"`
		OS           string        `json:"os"`
		Config       runtimeConfig `json:"config"`
		RootFS       rootFS        `json:"rootfs"`
		History      []history     `json:"history"`
	}
	runtimeConfig struct {
		User       string   `json:"User"`
		Env        []string `json:"Env"`
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd,omitempty"`
		WorkingDir string   `json:"WorkingDir"`
	}
	rootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	history struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	}
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeLayout assembles the layer, config, manifest and index and writes
// the layout tar with entries in sorted order.
func writeLayout(p plan, bin []byte, w io.Writer) error {
	layer, err := buildLayer(p, bin)
	if err != nil {
		return err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return fmt.Errorf("ociimage: gzip layer: %w", err)
	}
	// Header fields left zero (no name, no mtime) keep the blob deterministic.
	if _, err := zw.Write(layer); err != nil {
		return fmt.Errorf("ociimage: gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("ociimage: gzip layer: %w", err)
	}
	layerBlob := gz.Bytes()

	created := epoch.Format(time.RFC3339)
	cfg := imageConfig{
		Created:      created,
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Config: runtimeConfig{
			User:       p.user,
			Env:        p.env,
			Entrypoint: []string{p.binPath},
			Cmd:        p.args,
			WorkingDir: "/",
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{digestOf(layer)}},
		History: []history{{Created: created, CreatedBy: "gpufarm ociimage: go build " + p.pkg}},
	}
	cfgBlob, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("ociimage: encode config: %w", err)
	}
	man := manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        descriptor{MediaType: MediaTypeConfig, Digest: digestOf(cfgBlob), Size: int64(len(cfgBlob))},
		Layers:        []descriptor{{MediaType: MediaTypeLayer, Digest: digestOf(layerBlob), Size: int64(len(layerBlob))}},
	}
	manBlob, err := json.Marshal(man)
	if err != nil {
		return fmt.Errorf("ociimage: encode manifest: %w", err)
	}
	idx := index{
		SchemaVersion: 2,
		MediaType:     MediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: MediaTypeManifest,
			Digest:    digestOf(manBlob),
			Size:      int64(len(manBlob)),
			Annotations: map[string]string{
				AnnotationImageName: p.ref,
				AnnotationRefName:   p.tag,
			},
			Platform: &platform{Architecture: runtime.GOARCH, OS: "linux"},
		}},
	}
	idxBlob, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("ociimage: encode index: %w", err)
	}

	entries := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": idxBlob,
	}
	for _, b := range [][]byte{layerBlob, cfgBlob, manBlob} {
		entries["blobs/sha256/"+strings.TrimPrefix(digestOf(b), "sha256:")] = b
	}
	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(dirHeader(d, 0o755)); err != nil {
			return fmt.Errorf("ociimage: write image tar: %w", err)
		}
	}
	for _, name := range sortedKeys(entries) {
		if err := writeFile(tw, name, 0o644, entries[name]); err != nil {
			return fmt.Errorf("ociimage: write image tar: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("ociimage: write image tar: %w", err)
	}
	return nil
}

// buildLayer returns the uncompressed layer tar.
func buildLayer(p plan, bin []byte) ([]byte, error) {
	type entry struct {
		dir  bool
		mode int64
		data []byte
	}
	ents := map[string]entry{
		"app":        {dir: true, mode: 0o755},
		"etc":        {dir: true, mode: 0o755},
		"tmp":        {dir: true, mode: 0o1777},
		"etc/passwd": {mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		"etc/group":  {mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
	ents[strings.TrimPrefix(p.binPath, "/")] = entry{mode: 0o755, data: bin}
	if p.setuid {
		ents[strings.TrimPrefix(p.binPath, "/")+"-setuid"] = entry{mode: 0o4755, data: bin}
	}
	for f, data := range p.files {
		rel := strings.TrimPrefix(f, "/")
		ents[rel] = entry{mode: 0o644, data: data}
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			if _, ok := ents[d]; !ok {
				ents[d] = entry{dir: true, mode: 0o755}
			}
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Sorted names put every directory before its contents.
	for _, name := range sortedKeys(ents) {
		e := ents[name]
		var err error
		if e.dir {
			err = tw.WriteHeader(dirHeader(name+"/", e.mode))
		} else {
			err = writeFile(tw, name, e.mode, e.data)
		}
		if err != nil {
			return nil, fmt.Errorf("ociimage: write layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: write layer: %w", err)
	}
	return buf.Bytes(), nil
}

func dirHeader(name string, mode int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch}
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
