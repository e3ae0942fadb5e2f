//go:build cgo

package nvml

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// TestMemoryReserveApart: an idle RTX 3080 has 239 MiB set aside by the
// driver. With memory info v2 that is reported on its own and used memory
// is what jobs allocated, so an idle GPU reads 0 and hygiene can trust it.
// Driver 510.39.01 exports v2 but answers FUNCTION_NOT_FOUND: v1 then.
func TestMemoryReserveApart(t *testing.T) {
	tests := []struct {
		name         string
		mod          func(g *gpuMock)
		reserved     gpu.Optional[uint64]
		idle, busy   uint64
		v1IsFallback bool
	}{
		{"v2", func(*gpuMock) {}, gpu.Some[uint64](239 << 20), 0, 3 << 30, false},
		{"v2 exported but not implemented (510.39.01)", func(g *gpuMock) {
			g.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
				return gonvml.Memory_v2{}, gonvml.ERROR_FUNCTION_NOT_FOUND
			}
		}, gpu.Optional[uint64]{}, 239 << 20, 239<<20 + 3<<30, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(rtx3080(0x0a))
			tt.mod(r.gpus[0])
			b := newTestBackend(t, r)
			devs, err := b.Devices(t.Context())
			require.NoError(t, err)
			assert.Equal(t, uint64(10240<<20), devs[0].MemoryBytes)
			assert.Equal(t, tt.reserved, devs[0].ReservedMemoryBytes)

			s := []gpu.Sample{{Index: 0}}
			require.NoError(t, b.Sample(t.Context(), s))
			assert.Equal(t, gpu.Some(tt.idle), s[0].MemoryUsedBytes, "idle")
			r.gpus[0].state.memUsed.Store(3 << 30)
			require.NoError(t, b.Sample(t.Context(), s))
			assert.Equal(t, gpu.Some(tt.busy), s[0].MemoryUsedBytes, "a job holding 3 GiB")
			if tt.v1IsFallback {
				assert.Len(t, r.gpus[0].GetMemoryInfo_v2Calls(), 1, "v2 is not asked again after it failed")
			}
		})
	}
}

// TestMIGMemoryWithoutPrivileges: with MIG on, NVML refuses a whole GPU's
// memory to unprivileged callers. The size then comes from the full-GPU
// instance profile (what a job can get) rather than reading as 0 GiB,
// which readiness would take for a card too small to rent.
func TestMIGMemoryWithoutPrivileges(t *testing.T) {
	refuse := func(g *gpuMock) {
		g.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_NO_PERMISSION }
		g.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) { return gonvml.Memory{}, gonvml.ERROR_NO_PERMISSION }
	}
	x := newDGX()
	for i, g := range x.gpus {
		refuse(g)
		if i < 4 {
			x.Devices[i].(*dgxa100.Device).MigMode = gonvml.DEVICE_MIG_ENABLE
		}
	}
	var logs bytes.Buffer
	b := newTestBackend(t, x, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	devs, err := b.Devices(t.Context())
	require.NoError(t, err, "a refused memory read does not fail the GPU")
	for i, d := range devs {
		if i < 4 {
			assert.Equal(t, gpu.FeatureEnabled, d.MIG)
			assert.Equal(t, uint64(40192<<20), d.MemoryBytes, "GPU %d: the 7g profile's memory", i)
		} else {
			assert.Zero(t, d.MemoryBytes, "GPU %d: without MIG there is no profile to ask", i)
		}
	}
	assert.Contains(t, logs.String(), "run as root", "the log says what to do for the others")
}

