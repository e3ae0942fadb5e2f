//go:build cgo

package nvml

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// mixedRig is an ex-mining node: a GeForce on a riser, a CMP board, an A40
// and an H100.
func mixedRig() *rig {
	return newRig(rtx3080(0x0a), cmp170hx(0x0b), a40(0x41), h100(0x81))
}

func TestInventoryHandBuiltCards(t *testing.T) {
	r := mixedRig()
	b := newTestBackend(t, r)
	devs, err := b.Devices(t.Context())
	require.NoError(t, err)
	require.Len(t, devs, len(r.gpus))

	tests := []struct {
		name             string
		class            gpu.Class
		arch             gpu.Architecture
		serial           bool
		ecc              gpu.Feature
		mig              gpu.Feature
		busID            string
		linkCurrent      gpu.Link
		linkMax          gpu.Link
		gpuGen, hostGen  int
		persistence      gpu.Feature
		genLim, widthLim gpu.LinkLimit
	}{
		// A 10 GiB GeForce on a USB x1 riser in an x16 slot held at gen1:
		// nothing datacenter about it. The max width is slot and card's
		// x16; the riser shows only in the current width, the slot only in
		// the card's own gen 4 above the max.
		{"rtx3080", gpu.ClassConsumer, gpu.ArchAmpere, false, gpu.FeatureUnsupported, gpu.FeatureUnsupported, "0000:0a:00.0",
			gpu.Link{Gen: 1, Width: 1}, gpu.Link{Gen: 1, Width: 16}, 4, 1, gpu.FeatureDisabled, gpu.LinkLimitSlot, gpu.LinkLimitRiser},
		// Calls itself "NVIDIA Graphics Device"; only its PCI id tells.
		// Fused to gen1 x4: the card is the limit, not the slot.
		{"cmp170hx", gpu.ClassMining, gpu.ArchAmpere, false, gpu.FeatureUnsupported, gpu.FeatureUnsupported, "0000:0b:00.0",
			gpu.Link{Gen: 1, Width: 4}, gpu.Link{Gen: 1, Width: 4}, 1, 0, gpu.FeatureDisabled, gpu.LinkLimitCard, gpu.LinkLimitCard},
		{"a40", gpu.ClassDatacenter, gpu.ArchAmpere, true, gpu.FeatureEnabled, gpu.FeatureUnsupported, "0000:41:00.0",
			gpu.Link{Gen: 4, Width: 16}, gpu.Link{Gen: 4, Width: 16}, 4, 0, gpu.FeatureEnabled, gpu.LinkLimitNone, gpu.LinkLimitNone},
		{"h100", gpu.ClassDatacenter, gpu.ArchHopper, true, gpu.FeatureEnabled, gpu.FeatureDisabled, "0000:81:00.0",
			gpu.Link{Gen: 5, Width: 16}, gpu.Link{Gen: 5, Width: 16}, 5, 0, gpu.FeatureEnabled, gpu.LinkLimitNone, gpu.LinkLimitNone},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, s := devs[i], r.gpus[i].spec
			assert.Equal(t, i, d.Index)
			assert.Equal(t, r.gpus[i].uuid, d.UUID)
			assert.Equal(t, s.name, d.Name)
			assert.Equal(t, tt.class, d.Class, "class")
			assert.Equal(t, tt.arch, d.Architecture)
			assert.Equal(t, gpu.ComputeCapability{Major: s.ccMajor, Minor: s.ccMinor}, d.ComputeCapability)
			assert.Equal(t, s.memoryBytes, d.MemoryBytes)
			if tt.serial {
				assert.Equal(t, s.serial, d.Serial)
			} else {
				assert.Empty(t, d.Serial, "a board without an inforom has no serial")
			}
			assert.Equal(t, s.vbios, d.VBIOS)
			assert.Equal(t, tt.busID, d.PCIBusID)
			assert.Equal(t, s.pciDeviceID, d.PCIDeviceID)
			assert.Equal(t, tt.linkCurrent, d.LinkCurrent)
			assert.Equal(t, tt.linkMax, d.LinkMax)
			assert.Equal(t, tt.gpuGen, d.LinkMaxGPUGen, "the GPU's own generation")
			assert.Equal(t, tt.hostGen, d.LinkMaxHostGen, "the host's, known when it is the lower")
			assert.Equal(t, tt.persistence, d.Persistence)
			if s.reserved > 0 {
				assert.Equal(t, gpu.Some(s.reserved), d.ReservedMemoryBytes)
			}
			r := gpu.Assess(d, gpu.Health{Healthy: true})
			assert.Equal(t, tt.genLim, r.GenLimit, "%v", r.Notes)
			assert.Equal(t, tt.widthLim, r.WidthLimit, "%v", r.Notes)
			assert.Equal(t, tt.ecc, d.ECC, "ECC")
			assert.Equal(t, tt.mig, d.MIG, "MIG")
			assert.Equal(t, i, d.Minor)
			assert.Equal(t, "/dev/nvidia"+string(rune('0'+i)), d.DevicePath())
			require.True(t, d.PowerLimit.Valid)
			assert.Equal(t, gpu.PowerLimits{
				CurrentW: float64(s.defaultMW) / 1000, DefaultW: float64(s.defaultMW) / 1000,
				MinW: float64(s.minMW) / 1000, MaxW: float64(s.maxMW) / 1000,
			}, d.PowerLimit.Value)
		})
	}
	assert.Equal(t, 250.0, devs[1].PowerLimit.Value.MinW, "CMP 170HX: fixed 250 W")
	assert.Equal(t, 250.0, devs[1].PowerLimit.Value.MaxW, "CMP 170HX: fixed 250 W")
}

