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
		// What holds the link down and the persistence mode, as the
		// operator reads them off the row.
		limit, persist string
	}{
		"rtx3080-riser": {"inference", []string{"x1-riser", "gen1-link", "bus-limited", "slot-limited", "persistence-off"}, " slot ", " disabled "},
		"rtx3090":       {"training", []string{"slot-limited"}, " gen:slot ", " enabled "},
		"a40":           {"training", nil, " - ", " enabled "},
		"cmp170hx":      {"mining", []string{"cmp-throttled", "gen1-link"}, " card ", " disabled "},
		"a100":          {"training", nil, " - ", " enabled "},
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
					assert.Contains(t, line, w.limit, "row: %s", line)
					assert.Contains(t, line, w.persist, "row: %s", line)
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
	tests := []struct {
		name string
		args []string
		is   []error
		want []string // every problem is named
	}{
		{"unknown preset", []string{"-preset", "rtx9090"}, []error{gpu.ErrNotFound},
			[]string{`"rtx9090"`, "rtx3080-riser"}}, // the error lists the presets
		{"unknown backend", []string{"-backend", "rocm"}, []error{gpu.ErrInvalid},
			[]string{`"rocm"`, "use sim or nvml"}},
		{"both at once", []string{"-backend", "rocm", "-preset", "rtx9090"}, []error{gpu.ErrInvalid, gpu.ErrNotFound},
			[]string{`"rocm"`, "use sim or nvml", `"rtx9090"`, "rtx3080-riser"}},
		{"unknown flag", []string{"-gpus", "4"}, nil, []string{"-gpus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), &out, tt.args)
			require.Error(t, err)
			for _, is := range tt.is {
				assert.ErrorIs(t, err, is)
			}
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, out.String(), "== simulated", "nothing is reported on bad input")
		})
	}
}

// TestHelp: -h and -help print the usage and succeed, as a user asking
// for help did nothing wrong.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, run(context.Background(), &out, []string{arg}))
			assert.Contains(t, out.String(), "usage: inventory")
			assert.Contains(t, out.String(), "-preset")
			assert.Contains(t, out.String(), "cmp170hx", "the usage lists the presets")
			assert.NotContains(t, out.String(), "== simulated", "help reports no GPUs")
		})
	}
}

// TestNVMLWithoutDriver: this machine has no NVIDIA driver, so the real
// backend must say what to do instead of crashing: install the driver, or,
// in a build without cgo, rebuild with it.
func TestNVMLWithoutDriver(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, []string{"-backend", "nvml"})
	if err == nil {
		// A host with a driver: the report must list its GPUs.
		assert.Contains(t, out.String(), "== this host (NVML)")
		return
	}
	assert.ErrorIs(t, err, gpu.ErrUnavailable)
	msg := err.Error()
	assert.True(t, strings.Contains(msg, "install") || strings.Contains(msg, "CGO_ENABLED=1"), "no advice in %q", msg)
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
