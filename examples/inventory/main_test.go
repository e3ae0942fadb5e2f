package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// TestEveryPreset runs the command on every simulated fleet and checks the
// verdict an operator would read off each.
func TestEveryPreset(t *testing.T) {
	want := map[string]struct {
		use   string
		flags []string
	}{
		"rtx3080-riser": {"inference", []string{"x1-riser", "gen1-link", "bus-limited"}},
		"rtx3090":       {"training", nil},
		"a40":           {"training", nil},
		"cmp170hx":      {"mining", []string{"cmp-throttled", "gen1-link"}},
		"a100":          {"training", nil},
	}
	for _, p := range sim.Presets() {
		t.Run(p.Name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, run(context.Background(), &out, []string{"-preset", p.Name}))
			t.Logf("go run ./examples/inventory -preset %s\n%s", p.Name, out.String())
			rows := 0
			for _, line := range strings.Split(out.String(), "\n") {
				fields := strings.Fields(line)
				if len(fields) == 0 || fields[0] == "GPU" || !isDigits(fields[0]) {
					continue
				}
				rows++
				if w, ok := want[p.Name]; ok {
					assert.Contains(t, line, " "+w.use+" ", "row: %s", line)
					for _, f := range w.flags {
						assert.Contains(t, line, f, "row: %s", line)
					}
				}
			}
			assert.Equal(t, len(p.Cards), rows, "one row per GPU")
			assert.Contains(t, out.String(), "node: ")
		})
	}
}

func TestAllPresetsAtOnce(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), &out, []string{"-preset", "all", "-notes=false"}))
	for _, p := range sim.Presets() {
		assert.Contains(t, out.String(), "== simulated "+p.Name)
	}
}

func TestBadInput(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, []string{"-preset", "rtx9090"})
	require.Error(t, err)
	assert.ErrorIs(t, err, gpu.ErrNotFound)
	assert.Contains(t, err.Error(), "rtx3080-riser", "the error lists the presets")

	err = run(context.Background(), &out, []string{"-backend", "rocm"})
	assert.ErrorContains(t, err, "use sim or nvml")
}

// TestNVMLWithoutDriver: this machine has no NVIDIA driver, so the real
// backend must say what to install instead of crashing.
func TestNVMLWithoutDriver(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, []string{"-backend", "nvml"})
	if err == nil {
		// A host with a driver: the report must list its GPUs.
		assert.Contains(t, out.String(), "== this host (NVML)")
		return
	}
	assert.ErrorIs(t, err, gpu.ErrUnavailable)
	assert.Contains(t, err.Error(), "install")
	t.Logf("go run ./examples/inventory -backend nvml: %v", err)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
