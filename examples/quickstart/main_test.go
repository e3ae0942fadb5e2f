package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQuickstartStory runs the short story on the process runtime (the CI
// smoke test runs it on containerd): run fails unless the fine-tune was
// preempted once, resumed from its checkpoint, finished with exit 0 and the
// power cap was met.
func TestQuickstartStory(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, []string{"-short", "-runtime", "process"})
	t.Logf("go run ./examples/quickstart -short -runtime process\n%s", out.String())
	require.NoError(t, err)
	assert.Contains(t, out.String(), "resume: attempt 2 resumed from step")
	assert.Contains(t, out.String(), "NOTHING IS ISOLATED")
}

func TestQuickstartBadFlags(t *testing.T) {
	var out bytes.Buffer
	assert.ErrorContains(t, run(context.Background(), &out, []string{"-runtime", "docker"}), "use auto, containerd or process")
	assert.Error(t, run(context.Background(), &out, []string{"-preset", "nope"}))
	assert.NoError(t, run(context.Background(), &out, []string{"-h"}))
}
