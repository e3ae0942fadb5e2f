package main

import (
	"bufio"
	"errors"
	"fmt"
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

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "faketrainer")
	require.NoError(t, ociimage.BuildBinary(t.Context(), "github.com/gpufarm/gpufarm/internal/faketrainer", bin))
	return bin
}

// proc is a running faketrainer whose stdout lines arrive on lines.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	seen  []string
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	t.Logf("running %s %s", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, lines: make(chan string, 1000)}
	go func() { // ends when the process closes stdout
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if stderr.Len() > 0 {
			t.Logf("faketrainer stderr: %s", stderr.String())
		}
	})
	return p
}

// waitFor reads lines until one starts with prefix.
func (p *proc) waitFor(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			require.True(t, ok, "stdout closed before %q; saw %q", prefix, p.seen)
			p.seen = append(p.seen, l)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line %q within 30 s; saw %q", prefix, p.seen)
		}
	}
}

// wait drains stdout and waits for the exit.
func (p *proc) wait(t *testing.T) error {
	t.Helper()
	for l := range p.lines {
		p.seen = append(p.seen, l)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("faketrainer did not exit")
		return nil
	}
}

func TestBinarySIGTERMCheckpointsAndResumes(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()

	p := start(t, bin, "-checkpoint-dir", dir, "-steps", "100000", "-step-interval", "2ms",
		"-logging-steps", "10", "-checkpoint-every", "0", "-save-delay", "50ms")
	p.waitFor(t, "{'loss'")
	p.waitFor(t, "{'loss'")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	line := p.waitFor(t, "checkpoint saved step=")
	require.NoError(t, p.wait(t), "exit 0 after the SIGTERM checkpoint")
	var stopped int
	_, err := fmt.Sscanf(line, "checkpoint saved step=%d", &stopped)
	require.NoError(t, err)
	require.GreaterOrEqual(t, stopped, 20)
	ck, err := readCheckpoint(checkpointPath(dir, stopped), stopped)
	require.NoError(t, err)
	assert.Equal(t, roundTo(lossAt(stopped), 4), ck.Loss)
	t.Logf("first run stopped at step %d", stopped)

	total := stopped + 15
	p2 := start(t, bin, "-checkpoint-dir", dir, "-steps", fmt.Sprint(total), "-step-interval", "1ms", "-logging-steps", "5")
	assert.Equal(t, fmt.Sprintf("resumed from step=%d", stopped), p2.waitFor(t, "resumed from step="))
	summary := p2.waitFor(t, "{'train_runtime'")
	require.NoError(t, p2.wait(t))
	assert.Contains(t, summary, fmt.Sprintf("'epoch': %s", pyFloat(roundTo(float64(total)/100, 2))))
	_, err = readCheckpoint(checkpointPath(dir, total), total)
	assert.NoError(t, err, "final checkpoint")
}

func TestBinaryIgnoreSIGTERMNeedsKill(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	p := start(t, bin, "-checkpoint-dir", dir, "-steps", "100000", "-step-interval", "1ms",
		"-logging-steps", "10", "-checkpoint-every", "0", "-ignore-sigterm")
	p.waitFor(t, "{'loss'")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitFor(t, "received SIGTERM, ignoring it")
	p.waitFor(t, "{'loss'") // still training
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	err := p.wait(t)
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "killed, not exited: %v", err)
	ws := exitErr.Sys().(syscall.WaitStatus)
	assert.Equal(t, syscall.SIGKILL, ws.Signal())
	_, found, _, err := latestCheckpoint(dir)
	require.NoError(t, err)
	assert.False(t, found, "no checkpoint when killed without one")
}
