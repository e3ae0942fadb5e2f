//go:build cgo

package nvml

import (
	"bytes"
	"log/slog"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// TestOlderDriverFallbacks: on a driver that lacks a newer call, the
// backend never makes it (on a real host the process would abort) and
// uses the older equivalent. Each case hides one symbol; the mock fails
// the test if its function is called anyway.
func TestOlderDriverFallbacks(t *testing.T) {
	tests := []struct {
		symbol string
		check  func(t *testing.T, r *rig, b *Backend, dev gpu.Device, s gpu.Sample)
	}{
		{"nvmlDeviceGetCurrentClocksEventReasons", func(t *testing.T, r *rig, _ *Backend, _ gpu.Device, s gpu.Sample) {
			// Drivers before R535: the throttle-reasons call has the same bits.
			assert.Equal(t, gpu.Some(gpu.ClockEventSWPowerCap|gpu.ClockEventHWThermalSlowdown), s.ClockEvents)
			assert.NotEmpty(t, r.gpus[0].GetCurrentClocksThrottleReasonsCalls())
		}},
		{"nvmlDeviceGetMemoryInfo_v2", func(t *testing.T, r *rig, _ *Backend, dev gpu.Device, s gpu.Sample) {
			// Version 1 counts the driver's reserve as used and does not
			// report it apart.
			assert.Equal(t, uint64(10240<<20), dev.MemoryBytes)
			assert.False(t, dev.ReservedMemoryBytes.Valid, "the reserve is unknown, not zero")
			assert.Equal(t, gpu.Some[uint64](239<<20), s.MemoryUsedBytes, "an idle card reads its reserve as used")
		}},
		{"nvmlDeviceGetGpuMaxPcieLinkGeneration", func(t *testing.T, _ *rig, _ *Backend, dev gpu.Device, _ gpu.Sample) {
			assert.Zero(t, dev.LinkMaxGPUGen, "the card's own generation is unknown")
			assert.Zero(t, dev.LinkMaxHostGen, "so is whether the host is the lower one")
			assert.Equal(t, gpu.Link{Gen: 1, Width: 16}, dev.LinkMax)
			r := gpu.Assess(dev, gpu.Health{Healthy: true})
			assert.Equal(t, gpu.LinkLimitNone, r.GenLimit, "readiness does not guess slot or card")
			assert.Equal(t, gpu.LinkLimitRiser, r.WidthLimit, "the riser still shows in the width")
		}},
		{"nvmlDeviceGetMPSComputeRunningProcesses", func(t *testing.T, r *rig, b *Backend, _ gpu.Device, _ gpu.Sample) {
			procs, err := b.Processes(t.Context(), 0)
			require.NoError(t, err)
			assert.Equal(t, []gpu.Process{{PID: 4242, UsedMemoryBytes: gpu.Some[uint64](1 << 30), Name: "python3"}}, procs,
				"compute and graphics processes are still listed")
		}},
		{"nvmlSystemGetProcessName", func(t *testing.T, _ *rig, b *Backend, _ gpu.Device, _ gpu.Sample) {
			procs, err := b.Processes(t.Context(), 0)
			require.NoError(t, err)
			require.Len(t, procs, 2)
			assert.Empty(t, procs[0].Name, "names stay empty")
			assert.Equal(t, 4242, procs[0].PID)
		}},
	}
	require.Len(t, tests, len(newerCalls()), "every row of the table has a test")
	for _, tt := range tests {
		t.Run(tt.symbol, func(t *testing.T) {
			r := newRig(rtx3080(0x0a))
			r.gpus[0].state.procs = []gonvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 1 << 30}}
			r.gpus[0].state.mps = []gonvml.ProcessInfo{{Pid: 5151, UsedGpuMemory: 1 << 20}}
			r.names[4242] = "python3"
			r.hide(t, tt.symbol)
			b := newTestBackend(t, r)
			assert.False(t, b.has[indexOfSymbol(t, tt.symbol)], "the missing call is known missing")
			devs, err := b.Devices(t.Context())
			require.NoError(t, err)
			s := []gpu.Sample{{Index: 0}}
			require.NoError(t, b.Sample(t.Context(), s))
			tt.check(t, r, b, devs[0], s[0])
		})
	}
}

func indexOfSymbol(t *testing.T, symbol string) int {
	for i, c := range newerCalls() {
		if c.symbol == symbol {
			return i
		}
	}
	t.Fatalf("%s is not in the newer-call table", symbol)
	return -1
}