// TestPersistenceWarning: a limit set while persistence mode is off is
// lost when the driver unloads; the operator is told once, the inventory
// follows the mode, and the warning comes back if the mode is turned off
// again.
func TestPersistenceWarning(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41))
	var logs bytes.Buffer
	b := newTestBackend(t, r, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	ctx := t.Context()
	warnings := func() int { return strings.Count(logs.String(), "persistence mode is off") }

	require.NoError(t, b.SetPowerLimit(ctx, 0, 220))
	require.NoError(t, b.SetPowerLimit(ctx, 0, 200))
	require.NoError(t, b.LockClocks(ctx, 0, 210, 1500))
	assert.Equal(t, 1, warnings(), "warned once, not on every set")
	assert.Contains(t, logs.String(), "nvidia-smi -pm 1")

	require.NoError(t, b.SetPowerLimit(ctx, 1, 250))
	assert.Equal(t, 1, warnings(), "the A40 runs with persistence on")

	r.gpus[0].state.persistence.Store(true)
	require.NoError(t, b.SetPowerLimit(ctx, 0, 210))
	devs, _ := b.Devices(ctx)
	assert.Equal(t, gpu.FeatureEnabled, devs[0].Persistence, "the inventory follows the mode")
	r.gpus[0].state.persistence.Store(false)
	require.NoError(t, b.LockClocks(ctx, 0, 210, 1500))
	assert.Equal(t, 2, warnings(), "off again: warned again")
}

// TestSetPowerLimitRereadsWhatIsInForce: the inventory shows the limit the
// driver enforces after a set, not the one asked for: another limit can
// hold the GPU lower.
func TestSetPowerLimitRereadsWhatIsInForce(t *testing.T) {
	r := newRig(a40(0x41))
	st := r.gpus[0].state
	r.gpus[0].GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) {
		return min(st.limitMW.Load(), 200_000), gonvml.SUCCESS // a 200 W cap set elsewhere
	}
	b := newTestBackend(t, r)
	require.NoError(t, b.SetPowerLimit(t.Context(), 0, 250))
	devs, err := b.Devices(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 200.0, devs[0].PowerLimit.Value.CurrentW)
	assert.Equal(t, uint32(250_000), st.limitMW.Load(), "the management limit was set as asked")

	// Someone runs nvidia-smi -pl: PowerLimits reads it and the inventory
	// follows, so a restore starts from the truth.
	st.limitMW.Store(150_000)
	lim, err := b.PowerLimits(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, 150.0, lim.CurrentW)
	devs, _ = b.Devices(t.Context())
	assert.Equal(t, 150.0, devs[0].PowerLimit.Value.CurrentW)
}

// TestLockClocksRejectsNVMLSentinels: NVML reads 0xffffff00 and up as
// named limits (TDP clock, unlimited), so they must not pass as MHz.
func TestLockClocksRejectsNVMLSentinels(t *testing.T) {
	r := newRig(a40(0x41))
	b := newTestBackend(t, r)
	for _, tc := range []struct{ min, max int }{
		{210, 0xffffff00},
		{210, 0xffffff01}, // NVML_CLOCK_LIMIT_ID_TDP
		{0xffffff02, 0xffffff02},
	} {
		err := b.LockClocks(t.Context(), 0, tc.min, tc.max)
		assert.ErrorIs(t, err, gpu.ErrInvalid, "%#x-%#x", tc.min, tc.max)
		assert.ErrorContains(t, err, "NVML's named limits")
	}
	assert.Empty(t, r.gpus[0].SetGpuLockedClocksCalls(), "nothing reached the driver")
	require.NoError(t, b.LockClocks(t.Context(), 0, 210, 1740))
}