func TestInventoryDGXA100(t *testing.T) {
	x := newDGX()
	b := newTestBackend(t, x)
	devs, err := b.Devices(t.Context())
	require.NoError(t, err)
	require.Len(t, devs, 8)
	for i, d := range devs {
		m := x.gpus[i]
		assert.Equal(t, i, d.Index)
		assert.Equal(t, m.uuid, d.UUID)
		assert.Equal(t, "Mock NVIDIA A100-SXM4-40GB", d.Name)
		assert.Equal(t, gpu.ClassDatacenter, d.Class)
		assert.Equal(t, gpu.ArchAmpere, d.Architecture)
		assert.Equal(t, gpu.ComputeCapability{Major: 8, Minor: 0}, d.ComputeCapability)
		assert.Equal(t, uint64(40<<30), d.MemoryBytes)
		// dgxa100 leaves BusId empty: the id is rebuilt from the bus number.
		want, err := gpu.NormalizePCIBusID("0000:" + hex2(dgxBus[i]) + ":00.0")
		require.NoError(t, err)
		assert.Equal(t, want, d.PCIBusID)
		assert.Equal(t, uint32(0x20B010DE), d.PCIDeviceID)
		assert.Equal(t, gpu.FeatureDisabled, d.MIG, "dgxa100 starts with MIG off")
		assert.Equal(t, gpu.FeatureEnabled, d.ECC)
		assert.Equal(t, i, d.Minor)
	}
}

func hex2(v uint32) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[v>>4&0xf], digits[v&0xf]})
}

func TestPCIBusID(t *testing.T) {
	withBusID := func(s string) gonvml.PciInfo {
		var p gonvml.PciInfo
		for i := 0; i < len(s); i++ {
			p.BusId[i] = s[i]
		}
		return p
	}
	tests := []struct {
		name string
		pci  gonvml.PciInfo
		want string
	}{
		{"nvml form", withBusID("00000000:0A:00.0"), "0000:0a:00.0"},
		{"empty string, numeric fields", gonvml.PciInfo{Domain: 1, Bus: 0xc1, Device: 0}, "0001:c1:00.0"},
		{"nothing known (dgxa100 as shipped)", gonvml.PciInfo{PciDeviceId: 0x20B010DE}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, pciBusID(tt.pci))
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name    string
		brand   gonvml.BrandType
		brandOK bool
		pciID   uint32
		want    gpu.Class
	}{
		{"NVIDIA GeForce RTX 3080", gonvml.BRAND_GEFORCE, true, 0x220610de, gpu.ClassConsumer},
		{"NVIDIA GeForce RTX 4090", 0, false, 0x268410de, gpu.ClassConsumer},
		{"NVIDIA TITAN RTX", gonvml.BRAND_TITAN_RTX, true, 0x1e0210de, gpu.ClassConsumer},
		{"Graphics Device", gonvml.BRAND_GEFORCE, true, 0x218210de, gpu.ClassConsumer},
		{"NVIDIA Graphics Device", gonvml.BRAND_NVIDIA, true, 0x20c210de, gpu.ClassMining},
		{"NVIDIA Graphics Device", gonvml.BRAND_GEFORCE, true, 0x220d10de, gpu.ClassMining},
		{"NVIDIA CMP 170HX", gonvml.BRAND_NVIDIA, true, 0, gpu.ClassMining},
		{"NVIDIA Graphics Device", gonvml.BRAND_NVIDIA, true, 0x123410de, gpu.ClassUnknown},
		{"NVIDIA RTX A6000", gonvml.BRAND_NVIDIA_RTX, true, 0x223010de, gpu.ClassWorkstation},
		{"NVIDIA RTX A4000", gonvml.BRAND_NVIDIA, true, 0x24b010de, gpu.ClassWorkstation},
		{"NVIDIA RTX 6000 Ada Generation", gonvml.BRAND_NVIDIA, true, 0x26b110de, gpu.ClassWorkstation},
		{"Quadro RTX 8000", gonvml.BRAND_QUADRO_RTX, true, 0x1e3010de, gpu.ClassWorkstation},
		{"NVIDIA A40", gonvml.BRAND_NVIDIA, true, 0x223510de, gpu.ClassDatacenter},
		{"NVIDIA A100-SXM4-80GB", gonvml.BRAND_NVIDIA, true, 0x20b210de, gpu.ClassDatacenter},
		{"NVIDIA H100 80GB HBM3", gonvml.BRAND_NVIDIA, true, 0x233010de, gpu.ClassDatacenter},
		{"NVIDIA L40S", gonvml.BRAND_NVIDIA, true, 0x26b910de, gpu.ClassDatacenter},
		{"Tesla T4", gonvml.BRAND_TESLA, true, 0x1eb810de, gpu.ClassDatacenter},
		{"Tesla V100-SXM2-16GB", 0, false, 0x1db110de, gpu.ClassDatacenter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, classify(tt.brand, tt.brandOK, tt.name, tt.pciID))
		})
	}
}

