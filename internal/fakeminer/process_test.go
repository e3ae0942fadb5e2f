package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/internal/ociimage"
)

// buildBinary compiles this package into a temp dir (go caches the work).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fakeminer")
	require.NoError(t, ociimage.BuildBinary(t.Context(), "github.com/gpufarm/gpufarm/internal/fakeminer", bin))
	return bin
}

// startMiner runs the binary and returns the process and its address, read
// from the "listening on" line.
func startMiner(t *testing.T, bin string, args ...string) (*exec.Cmd, string, <-chan string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if stderr.Len() > 0 {
			t.Logf("fakeminer stderr: %s", stderr.String())
		}
	})
	lines := make(chan string, 100)
	go func() { // ends when the process closes stdout
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case l := <-lines:
		_, addr, ok := strings.Cut(l, "listening on ")
		require.True(t, ok, "first line %q", l)
		return cmd, addr, lines
	case <-time.After(30 * time.Second):
		t.Fatal("fakeminer did not report its address")
	}
	return nil, "", nil
}

func TestBinaryServesBothAPIsAndStopsOnSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	args := []string{"-listen", "127.0.0.1:0", "-hashrate", "60e6", "-gpus", "2", "-algo", "kawpow", "-name", "t-rex", "-log-interval", "100ms"}
	cmd, addr, lines := startMiner(t, bin, args...)
	t.Logf("ran %s %s, serving on %s", bin, strings.Join(args, " "), addr)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(path string, v any) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	var trex struct {
		Name      string `json:"name"`
		Algorithm string `json:"algorithm"`
		Hashrate  int64  `json:"hashrate"`
		GPUs      []struct {
			Hashrate int64 `json:"hashrate"`
		} `json:"gpus"`
	}
	get("/summary", &trex)
	assert.Equal(t, "t-rex", trex.Name)
	assert.Equal(t, "kawpow", trex.Algorithm)
	assert.Equal(t, int64(60e6), trex.Hashrate)
	require.Len(t, trex.GPUs, 2)
	assert.Equal(t, int64(30e6), trex.GPUs[0].Hashrate)

	var xmrig struct {
		Algo     string `json:"algo"`
		Hashrate struct {
			Total []*float64 `json:"total"`
		} `json:"hashrate"`
	}
	get("/2/summary", &xmrig)
	assert.Equal(t, "kawpow", xmrig.Algo)
	require.Len(t, xmrig.Hashrate.Total, 3)
	require.NotNil(t, xmrig.Hashrate.Total[0])
	assert.Equal(t, 60e6, *xmrig.Hashrate.Total[0])

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/control/hashrate?value=0", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var ctl struct{ Hashrate float64 }
	get("/control/hashrate", &ctl)
	assert.Zero(t, ctl.Hashrate)

	// A stats line per interval.
	select {
	case l := <-lines:
		assert.Contains(t, l, "t-rex kawpow:")
		assert.Contains(t, l, "[A:")
	case <-time.After(10 * time.Second):
		t.Fatal("no stats line")
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "fakeminer exits 0 on SIGTERM")
		assert.Equal(t, 0, cmd.ProcessState.ExitCode())
	case <-time.After(10 * time.Second):
		t.Fatal("fakeminer did not exit within 10 s of SIGTERM")
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	assert.Contains(t, rest, "fakeminer: stopped")
}

func TestRunRejectsBadFlagsAllAtOnce(t *testing.T) {
	var out, errb strings.Builder
	code := run(context.Background(), []string{"-gpus", "0", "-hashrate", "-5", "-difficulty", "0", "extra"}, &out, &errb)
	assert.Equal(t, 2, code)
	for _, want := range []string{"-gpus must be >= 1", "-hashrate must be >= 0", "-difficulty must be > 0", "unexpected arguments"} {
		assert.Contains(t, errb.String(), want)
	}
	assert.Empty(t, out.String())
}

func TestRunStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuilder
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-log-interval", "0"}, &out, &errb) }()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "listening on") }, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 0, code, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	assert.Contains(t, out.String(), "fakeminer: stopped")
}

func TestRunReportsListenError(t *testing.T) {
	var out, errb strings.Builder
	code := run(context.Background(), []string{"-listen", "256.0.0.1:bad"}, &out, &errb)
	assert.Equal(t, 1, code)
	assert.NotEmpty(t, errb.String())
	assert.Equal(t, "", out.String(), fmt.Sprint("nothing served"))
}