// TestSymbolsResolvedOnce: the lookups happen at New; sampling looks up
// nothing, so a check never costs a Sample.
func TestSymbolsResolvedOnce(t *testing.T) {
	r := newRig(a40(0x41))
	lookups := 0
	r.ExtensionsFunc = func() gonvml.ExtendedInterface {
		return &extLookup{fn: func(string) error { lookups++; return nil }}
	}
	b := newTestBackend(t, r)
	assert.Equal(t, len(newerCalls()), lookups, "one lookup per row, at New")
	dst := []gpu.Sample{{Index: 0}}
	for range 5 {
		require.NoError(t, b.Sample(t.Context(), dst))
	}
	_, err := b.Processes(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, len(newerCalls()), lookups, "no lookup after New")
}

// extLookup is an ExtendedInterface over a function.
type extLookup struct{ fn func(string) error }

func (e *extLookup) LookupSymbol(name string) error { return e.fn(name) }

// TestKnownBadDriverRefusesProcesses: drivers 535.43 to 535.86 garble the
// process lists and write past the buffer, so the call is never made
// there, and the error says which driver and what to do.
func TestKnownBadDriverRefusesProcesses(t *testing.T) {
	tests := []struct {
		driver string
		bad    bool
	}{
		{"530.41.03", false},
		{"535.42.99", false},
		{"535.43.02", true},
		{"535.54.03", true},
		{"535.86.10", true},
		{"535.98", false},
		{"535.104.05", false},
		{"550.54.14", false},
		{"470.256.02", false},
	}
	for _, tt := range tests {
		t.Run(tt.driver, func(t *testing.T) {
			r := newRig(a40(0x41))
			r.driver = tt.driver
			r.gpus[0].state.procs = []gonvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 1 << 30}}
			b := newTestBackend(t, r)
			assert.Equal(t, tt.driver, b.DriverVersion())
			procs, err := b.Processes(t.Context(), 0)
			if !tt.bad {
				require.NoError(t, err)
				assert.Len(t, procs, 1)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, gpu.ErrUnsupported)
			assert.Contains(t, err.Error(), "driver "+tt.driver)
			assert.Contains(t, err.Error(), "upgrade the driver to a release after 535.86")
			assert.Empty(t, r.gpus[0].GetComputeRunningProcessesCalls(), "the garbling call is never made")
		})
	}
}

func TestParseDriverVersion(t *testing.T) {
	tests := []struct {
		in                  string
		major, minor, patch int
		ok                  bool
	}{
		{"550.54.15", 550, 54, 15, true},
		{"535.161.07", 535, 161, 7, true},
		{"551.61", 551, 61, 0, true}, // Windows
		{" 470.256.02\n", 470, 256, 2, true},
		{"", 0, 0, 0, false},
		{"550", 0, 0, 0, false},
		{"550.x.1", 0, 0, 0, false},
		{"1.2.3.4", 0, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			v, err := parseDriverVersion(tt.in)
			if !tt.ok {
				assert.ErrorIs(t, err, gpu.ErrInvalid)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, [3]int{tt.major, tt.minor, tt.patch}, [3]int{v.major, v.minor, v.patch})
		})
	}
}

// TestUnreadableDriverVersion: a driver that does not say its version is
// used all the same; only the known-bad check cannot run.
func TestUnreadableDriverVersion(t *testing.T) {
	r := newRig(a40(0x41))
	r.SystemGetDriverVersionFunc = func() (string, gonvml.Return) { return "", gonvml.ERROR_UNKNOWN }
	var logs bytes.Buffer
	b := newTestBackend(t, r, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	assert.Empty(t, b.DriverVersion())
	_, err := b.Processes(t.Context(), 0)
	assert.NoError(t, err)
	assert.Contains(t, logs.String(), "known-bad drivers cannot be recognised")
}

// TestDriverBelowTheFloor: an R460 library loads; the backend says it is
// older than the oldest it is built for and skips what it lacks.
func TestDriverBelowTheFloor(t *testing.T) {
	r := newRig(rtx3080(0x0a))
	r.driver = "460.91.03"
	for _, c := range newerCalls() {
		r.hide(t, c.symbol)
	}
	var logs bytes.Buffer
	b := newTestBackend(t, r, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	dst := []gpu.Sample{{Index: 0}}
	require.NoError(t, b.Sample(t.Context(), dst))
	assert.True(t, dst[0].PowerW.Valid)
	assert.Contains(t, logs.String(), "older than the oldest one this SDK is built for")
	assert.Contains(t, logs.String(), "oldest="+OldestDriver)
}