func TestArchitectureFallsBackToComputeCapability(t *testing.T) {
	tests := []struct {
		cc   gpu.ComputeCapability
		want gpu.Architecture
	}{
		{gpu.ComputeCapability{Major: 9, Minor: 0}, gpu.ArchHopper},
		{gpu.ComputeCapability{Major: 8, Minor: 9}, gpu.ArchAda},
		{gpu.ComputeCapability{Major: 8, Minor: 6}, gpu.ArchAmpere},
		{gpu.ComputeCapability{Major: 7, Minor: 5}, gpu.ArchTuring},
		{gpu.ComputeCapability{Major: 7, Minor: 0}, gpu.ArchVolta},
		{gpu.ComputeCapability{Major: 12, Minor: 0}, gpu.ArchBlackwell},
		{gpu.ComputeCapability{}, gpu.ArchUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.cc.String(), func(t *testing.T) {
			assert.Equal(t, tt.want, architecture(gonvml.DEVICE_ARCH_UNKNOWN, true, tt.cc))
			assert.Equal(t, tt.want, architecture(0, false, tt.cc))
		})
	}
}

func TestSampleHandBuiltCards(t *testing.T) {
	r := mixedRig()
	r.gpus[2].state.memUsed.Store(12 << 30)
	b := newTestBackend(t, r)
	dst := make([]gpu.Sample, len(r.gpus))
	for i := range dst {
		dst[i].Index = i
	}
	require.NoError(t, b.Sample(context.Background(), dst))
	for i, s := range dst {
		sp := r.gpus[i].spec
		t.Run(sp.name, func(t *testing.T) {
			assert.Equal(t, r.gpus[i].uuid, s.UUID)
			assert.False(t, s.Time.IsZero())
			assert.Equal(t, gpu.Some(float64(sp.powerMW)/1000), s.PowerW, "mW -> W")
			assert.Equal(t, sp.energy, s.EnergyMJ.Valid, "energy counter present only where supported")
			assert.Equal(t, gpu.Some(int(sp.tempC)), s.TemperatureC)
			assert.Equal(t, gpu.Some(97), s.GPUUtilPct)
			assert.Equal(t, gpu.Some(41), s.MemUtilPct)
			assert.Equal(t, gpu.Some(r.gpus[i].state.memUsed.Load()), s.MemoryUsedBytes)
			assert.Equal(t, gpu.Some(1710), s.SMClockMHz)
			assert.Equal(t, gpu.Some(9501), s.MemClockMHz)
			require.True(t, s.ClockEvents.Valid)
			assert.Equal(t, gpu.ClockEventSWPowerCap|gpu.ClockEventHWThermalSlowdown, s.ClockEvents.Value)
			assert.True(t, s.ClockEvents.Value.Throttled())
			assert.Equal(t, gpu.Some(uint64(150*1024)), s.PCIeTxBytesPerS, "KB/s -> bytes/s")
			assert.Equal(t, gpu.Some(uint64(240_000*1024)), s.PCIeRxBytesPerS)
			assert.Equal(t, sp.fan, s.FanPct.Valid, "fan reading only on cards with fans")
			assert.Equal(t, gpu.Link{Gen: sp.linkGen, Width: sp.linkWidth}, s.Link)
		})
	}
	// Absent is not zero: the 3080 has no energy counter, the A40 has one.
	assert.Equal(t, gpu.Optional[uint64]{}, dst[0].EnergyMJ)
	assert.Positive(t, dst[2].EnergyMJ.Value)
	assert.False(t, dst[0].EnergyJ().Valid)
}

func TestSampleEnergyCounterAdvances(t *testing.T) {
	r := newRig(a40(0x41))
	b := newTestBackend(t, r)
	first := []gpu.Sample{{Index: 0}}
	second := []gpu.Sample{{Index: 0}}
	require.NoError(t, b.Sample(t.Context(), first))
	require.NoError(t, b.Sample(t.Context(), second))
	require.True(t, first[0].EnergyMJ.Valid)
	assert.Equal(t, uint64(r.gpus[0].spec.powerMW)/10, second[0].EnergyMJ.Value-first[0].EnergyMJ.Value)
}

