//go:build cgo

package mining_test

import (
	"context"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/nvml"
	"github.com/gpufarm/gpufarm/mining"
)

// nvmlLimits is what the mock GPU remembers of its tuning.
type nvmlLimits struct{ limitMW, lockMin, lockMax uint32 }

// dgxWithControls is go-nvml's DGX A100 mock with the power and clock
// controls a tune uses (400 W default, 100-400 W), and NOT_SUPPORTED for
// the probes it lacks.
func dgxWithControls() (*dgxa100.Server, []*nvmlLimits) {
	srv := dgxa100.New()
	var states []*nvmlLimits
	ns := gonvml.ERROR_NOT_SUPPORTED
	srv.EventSetCreateFunc = func() (gonvml.EventSet, gonvml.Return) { return nil, ns }
	for _, h := range srv.Devices {
		d := h.(*dgxa100.Device)
		st := &nvmlLimits{limitMW: 400000}
		states = append(states, st)
		d.GetPowerManagementLimitConstraintsFunc = func() (uint32, uint32, gonvml.Return) { return 100000, 400000, gonvml.SUCCESS }
		d.GetPowerManagementLimitFunc = func() (uint32, gonvml.Return) { return st.limitMW, gonvml.SUCCESS }
		d.GetPowerManagementDefaultLimitFunc = func() (uint32, gonvml.Return) { return 400000, gonvml.SUCCESS }
		d.SetPowerManagementLimitFunc = func(mw uint32) gonvml.Return {
			if mw < 100000 || mw > 400000 {
				return gonvml.ERROR_INVALID_ARGUMENT
			}
			st.limitMW = mw
			return gonvml.SUCCESS
		}
		d.SetGpuLockedClocksFunc = func(lo, hi uint32) gonvml.Return { st.lockMin, st.lockMax = lo, hi; return gonvml.SUCCESS }
		d.ResetGpuLockedClocksFunc = func() gonvml.Return { st.lockMin, st.lockMax = 0, 0; return gonvml.SUCCESS }
		d.GetSerialFunc = func() (string, gonvml.Return) { return "", ns }
		d.GetVbiosVersionFunc = func() (string, gonvml.Return) { return "", ns }
		d.GetCurrPcieLinkGenerationFunc = func() (int, gonvml.Return) { return 0, ns }
		d.GetCurrPcieLinkWidthFunc = func() (int, gonvml.Return) { return 0, ns }
		d.GetMaxPcieLinkGenerationFunc = func() (int, gonvml.Return) { return 0, ns }
		d.GetMaxPcieLinkWidthFunc = func() (int, gonvml.Return) { return 0, ns }
		d.GetEccModeFunc = func() (gonvml.EnableState, gonvml.EnableState, gonvml.Return) { return 0, 0, ns }
		d.GetPowerUsageFunc = func() (uint32, gonvml.Return) { return 90000, gonvml.SUCCESS }
		d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) { return 0, ns }
		d.GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) { return 40, gonvml.SUCCESS }
		d.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) { return gonvml.Utilization{}, ns }
		d.GetClockInfoFunc = func(gonvml.ClockType) (uint32, gonvml.Return) { return 0, ns }
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) { return 0, ns }
		d.GetPcieThroughputFunc = func(gonvml.PcieUtilCounter) (uint32, gonvml.Return) { return 0, ns }
		d.GetFanSpeedFunc = func() (uint32, gonvml.Return) { return 0, ns }
		d.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { return nil, gonvml.SUCCESS }
		d.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, ns }
		d.GetGpuMaxPcieLinkGenerationFunc = func() (int, gonvml.Return) { return 0, ns }
		d.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { return st.limitMW, gonvml.SUCCESS }
		d.GetPersistenceModeFunc = func() (gonvml.EnableState, gonvml.Return) { return gonvml.FEATURE_ENABLED, gonvml.SUCCESS }
		d.GetSupportedEventTypesFunc = func() (uint64, gonvml.Return) { return 0, ns }
	}
	return srv, states
}

// The tune reaches the GPU through gpu.Manager on the NVML backend, and
// Restore puts NVML's defaults back.
func TestTunerOnNVMLMock(t *testing.T) {
	srv, states := dgxWithControls()
	b, err := nvml.New(context.Background(), nvml.WithLibrary(srv))
	require.NoError(t, err)
	gm, err := gpu.New(context.Background(), b)
	require.NoError(t, err)
	defer gm.Close()
	d := gm.Devices()[3]
	_, err = mining.NewTuner(gm, []mining.Profile{{Model: d.Name, PowerLimitW: 450}}, nil)
	require.ErrorIs(t, err, mining.ErrInvalid, "450 W is beyond the A100's 400 W")

	tu, err := mining.NewTuner(gm, []mining.Profile{{Model: d.Name, Algorithm: "ethash", PowerLimitW: 250, MinClockMHz: 1000, MaxClockMHz: 1100}}, nil)
	require.NoError(t, err)
	_, applied, err := tu.Apply(context.Background(), d, "ethash")
	require.NoError(t, err)
	require.True(t, applied)
	assert.Equal(t, uint32(250000), states[3].limitMW)
	assert.Equal(t, [2]uint32{1000, 1100}, [2]uint32{states[3].lockMin, states[3].lockMax})
	assert.Equal(t, uint32(400000), states[2].limitMW, "the other GPUs are untouched")

	require.NoError(t, tu.Restore(context.Background(), d.UUID))
	assert.Equal(t, uint32(400000), states[3].limitMW)
	assert.Equal(t, [2]uint32{0, 0}, [2]uint32{states[3].lockMin, states[3].lockMax})
}
