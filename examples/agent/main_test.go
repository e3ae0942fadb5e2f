package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/agent/client"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/internal/syncbuf"
)

const trainerRef = "gpufarm.test/faketrainer:latest"

// agentProc is the agent program running as its own process.
type agentProc struct {
	cmd *exec.Cmd
	log *syncbuf.Buffer
}

func startAgent(t *testing.T, bin string, args []string, log *syncbuf.Buffer) *agentProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	t.Logf("running %s %s", bin, strings.Join(args, " "))
	require.NoError(t, cmd.Start())
	a := &agentProc{cmd: cmd, log: log}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	return a
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// TestAgentSurvivesSIGKILL drives the agent over loopback as a control
// plane would: import an image, submit a job, follow its events, cordon a
// GPU, set a power budget, kill the agent with SIGKILL, start it again,
// and find the job, the cordon and the event stream where they were, the
// stream going on to the job's end without a gap or a repeat.
func TestAgentSurvivesSIGKILL(t *testing.T) {
	containerdtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, image := filepath.Join(dir, "agent"), filepath.Join(dir, "trainer.tar")
	require.NoError(t, ociimage.BuildBinary(ctx, "github.com/gpufarm/gpufarm/examples/agent", bin))
	require.NoError(t, ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/faketrainer", Ref: trainerRef}, image))
	d := containerdtest.Start(t)
	const token = "operator-token-for-the-test-0001"
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("# the operator\n"+token+"\n"), 0o600))
	addr := freeAddr(t)
	args := []string{"-listen", addr, "-state", filepath.Join(d.Dir, "agent"), "-runtime", "containerd",
		"-containerd", d.Address, "-gpus", "4", "-tokens", tokens, "-debug"}
	log := &syncbuf.Buffer{}
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", log.String())
		}
	}()
	a := startAgent(t, bin, args, log)
	c, err := client.New("http://"+addr, client.WithToken(token), client.WithRetry(100*time.Millisecond))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Healthy(ctx) == nil }, 30*time.Second, 50*time.Millisecond, "the agent comes up")

	f, err := os.Open(image)
	require.NoError(t, err)
	names, err := c.ImportImage(ctx, "acme", f)
	f.Close()
	require.NoError(t, err)
	require.Contains(t, names, trainerRef)

	events, errc := c.Watch(ctx, 0)
	job := api.Spec{ID: "train", Kind: "training", Tenant: "acme", GPUs: api.GPUs{Count: 1}, Image: trainerRef,
		Command:          []string{"-checkpoint-dir", "/tmp/ckpt", "-steps", "400", "-step-interval", "20ms", "-logging-steps", "50"},
		StopGraceSeconds: 5, PricePerGPUHour: 0.5}
	_, err = c.Submit(ctx, job)
	require.NoError(t, err)
	var seen []api.Event
	next := func(match func(api.Event) bool) api.Event {
		t.Helper()
		for {
			select {
			case ev := <-events:
				seen = append(seen, ev)
				if match(ev) {
					return ev
				}
			case err := <-errc:
				t.Fatalf("event stream: %v", err)
			case <-ctx.Done():
				t.Fatalf("no such event; seen %d", len(seen))
			}
		}
	}
	started := next(func(ev api.Event) bool { return ev.ID == "train" && ev.Type == "started" })
	t.Logf("train started on %v (seq %d)", started.GPUs, started.Seq)
	gpus, err := c.GPUs(ctx)
	require.NoError(t, err)
	var free string
	for _, g := range gpus {
		if g.Workload == "" {
			free = g.UUID
		}
	}
	require.NoError(t, c.Cordon(ctx, free, "riser replaced"))
	next(func(ev api.Event) bool { return ev.Type == "cordoned" })
	rep, err := c.SetBudget(ctx, 2000)
	require.NoError(t, err)
	t.Logf("budget 2000 W: %.0f W -> %.0f W, met %v", rep.StartW, rep.FinalW, rep.Met)
	before, err := c.Get(ctx, "train")
	require.NoError(t, err)
	require.Equal(t, "running", before.State)

	require.NoError(t, a.cmd.Process.Kill())
	_ = a.cmd.Wait()
	t.Logf("agent killed with SIGKILL after %d events", len(seen))
	require.Error(t, c.Healthy(ctx), "nobody answers")
	startAgent(t, bin, args, log)
	require.Eventually(t, func() bool { return c.Healthy(ctx) == nil }, 30*time.Second, 50*time.Millisecond, "the agent comes back")

	after, err := c.Get(ctx, "train")
	require.NoError(t, err)
	t.Logf("after the restart: %s, attempt %d, container %s", after.State, after.Attempt, after.Container)
	assert.Equal(t, before.Container, after.Container, "the same container, re-adopted")
	assert.Equal(t, before.Attempt, after.Attempt, "not restarted")
	g, err := c.GPU(ctx, free)
	require.NoError(t, err)
	assert.Equal(t, "riser replaced", g.Cordoned, "the cordon survives")
	node, err := c.Node(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2000.0, node.BudgetW, "the budget survives")

	end := next(func(ev api.Event) bool {
		return ev.ID == "train" && slices.Contains([]string{"exited", "failed", "cancelled"}, ev.Type)
	})
	assert.Equal(t, "exited", end.Type, "the job ran to its end: %+v", end)
	for i := 1; i < len(seen); i++ {
		require.Greater(t, seen[i].Seq, seen[i-1].Seq, "event %d repeats or goes back: %+v after %+v", i, seen[i], seen[i-1])
	}
	types := []string{}
	for _, ev := range seen {
		if ev.ID == "train" {
			types = append(types, ev.Type)
		}
	}
	t.Logf("events of train over the restart: %v", types)
	assert.Equal(t, 1, strings.Count(strings.Join(types, " "), "started"), "one start: %v", types)
	final, err := c.Get(ctx, "train")
	require.NoError(t, err)
	assert.Equal(t, "exited", final.State)
	require.NotNil(t, final.Exit)
	assert.Zero(t, final.Exit.Code, fmt.Sprintf("%+v", final))
}