// Unsupported readings are asked once, at New, and then skipped, so a
// GeForce's sampler does not pay for calls that can never succeed.
func TestSampleSkipsUnsupportedProbes(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41))
	b := newTestBackend(t, r)
	rtx, dc := r.gpus[0].Device, r.gpus[1].Device
	energyRTX, energyDC := len(rtx.GetTotalEnergyConsumptionCalls()), len(dc.GetTotalEnergyConsumptionCalls())
	fanDC := len(dc.GetFanSpeedCalls())
	require.Equal(t, 1, energyRTX, "New probes the energy counter once")

	dst := []gpu.Sample{{Index: 0}, {Index: 1}}
	for range 3 {
		require.NoError(t, b.Sample(t.Context(), dst))
	}
	assert.Len(t, rtx.GetTotalEnergyConsumptionCalls(), energyRTX, "RTX 3080 energy: NOT_SUPPORTED is not asked again")
	assert.Len(t, dc.GetFanSpeedCalls(), fanDC, "A40 fan: NOT_SUPPORTED is not asked again")
	assert.Len(t, dc.GetTotalEnergyConsumptionCalls(), energyDC+3, "A40 energy is read every sample")
	assert.Len(t, rtx.GetPowerUsageCalls(), 1+3)
}

// A card that supports nothing optional is still a working device.
func TestNotSupportedNeverFailsTheDevice(t *testing.T) {
	bare := spec{name: "NVIDIA GeForce GTX 1050 Ti", brand: gonvml.BRAND_GEFORCE, arch: gonvml.DEVICE_ARCH_PASCAL,
		ccMajor: 6, ccMinor: 1, memoryBytes: 4 << 30, pciDeviceID: 0x1c8210de, busID: "00000000:01:00.0", bus: 1}
	r := newRig(bare)
	ns3 := func() (uint32, uint32, gonvml.Return) { return 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	g := r.gpus[0].Device
	g.GetCudaComputeCapabilityFunc = func() (int, int, gonvml.Return) { return 0, 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetArchitectureFunc = func() (gonvml.DeviceArchitecture, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetMinorNumberFunc = func() (int, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetPowerManagementLimitConstraintsFunc = ns3
	g.GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) { return gonvml.Utilization{}, gonvml.ERROR_NOT_SUPPORTED }
	g.GetClockInfoFunc = func(gonvml.ClockType) (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetPcieThroughputFunc = func(gonvml.PcieUtilCounter) (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	g.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) { return gonvml.Memory{}, gonvml.ERROR_NOT_SUPPORTED }
	g.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { return gonvml.Memory_v2{}, gonvml.ERROR_NOT_SUPPORTED }
	g.GetPersistenceModeFunc = func() (gonvml.EnableState, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }

	b := newTestBackend(t, r)
	devs, err := b.Devices(t.Context())
	require.NoError(t, err)
	d := devs[0]
	assert.Equal(t, bare.name, d.Name)
	assert.Equal(t, gpu.ClassConsumer, d.Class)
	assert.Equal(t, gpu.ArchUnknown, d.Architecture)
	assert.Equal(t, gpu.Link{}, d.LinkCurrent)
	assert.False(t, d.PowerLimit.Valid)
	assert.Equal(t, gpu.FeatureUnsupported, d.Persistence)
	assert.False(t, d.ReservedMemoryBytes.Valid)
	assert.Equal(t, -1, d.Minor, "an unknown minor never points at another GPU's node")

	dst := []gpu.Sample{{Index: 0}}
	require.NoError(t, b.Sample(t.Context(), dst))
	assert.Equal(t, gpu.Sample{Index: 0, UUID: d.UUID, Time: dst[0].Time}, dst[0], "every reading absent, none zero-valued as present")

	_, err = b.PowerLimits(t.Context(), 0)
	assert.ErrorIs(t, err, gpu.ErrUnsupported)
	err = b.SetPowerLimit(t.Context(), 0, 75)
	assert.ErrorIs(t, err, gpu.ErrUnsupported)
}

func TestSampleDeviceLost(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41), h100(0x81))
	b := newTestBackend(t, r)
	r.gpus[1].state.lost.Store(true)

	dst := []gpu.Sample{{Index: 0}, {Index: 1}, {Index: 2}}
	err := b.Sample(t.Context(), dst)
	require.Error(t, err)
	assert.ErrorIs(t, err, gpu.ErrDeviceLost)
	var de *gpu.DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 1, de.Index)
	assert.Equal(t, r.gpus[1].uuid, de.UUID)
	var ne Error
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, gonvml.ERROR_GPU_IS_LOST, ne.Code)
	assert.Contains(t, err.Error(), "reset it")

	assert.True(t, dst[0].PowerW.Valid, "the other GPUs are still sampled")
	assert.True(t, dst[2].PowerW.Valid)
	assert.Equal(t, gpu.Sample{Index: 1, UUID: r.gpus[1].uuid, Time: dst[1].Time}, dst[1], "a lost GPU has no readings")

	r.gpus[1].state.lost.Store(false)
	require.NoError(t, b.Sample(t.Context(), dst), "a GPU back after a reset samples again")
	assert.True(t, dst[1].PowerW.Valid)
}