// TestProcessesOfEveryKind: a GPU is free only when no process holds it,
// so graphics processes (Xorg) and MPS clients count as well as CUDA
// ones; a process with compute and graphics contexts is listed once.
func TestProcessesOfEveryKind(t *testing.T) {
	r := newRig(a40(0x41))
	st := r.gpus[0].state
	st.procs = []gonvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 3 << 30}}
	st.graphics = []gonvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 3 << 30}, {Pid: 1000, UsedGpuMemory: 50 << 20}}
	st.mps = []gonvml.ProcessInfo{{Pid: 7000, UsedGpuMemory: 1 << 30}}
	r.names[4242], r.names[1000], r.names[7000] = "python3", "Xorg", "trainer"
	b := newTestBackend(t, r)
	procs, err := b.Processes(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, []gpu.Process{
		{PID: 4242, UsedMemoryBytes: gpu.Some[uint64](3 << 30), Name: "python3"},
		{PID: 1000, UsedMemoryBytes: gpu.Some[uint64](50 << 20), Name: "Xorg"},
		{PID: 7000, UsedMemoryBytes: gpu.Some[uint64](1 << 30), Name: "trainer"},
	}, procs)

	// A list the driver cannot give fails the call: half a list could
	// hand a busy GPU to the next tenant.
	r.gpus[0].GetGraphicsRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { return nil, gonvml.ERROR_UNKNOWN }
	_, err = b.Processes(t.Context(), 0)
	assert.ErrorIs(t, err, ErrDriver)
	assert.ErrorContains(t, err, "get graphics processes")
	// One it does not keep is just empty.
	r.gpus[0].GetGraphicsRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { return nil, gonvml.ERROR_NOT_SUPPORTED }
	procs, err = b.Processes(t.Context(), 0)
	require.NoError(t, err)
	assert.Len(t, procs, 2)
}

// TestSetMIGRereadsMinor: the device node may change with the MIG mode,
// and isolation gives containers /dev/nvidiaN from the inventory.
func TestSetMIGRereadsMinor(t *testing.T) {
	r := newRig(a40(0x41), h100(0x81))
	g := r.gpus[1]
	setMIG := g.SetMigModeFunc
	g.SetMigModeFunc = func(mode int) (gonvml.Return, gonvml.Return) {
		g.state.minor.Store(7)
		return setMIG(mode)
	}
	b := newTestBackend(t, r)
	devs, _ := b.Devices(t.Context())
	require.Equal(t, "/dev/nvidia1", devs[1].DevicePath())
	require.NoError(t, b.SetMIG(t.Context(), 1, true))
	devs, _ = b.Devices(t.Context())
	assert.Equal(t, "/dev/nvidia7", devs[1].DevicePath())

	g.GetMinorNumberFunc = func() (int, gonvml.Return) { return 0, gonvml.ERROR_UNKNOWN }
	require.NoError(t, b.SetMIG(t.Context(), 1, false))
	devs, _ = b.Devices(t.Context())
	assert.Equal(t, -1, devs[1].Minor, "unknown, never a stale node that may be another GPU's")
}

// TestNoPermissionAtDiscovery: a container given only some /dev/nvidiaN
// gets NO_PERMISSION for the others. Those are not lost GPUs (a reset
// would not help): the error says so and what to do, the rest of the node
// runs, and process names still resolve.
func TestNoPermissionAtDiscovery(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41), h100(0x81))
	r.gpus[0].state.procs = []gonvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 1 << 30}}
	r.names[4242] = "python3"
	byIndex := r.DeviceGetHandleByIndexFunc
	r.DeviceGetHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i == 1 {
			return nil, gonvml.ERROR_NO_PERMISSION
		}
		return byIndex(i)
	}
	b, err := New(t.Context(), WithLibrary(r), WithEventWait(testWait))
	require.NoError(t, err)
	devs, err := b.Devices(t.Context())
	require.Len(t, devs, 3)
	require.Error(t, err)
	var de *gpu.DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 1, de.Index)
	assert.ErrorIs(t, err, gpu.ErrPermission)
	assert.False(t, errors.Is(err, gpu.ErrDeviceLost), "not lost: it needs access, not a reset")
	assert.ErrorContains(t, err, "give it access to the GPU's /dev/nvidiaN")
	var ne Error
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, gonvml.ERROR_NO_PERMISSION, ne.Code)

	procs, err := b.Processes(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, "python3", procs[0].Name, "a GPU failing discovery no longer turns process names off")

	m, err := gpu.New(t.Context(), b)
	require.NoError(t, err)
	defer m.Close()
	h, err := m.Health(m.Devices()[1].UUID)
	require.NoError(t, err)
	assert.False(t, h.Healthy)
	assert.Contains(t, h.Reason, "may not be opened by this process")
	h, _ = m.Health(m.Devices()[2].UUID)
	assert.True(t, h.Healthy)
}

