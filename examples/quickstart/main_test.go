package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
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
	// The ledger's summary: every paid workload and every tenant earned
	// more than its power cost.
	_, acct, ok := strings.Cut(out.String(), "accounting from the ledger")
	require.True(t, ok, "the summary has the ledger's accounting")
	for _, key := range []string{"acme", "mining", "finetune", "urgent"} {
		var gpuSeconds, kJ, cost, revenue, margin float64
		i := strings.Index(acct, "\n    "+key+" ")
		require.GreaterOrEqual(t, i, 0, "a line for %s", key)
		_, err := fmt.Sscanf(strings.TrimSpace(acct[i:]), key+" %f GPU-s %f kJ  cost %f  revenue %f  margin %f", &gpuSeconds, &kJ, &cost, &revenue, &margin)
		require.NoError(t, err, key)
		assert.Positive(t, kJ, key)
		assert.Greater(t, revenue, cost, key)
		assert.InDelta(t, revenue-cost, margin, 2e-6, key)
	}
}

func TestQuickstartBadFlags(t *testing.T) {
	var out bytes.Buffer
	assert.ErrorContains(t, run(context.Background(), &out, []string{"-runtime", "docker"}), "use auto, containerd or process")
	assert.Error(t, run(context.Background(), &out, []string{"-preset", "nope"}))
	assert.NoError(t, run(context.Background(), &out, []string{"-h"}))
}