func TestSampleUnknownIndex(t *testing.T) {
	b := newTestBackend(t, newRig(a40(0x41)))
	dst := []gpu.Sample{{Index: 0}, {Index: 5}}
	err := b.Sample(t.Context(), dst)
	assert.ErrorIs(t, err, gpu.ErrNotFound)
	var de *gpu.DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, 5, de.Index)
	assert.True(t, dst[0].PowerW.Valid)
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		code gonvml.Return
		want error
	}{
		{gonvml.ERROR_NOT_SUPPORTED, gpu.ErrUnsupported},
		{gonvml.ERROR_FUNCTION_NOT_FOUND, gpu.ErrUnsupported},
		{gonvml.ERROR_NO_PERMISSION, gpu.ErrPermission},
		{gonvml.ERROR_GPU_IS_LOST, gpu.ErrDeviceLost},
		{gonvml.ERROR_RESET_REQUIRED, gpu.ErrDeviceLost},
		{gonvml.ERROR_IN_USE, gpu.ErrBusy},
		{gonvml.ERROR_TIMEOUT, gpu.ErrBusy},
		{gonvml.ERROR_NOT_FOUND, gpu.ErrNotFound},
		{gonvml.ERROR_INVALID_ARGUMENT, gpu.ErrInvalid},
		{gonvml.ERROR_LIBRARY_NOT_FOUND, gpu.ErrUnavailable},
		{gonvml.ERROR_DRIVER_NOT_LOADED, gpu.ErrUnavailable},
		{gonvml.ERROR_UNINITIALIZED, gpu.ErrUnavailable},
		{gonvml.ERROR_LIB_RM_VERSION_MISMATCH, gpu.ErrUnavailable},
		{gonvml.ERROR_UNKNOWN, ErrDriver},
		{gonvml.ERROR_CORRUPTED_INFOROM, ErrDriver},
	}
	for _, tt := range tests {
		t.Run(tt.code.Error(), func(t *testing.T) {
			err := error(Error{Op: "get power usage", Code: tt.code})
			wrapped := errors.Join(errors.New("other"), &gpu.DeviceError{Index: 3, Err: err})
			assert.ErrorIs(t, wrapped, tt.want)
			var ne Error
			require.ErrorAs(t, wrapped, &ne)
			assert.Equal(t, tt.code, ne.Code)
			assert.Contains(t, err.Error(), "nvml: get power usage: "+tt.code.Error())
		})
	}
	assert.NoError(t, nvErr("x", gonvml.SUCCESS))
}

func TestSetPowerLimit(t *testing.T) {
	r := newRig(rtx3080(0x0a), cmp170hx(0x0b))
	b := newTestBackend(t, r)
	ctx := t.Context()

	tests := []struct {
		name    string
		index   int
		watts   float64
		wantErr error
		wantMsg string
	}{
		{"within range", 0, 220, nil, ""},
		{"above max", 0, 400, gpu.ErrInvalid, "outside its allowed range 100-350 W"},
		{"below min", 0, 50, gpu.ErrInvalid, "outside its allowed range 100-350 W"},
		{"NaN", 0, math.NaN(), gpu.ErrInvalid, "positive number of watts"},
		{"CMP fixed limit", 1, 200, gpu.ErrInvalid, "250-250 W"},
		{"CMP at its only value", 1, 250, nil, ""},
		{"no such GPU", 7, 200, gpu.ErrNotFound, "no GPU with index 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.gpus[min(tt.index, 1)].SetPowerManagementLimitCalls())
			err := b.SetPowerLimit(ctx, tt.index, tt.watts)
			if tt.wantErr == nil {
				require.NoError(t, err)
				lim, err := b.PowerLimits(ctx, tt.index)
				require.NoError(t, err)
				assert.Equal(t, tt.watts, lim.CurrentW)
				devs, _ := b.Devices(ctx)
				assert.Equal(t, tt.watts, devs[tt.index].PowerLimit.Value.CurrentW, "inventory follows the limit")
				return
			}
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Len(t, r.gpus[min(tt.index, 1)].SetPowerManagementLimitCalls(), before, "nothing applied")
		})
	}

	// The driver refusing (not root) is a permission error.
	r.gpus[0].SetPowerManagementLimitFunc = func(uint32) gonvml.Return { return gonvml.ERROR_NO_PERMISSION }
	err := b.SetPowerLimit(ctx, 0, 200)
	assert.ErrorIs(t, err, gpu.ErrPermission)
	assert.Contains(t, err.Error(), "run as root")
}