// TestPCIeThroughputCost: NVML counts PCIe bytes over a 20 ms window and
// may block for it. New measures what a Sample pays on this host and
// tells the operator; WithPCIeThroughput(false) leaves the calls out.
func TestPCIeThroughputCost(t *testing.T) {
	r := newRig(a40(0x41))
	tput := r.gpus[0].GetPcieThroughputFunc
	r.gpus[0].GetPcieThroughputFunc = func(c gonvml.PcieUtilCounter) (uint32, gonvml.Return) {
		time.Sleep(5 * time.Millisecond) // a quarter of NVML's window, to keep the test short
		return tput(c)
	}
	var logs bytes.Buffer
	b := newTestBackend(t, r, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	assert.Contains(t, logs.String(), "PCIe throughput reads block")
	assert.Contains(t, logs.String(), "WithPCIeThroughput(false)")
	s := []gpu.Sample{{Index: 0}}
	require.NoError(t, b.Sample(t.Context(), s))
	assert.True(t, s[0].PCIeRxBytesPerS.Valid)

	r2 := newRig(a40(0x41))
	b2 := newTestBackend(t, r2, WithPCIeThroughput(false))
	require.NoError(t, b2.Sample(t.Context(), s))
	assert.False(t, s[0].PCIeRxBytesPerS.Valid, "absent, not zero")
	assert.False(t, s[0].PCIeTxBytesPerS.Valid)
	assert.True(t, s[0].PowerW.Valid)
	assert.Empty(t, r2.gpus[0].GetPcieThroughputCalls(), "no throughput call at all")
}

// TestBadInputNodeRunsOn: an old driver that lacks every newer call, a GPU
// this process may not open and one that fell off its riser. New and the
// Manager still come up for the GPU that works, one error says what cannot
// be used and why, by category, and no missing call is ever made.
func TestBadInputNodeRunsOn(t *testing.T) {
	r := newRig(rtx3080(0x0a), rtx3080(0x0b), a40(0x41))
	r.driver = "460.91.03"
	for _, c := range newerCalls() {
		r.hide(t, c.symbol)
	}
	byIndex := r.DeviceGetHandleByIndexFunc
	r.DeviceGetHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i == 0 {
			return nil, gonvml.ERROR_NO_PERMISSION
		}
		return byIndex(i)
	}
	r.gpus[1].state.lost.Store(true)

	b, err := New(t.Context(), WithLibrary(r), WithEventWait(testWait))
	require.NoError(t, err)
	_, err = b.Devices(t.Context())
	require.Error(t, err)
	assert.ErrorIs(t, err, gpu.ErrPermission, "GPU 0: %v", err)
	assert.ErrorIs(t, err, gpu.ErrDeviceLost, "GPU 1: %v", err)
	var indexes []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var de *gpu.DeviceError
		require.ErrorAs(t, e, &de)
		indexes = append(indexes, de.Index)
	}
	assert.Equal(t, []int{0, 1}, indexes, "one error names every GPU that cannot be used")

	m, err := gpu.New(t.Context(), b)
	require.NoError(t, err)
	defer m.Close()
	a40 := m.Devices()[2]
	h, err := m.Health(a40.UUID)
	require.NoError(t, err)
	assert.True(t, h.Healthy)
	s, err := m.Sample(t.Context(), a40.UUID)
	require.NoError(t, err)
	assert.True(t, s.PowerW.Valid)
	assert.True(t, s.ClockEvents.Valid, "clock reasons through the older call")
	procs, err := m.Processes(t.Context(), a40.UUID)
	require.NoError(t, err)
	assert.Empty(t, procs)
}
