package ociimage_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startContainerd runs a private containerd (own root, state and socket)
// for the test and returns its socket. Without containerd, runc or root the
// test is skipped, except in CI (CI=true), where that is a failure.
func startContainerd(t *testing.T) string {
	t.Helper()
	var missing []string
	for _, bin := range []string{"containerd", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("containerd import test needs %v (Debian packages containerd and runc, run as root)", missing)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	// Unix socket paths are limited to ~108 bytes and t.TempDir() paths
	// can be longer, so the socket and state live in a short /tmp dir.
	short, err := os.MkdirTemp("/tmp", "ctrd")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(short) })
	root := filepath.Join(t.TempDir(), "root")
	sock := filepath.Join(short, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, root, filepath.Join(short, "state"), sock, sock+".ttrpc", filepath.Join(root, "opt"))
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))

	logPath := filepath.Join(t.TempDir(), "containerd.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command("containerd", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	t.Logf("started containerd (pid %d) with root %s and socket %s", cmd.Process.Pid, root, sock)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when the daemon exits
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("containerd log:\n%s", b)
			}
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			c, err := client.New(sock, client.WithTimeout(time.Second))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				serving, err := c.IsServing(ctx)
				cancel()
				_ = c.Close()
				if err == nil && serving {
					return sock
				}
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("containerd exited early (%v):\n%s", err, b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd did not serve its socket within 30 s")
		}
	}
}

func TestContainerdImportsAndUnpacks(t *testing.T) {
	b := builtMiner(t)
	sock := startContainerd(t)

	c, err := client.New(sock)
	require.NoError(t, err)
	defer c.Close()
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