// TestPowerLimitsInventoryAgrees: discovery and PowerLimits read the limits
// the same way, so the inventory and a later read agree, including a board
// that does not report its default limit.
func TestPowerLimitsInventoryAgrees(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(g *gpuMock)
		want    gpu.Optional[gpu.PowerLimits]
		wantErr error
		wantMsg string
	}{
		{"all reported", func(*gpuMock) {},
			gpu.Some(gpu.PowerLimits{CurrentW: 300, DefaultW: 300, MinW: 100, MaxW: 300}), nil, ""},
		// A guessed default would make "reset to default" restore the
		// current limit and report success.
		{"no default limit: left unknown, not guessed", func(g *gpuMock) {
			g.state.limitMW.Store(250_000)
			g.GetPowerManagementDefaultLimitFunc = func() (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
		}, gpu.Some(gpu.PowerLimits{CurrentW: 250, DefaultW: 0, MinW: 100, MaxW: 300}), nil, ""},
		// Another limit (the board's, a second tool's) may hold the GPU
		// below the management limit: the one in force is what counts.
		{"enforced limit below the management limit", func(g *gpuMock) {
			g.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { return 180_000, gonvml.SUCCESS }
		}, gpu.Some(gpu.PowerLimits{CurrentW: 180, DefaultW: 300, MinW: 100, MaxW: 300}), nil, ""},
		{"no enforced limit: the management limit", func(g *gpuMock) {
			g.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
		}, gpu.Some(gpu.PowerLimits{CurrentW: 300, DefaultW: 300, MinW: 100, MaxW: 300}), nil, ""},
		{"constraints refused", func(g *gpuMock) {
			g.GetPowerManagementLimitConstraintsFunc = func() (uint32, uint32, gonvml.Return) { return 0, 0, gonvml.ERROR_NO_PERMISSION }
		}, gpu.Optional[gpu.PowerLimits]{}, gpu.ErrPermission, "get power limit constraints"},
		{"limit unsupported", func(g *gpuMock) {
			g.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
			g.GetPowerManagementLimitFunc = func() (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
		}, gpu.Optional[gpu.PowerLimits]{}, gpu.ErrUnsupported, "get power limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(a40(0x41))
			tt.mod(r.gpus[0])
			b := newTestBackend(t, r)
			devs, err := b.Devices(t.Context())
			require.NoError(t, err, "a power limit the board will not tell is absent, not a failed device")
			assert.Equal(t, tt.want, devs[0].PowerLimit, "inventory")

			lim, err := b.PowerLimits(t.Context(), 0)
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
				assert.ErrorContains(t, err, tt.wantMsg, "the error names the NVML call")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want.Value, lim, "PowerLimits")
		})
	}
}

func TestClocks(t *testing.T) {
	noLock := a40(0x41)
	noLock.clockLock = false
	r := newRig(rtx3080(0x0a), noLock)
	b := newTestBackend(t, r)
	ctx := t.Context()

	require.NoError(t, b.LockClocks(ctx, 0, 210, 1500))
	assert.Equal(t, uint32(210), r.gpus[0].state.lockedMin.Load())
	assert.Equal(t, uint32(1500), r.gpus[0].state.lockedMax.Load())
	require.NoError(t, b.ResetClocks(ctx, 0))
	assert.Zero(t, r.gpus[0].state.lockedMax.Load())

	assert.ErrorIs(t, b.LockClocks(ctx, 0, 1500, 210), gpu.ErrInvalid)
	assert.ErrorIs(t, b.LockClocks(ctx, 0, 0, 210), gpu.ErrInvalid)
	assert.ErrorIs(t, b.LockClocks(ctx, 1, 210, 1500), gpu.ErrUnsupported)
	assert.ErrorIs(t, b.ResetClocks(ctx, 9), gpu.ErrNotFound)
}

func TestProcesses(t *testing.T) {
	r := newRig(a40(0x41), rtx3080(0x0a))
	r.gpus[0].state.procs = []gonvml.ProcessInfo{
		{Pid: 4242, UsedGpuMemory: 3 << 30},
		{Pid: 5151, UsedGpuMemory: math.MaxUint64}, // NVML_VALUE_NOT_AVAILABLE
	}
	r.names[4242] = "python3"
	b := newTestBackend(t, r)

	procs, err := b.Processes(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, []gpu.Process{
		{PID: 4242, UsedMemoryBytes: gpu.Some(uint64(3 << 30)), Name: "python3"},
		{PID: 5151, Name: ""},
	}, procs)

	procs, err = b.Processes(t.Context(), 1)
	require.NoError(t, err)
	assert.Empty(t, procs)
	_, err = b.Processes(t.Context(), 2)
	assert.ErrorIs(t, err, gpu.ErrNotFound)
}

