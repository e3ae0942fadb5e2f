//go:build cgo

package nvml_test

import (
	"context"
	"errors"
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/nvml"
)

// mockRTX3080 is a GeForce on a USB x1 mining riser in a slot the BIOS
// holds at gen1, as go-nvml's mock package lets us describe it: every
// function the backend calls on an R470 driver is set, and what a GeForce
// lacks answers ERROR_NOT_SUPPORTED.
func mockRTX3080() *mock.Device {
	notSupported := gonvml.ERROR_NOT_SUPPORTED
	ok := gonvml.SUCCESS
	return &mock.Device{
		GetUUIDFunc:                  func() (string, gonvml.Return) { return "GPU-5a3b0e2c-3080-4d3e-9c1f-000000000001", ok },
		GetNameFunc:                  func() (string, gonvml.Return) { return "NVIDIA GeForce RTX 3080", ok },
		GetBrandFunc:                 func() (gonvml.BrandType, gonvml.Return) { return gonvml.BRAND_GEFORCE, ok },
		GetArchitectureFunc:          func() (gonvml.DeviceArchitecture, gonvml.Return) { return gonvml.DEVICE_ARCH_AMPERE, ok },
		GetCudaComputeCapabilityFunc: func() (int, int, gonvml.Return) { return 8, 6, ok },
		// Version 1: used counts the driver's reserve too.
		GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
			return gonvml.Memory{Total: 10 << 30, Used: 2 << 30}, ok
		},
		GetPersistenceModeFunc: func() (gonvml.EnableState, gonvml.Return) { return gonvml.FEATURE_DISABLED, ok },
		GetSerialFunc:          func() (string, gonvml.Return) { return "", notSupported },
		GetVbiosVersionFunc:    func() (string, gonvml.Return) { return "94.02.71.40.8A", ok },
		GetPciInfoFunc: func() (gonvml.PciInfo, gonvml.Return) {
			p := gonvml.PciInfo{Bus: 0x0a, PciDeviceId: 0x221610de}
			for i, c := range "00000000:0A:00.0" {
				p.BusId[i] = uint8(c)
			}
			return p, ok
		},
		GetCurrPcieLinkGenerationFunc: func() (int, gonvml.Return) { return 1, ok },
		GetCurrPcieLinkWidthFunc:      func() (int, gonvml.Return) { return 1, ok },
		GetMaxPcieLinkGenerationFunc:  func() (int, gonvml.Return) { return 1, ok },
		GetMaxPcieLinkWidthFunc:       func() (int, gonvml.Return) { return 16, ok }, // the card's own width: the riser shows only in the current width
		GetPowerManagementLimitConstraintsFunc: func() (uint32, uint32, gonvml.Return) {
			return 100_000, 350_000, ok
		},
		GetEnforcedPowerLimitFunc:          func() (uint32, gonvml.Return) { return 320_000, ok },
		GetPowerManagementDefaultLimitFunc: func() (uint32, gonvml.Return) { return 320_000, ok },
		GetEccModeFunc: func() (gonvml.EnableState, gonvml.EnableState, gonvml.Return) {
			return 0, 0, notSupported
		},
		GetMigModeFunc:                func() (int, int, gonvml.Return) { return 0, 0, notSupported },
		GetMinorNumberFunc:            func() (int, gonvml.Return) { return 0, ok },
		GetPowerUsageFunc:             func() (uint32, gonvml.Return) { return 221_500, ok },
		GetTotalEnergyConsumptionFunc: func() (uint64, gonvml.Return) { return 0, notSupported },
		GetTemperatureFunc:            func(gonvml.TemperatureSensors) (uint32, gonvml.Return) { return 62, ok },
		GetUtilizationRatesFunc:       func() (gonvml.Utilization, gonvml.Return) { return gonvml.Utilization{Gpu: 97, Memory: 40}, ok },
		GetClockInfoFunc:              func(gonvml.ClockType) (uint32, gonvml.Return) { return 1710, ok },
		// R470 has only the older name of the clock reasons call.
		GetCurrentClocksThrottleReasonsFunc: func() (uint64, gonvml.Return) { return gonvml.ClocksEventReasonSwPowerCap, ok },
		GetPcieThroughputFunc:               func(gonvml.PcieUtilCounter) (uint32, gonvml.Return) { return 200_000, ok },
		GetFanSpeedFunc:                     func() (uint32, gonvml.Return) { return 70, ok },
	}
}

// r470Lacks are the calls of the backend's newer-call table that an R470
// library does not export.
func r470Lacks(symbol string) error {
	switch symbol {
	case "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetGpuMaxPcieLinkGeneration":
		return errors.New("undefined symbol: " + symbol)
	}
	return nil
}

// ExampleNew opens the NVML backend over go-nvml's mock library (on a real
// node, call nvml.New(ctx) without WithLibrary) on an ex-mining rig's R470
// driver, and prints what a farm operator needs to know about the card.
// The calls R470 lacks are never made: their older equivalents stand in.
func ExampleNew() {
	dev := mockRTX3080()
	lib := &mock.Interface{
		InitFunc:                   func() gonvml.Return { return gonvml.SUCCESS },
		ShutdownFunc:               func() gonvml.Return { return gonvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, gonvml.Return) { return "470.256.02", gonvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, gonvml.Return) { return 1, gonvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(int) (gonvml.Device, gonvml.Return) { return dev, gonvml.SUCCESS },
		ExtensionsFunc: func() gonvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: r470Lacks}
		},
	}
	ctx := context.Background()
	b, err := nvml.New(ctx, nvml.WithLibrary(lib))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	devs, _ := b.Devices(ctx)
	fmt.Println("driver", b.DriverVersion())
	for _, d := range devs {
		fmt.Printf("%d %s: %s, %s, %d GiB, bus %s, link %s (max %s), serial %q, ECC %s, persistence %s\n",
			d.Index, d.Name, d.Class, d.Architecture, d.MemoryBytes>>30, d.PCIBusID, d.LinkCurrent, d.LinkMax, d.Serial, d.ECC, d.Persistence)
		fmt.Printf("  the card's own generation known: %t, reserved memory known: %t\n", d.LinkMaxGPUGen > 0, d.ReservedMemoryBytes.Valid)
	}
	s := []gpu.Sample{{Index: 0}}
	if err := b.Sample(ctx, s); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("power %.1f W, energy counter present: %t, %d°C, clocks held by %s\n",
		s[0].PowerW.Value, s[0].EnergyMJ.Valid, s[0].TemperatureC.Value, s[0].ClockEvents.Value)
	// Output:
	// driver 470.256.02
	// 0 NVIDIA GeForce RTX 3080: consumer, Ampere, 10 GiB, bus 0000:0a:00.0, link gen1 x1 (max gen1 x16), serial "", ECC unsupported, persistence disabled
	//   the card's own generation known: false, reserved memory known: false
	// power 221.5 W, energy counter present: false, 62°C, clocks held by sw-power-cap
}