func TestSetMIG(t *testing.T) {
	r := newRig(h100(0x81), a40(0x41))
	b := newTestBackend(t, r)
	ctx := t.Context()

	require.NoError(t, b.SetMIG(ctx, 0, true))
	devs, err := b.Devices(ctx)
	require.NoError(t, err)
	assert.Equal(t, gpu.FeatureEnabled, devs[0].MIG)
	// NVML reports no utilization with MIG on; the reading turns absent
	// rather than failing.
	dst := []gpu.Sample{{Index: 0}}
	require.NoError(t, b.Sample(ctx, dst))
	assert.False(t, dst[0].GPUUtilPct.Valid)
	assert.True(t, dst[0].PowerW.Valid)

	require.NoError(t, b.SetMIG(ctx, 0, false))
	require.NoError(t, b.Sample(ctx, dst))
	assert.True(t, dst[0].GPUUtilPct.Valid, "readings come back after MIG is off")

	r.gpus[0].state.migPending.Store(true)
	err = b.SetMIG(ctx, 0, true)
	assert.ErrorIs(t, err, gpu.ErrBusy)
	assert.Contains(t, err.Error(), "pending")

	assert.ErrorIs(t, b.SetMIG(ctx, 1, true), gpu.ErrUnsupported, "the A40 has no MIG")
}

// A hung NVML call must not hold the caller past its context.
func TestHungCallReturnsAtContextEnd(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41))
	b := newTestBackend(t, r)
	dst := []gpu.Sample{{Index: 0}, {Index: 1}}

	release, started := r.gpus[1].state.hang()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := b.Sample(ctx, dst)
	elapsed := time.Since(begin)
	<-started
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, elapsed, 2*time.Second, "Sample returned %v after its deadline", elapsed)
	t.Logf("hung Sample returned after %v", elapsed)

	// While the call hangs, others wait for it, bounded by their context.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel2()
	err = b.SetPowerLimit(ctx2, 0, 200)
	assert.ErrorIs(t, err, gpu.ErrBusy)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "still running")

	// Once the driver returns, the backend works again.
	release()
	require.NoError(t, b.Sample(t.Context(), dst))
	assert.True(t, dst[1].PowerW.Valid)
}

func TestHungCallThenClose(t *testing.T) {
	r := newRig(a40(0x41))
	b, err := New(context.Background(), WithLibrary(r), WithEventWait(testWait))
	require.NoError(t, err)
	release, started := r.gpus[0].state.hang()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, b.Sample(ctx, []gpu.Sample{{Index: 0}}), context.DeadlineExceeded)
	<-started

	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
		t.Fatal("Close shut NVML down under a running call")
	case <-time.After(50 * time.Millisecond):
	}
	assert.Zero(t, r.shutdowns.Load())
	release()
	require.NoError(t, <-closed)
	assert.Equal(t, int32(1), r.shutdowns.Load())
}

func TestHungInitReturnsAtContextEnd(t *testing.T) {
	r := newRig(a40(0x41))
	unblock := make(chan struct{})
	r.InitFunc = func() gonvml.Return { <-unblock; return gonvml.SUCCESS }
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := New(ctx, WithLibrary(r))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	close(unblock)
	// The abandoned Init succeeded later: the library is released again.
	assert.Eventually(t, func() bool { return r.shutdowns.Load() == 1 }, 5*time.Second, time.Millisecond)
}

func TestNewWithoutDriver(t *testing.T) {
	tests := []struct {
		code gonvml.Return
		msg  string
	}{
		{gonvml.ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found: install the NVIDIA driver (e.g. Debian package nvidia-driver / libnvidia-ml1) or pass WithLibraryPath"},
		{gonvml.ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.code.Error(), func(t *testing.T) {
			r := newRig(a40(0x41))
			r.InitFunc = func() gonvml.Return { return tt.code }
			_, err := New(t.Context(), WithLibrary(r))
			require.Error(t, err)
			assert.ErrorIs(t, err, gpu.ErrUnavailable)
			assert.Contains(t, err.Error(), tt.msg)
			var ne Error
			require.ErrorAs(t, err, &ne)
			assert.Equal(t, tt.code, ne.Code)
			assert.Zero(t, r.shutdowns.Load(), "nothing to shut down after a failed Init")
		})
	}
}

// The real go-nvml loader, on a path with no library: this machine's
// production code path without a GPU.
func TestNewRealLibraryMissing(t *testing.T) {
	_, err := New(t.Context(), WithLibraryPath("/nonexistent/libnvidia-ml.so.1"))
	require.Error(t, err)
	t.Logf("real loader: %v", err)
	assert.ErrorIs(t, err, gpu.ErrUnavailable)
	assert.Contains(t, err.Error(), "/nonexistent/libnvidia-ml.so.1 not found")
}

func TestNewReportsEveryBadOption(t *testing.T) {
	_, err := New(t.Context(), WithLibrary(nil), WithLibraryPath(""), WithEventWait(0), WithClock(nil))
	require.Error(t, err)
	assert.ErrorIs(t, err, gpu.ErrInvalid)
	for _, want := range []string{"WithLibrary: nil library", "WithLibraryPath: empty path", "WithEventWait(0s)", "WithClock: nil clock"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = New(t.Context(), WithLibrary(newRig()), WithLibraryPath("/usr/lib/libnvidia-ml.so.1"))
	assert.ErrorIs(t, err, gpu.ErrInvalid)
	assert.Contains(t, err.Error(), "pass one")
}

// TestUnreadableGPUsDoNotStopTheNode: a GPU that fell off its riser before
// discovery, and one whose name cannot be read, stay listed as stubs that
// fail every call with ErrDeviceLost; the others work, and the Manager
// keeps them all with the unreadable ones unhealthy.
func TestUnreadableGPUsDoNotStopTheNode(t *testing.T) {
	r := newRig(rtx3080(0x0a), a40(0x41), h100(0x81))
	r.gpus[0].state.lost.Store(true)
	r.gpus[2].GetNameFunc = func() (string, gonvml.Return) { return "", gonvml.ERROR_UNKNOWN }
	b, err := New(t.Context(), WithLibrary(r))
	require.NoError(t, err, "one bad riser must not take the node down")
	devs, err := b.Devices(t.Context())
	require.Len(t, devs, 3, "indexes stay as NVML numbers them")
	require.Error(t, err)
	var des []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var de *gpu.DeviceError
		require.ErrorAs(t, e, &de)
		assert.ErrorIs(t, de, gpu.ErrDeviceLost)
		des = append(des, de.Index)
	}
	assert.Equal(t, []int{0, 2}, des, "every unreadable GPU is reported at once")
	assert.Equal(t, "unreadable GPU", devs[0].Name)
	assert.Equal(t, "NVIDIA A40", devs[1].Name)

	dst := []gpu.Sample{{Index: 0}, {Index: 1}}
	err = b.Sample(t.Context(), dst)
	assert.ErrorIs(t, err, gpu.ErrDeviceLost)
	assert.True(t, dst[1].PowerW.Valid, "the readable GPU still samples")
	assert.ErrorIs(t, b.SetPowerLimit(t.Context(), 0, 200), gpu.ErrDeviceLost)

	m, err := gpu.New(t.Context(), b)
	require.NoError(t, err)
	defer m.Close()
	mdevs := m.Devices()
	require.Len(t, mdevs, 3)
	h, err := m.Health(mdevs[0].UUID)
	require.NoError(t, err)
	assert.False(t, h.Healthy)
	assert.Contains(t, h.Reason, "unreadable at discovery")
	h, _ = m.Health(mdevs[1].UUID)
	assert.True(t, h.Healthy)
	r2, _ := m.Readiness(mdevs[2].UUID)
	assert.Equal(t, gpu.UseNone, r2.Use)
}

func TestNewFailsWhenNoGPUIsReadable(t *testing.T) {
	r := newRig(a40(0x41))
	r.gpus[0].state.lost.Store(true)
	_, err := New(t.Context(), WithLibrary(r))
	require.ErrorIs(t, err, gpu.ErrDeviceLost)
	assert.Equal(t, int32(1), r.shutdowns.Load(), "nothing left initialised")
}

func TestCloseIsIdempotent(t *testing.T) {
	r := newRig(a40(0x41))
	b, err := New(t.Context(), WithLibrary(r))
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	assert.Equal(t, int32(1), r.shutdowns.Load())
	assert.ErrorIs(t, b.Sample(context.Background(), []gpu.Sample{{Index: 0}}), gpu.ErrUnavailable)
	assert.ErrorIs(t, b.SetPowerLimit(context.Background(), 0, 200), gpu.ErrUnavailable)
	_, err = b.Devices(context.Background())
	assert.ErrorIs(t, err, gpu.ErrUnavailable)
	assert.ErrorIs(t, b.WatchEvents(context.Background(), make(chan gpu.Event)), gpu.ErrUnavailable)
}

func TestSampleCancelledContext(t *testing.T) {
	b := newTestBackend(t, newRig(a40(0x41)))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	assert.ErrorIs(t, b.Sample(ctx, []gpu.Sample{{Index: 0}}), context.Canceled)
}

// Steady-state sampling must not allocate, inline or on the guard goroutine.
func TestSampleDoesNotAllocate(t *testing.T) {
	b := newTestBackend(t, newRig(rtx3080(0x0a), cmp170hx(0x0b), a40(0x41), h100(0x81)))
	dst := make([]gpu.Sample, 4)
	for i := range dst {
		dst[i].Index = i
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{{"inline", context.Background()}, {"guarded", ctx}} {
		allocs := testing.AllocsPerRun(200, func() {
			if err := b.Sample(tc.ctx, dst); err != nil {
				t.Fatal(err)
			}
		})
		// go-nvml's mock records calls in growing slices; that amortises
		// below one allocation per run, so anything >= 1 is ours.
		assert.Zero(t, allocs, "%s: allocations per Sample", tc.name)
	}
}
