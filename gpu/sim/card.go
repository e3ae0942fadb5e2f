package sim

import (
	"math"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

const mib = 1 << 20

// Card is one simulated board: the model's data (what every board of that
// model reports) plus where this board sits (slot, bus id) and what it is
// called (UUID, serial). Start from a model constructor such as RTX3080 and
// change fields to build a custom rig; zero identity fields are derived by
// New from the preset name and the board's index.
type Card struct {
	// Model identity, as NVML reports it.
	Name              string
	Class             gpu.Class
	Architecture      gpu.Architecture
	ComputeCapability gpu.ComputeCapability
	PCIDeviceID       uint32 // device<<16 | vendor
	MemoryBytes       uint64
	VBIOS             string // empty when unknown

	// Board identity. Empty fields are derived deterministically by New.
	UUID     string // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
	Serial   string // only used when HasSerial
	PCIBusID string // any form gpu.NormalizePCIBusID accepts

	// Capabilities: a false or unsupported value makes the reading or the
	// call absent, as ERROR_NOT_SUPPORTED does on real cards.
	HasSerial     bool        // boards with an inforom (datacenter) report a serial
	ECC           gpu.Feature // state at boot
	MIG           gpu.Feature // state at boot; FeatureUnsupported on non-MIG cards
	EnergyCounter bool        // NVML total-energy counter (mJ)
	PowerSensor   bool        // NVML power draw
	Fan           bool        // fan speed is reported (possibly as a constant 0 %)

	// PCIe. DeviceLink is what the GPU itself can train to; Slot is what the
	// slot allows: its generation (or the BIOS setting) and its lanes (zero
	// fields mean no limit). Riser is the lanes a riser between slot and
	// card wires, 0 when the card sits in the slot. NVML's max link is the
	// lower of device and slot in both generation and width, so a riser
	// in a wider slot shows only in the current width, and one in an x1
	// slot reads as the slot.
	DeviceLink gpu.Link
	Slot       gpu.Link
	Riser      int
	// LinkPowerSaving: an idle link drops to gen 1 (GeForce and PCIe
	// datacenter boards do; SXM A100 boards stay at gen 4 in the fixtures).
	LinkPowerSaving bool

	// Persistence is the driver's persistence mode at boot. The driver
	// starts with it off; datacenter installs usually run
	// nvidia-persistenced, GeForce mining rigs usually do not.
	Persistence gpu.Feature
	// ReservedMemoryBytes is what the driver and firmware set aside, as
	// NVML's memory info v2 reports it; 0 when no dump of the model says.
	ReservedMemoryBytes uint64

	// Power. Power.CurrentW is the limit at boot; a zero Power.MaxW means
	// the board has no power management (PowerLimits is unsupported).
	Power     gpu.PowerLimits
	IdleW     float64 // draw with no load
	FullLoadW float64 // draw at Util 1 and boost clock when no limit clips it

	// Clocks in MHz. The SM clock runs at BoostSMClockMHz under load; locks
	// and power caps move it from there. Zero MaxSMClockMHz means no clock
	// readings and no clock control.
	IdleSMClockMHz  int
	BoostSMClockMHz int
	MaxSMClockMHz   int
	IdleMemClockMHz int
	MaxMemClockMHz  int

	// Thermals: steady-state temperatures at IdleW and at FullLoadW (the
	// line through them is "ambient + k*power"), and the time constant of
	// the first-order lag toward it.
	IdleC      float64
	LoadC      float64
	ThermalLag time.Duration
	// Fan speed at IdleC and at LoadC, interpolated on the temperature.
	FanIdlePct int
	FanLoadPct int
}

// The model constructors below return fresh values so that no mutable
// package state exists. Numbers marked "fixture" come from the nvidia-smi
// dumps in shared/fixtures/nvidia-smi; those the tests check the models
// against are copied into the module's gpu/testdata/nvidia-smi. The rest
// are the vendor's specifications or, where marked, estimates.

// RTX3080 is an NVIDIA GeForce RTX 3080 10 GB (GA102, non-LHR device id).
// Fixture: rtx3080_driver536.40.xml (limits 320 W default, 100-336 W, idle
// 22.78 W at P8 and 31 C, VBIOS, max clocks 2100/9501 MHz),
// rtx3080_driver595.58.03.xml (1950 MHz SM clock under load) and
// rtx3080_driver550.54.14.txt (persistence mode off, 239 MiB reserved).
func RTX3080() Card {
	return Card{
		Name:                "NVIDIA GeForce RTX 3080",
		Class:               gpu.ClassConsumer,
		Architecture:        gpu.ArchAmpere,
		ComputeCapability:   gpu.ComputeCapability{Major: 8, Minor: 6},
		PCIDeviceID:         0x220610de,
		MemoryBytes:         10240 * mib,
		ReservedMemoryBytes: 239 * mib,
		Persistence:         gpu.FeatureDisabled,
		VBIOS:               "94.02.71.40.72",
		EnergyCounter:       true,
		PowerSensor:         true,
		Fan:                 true,
		DeviceLink:          gpu.Link{Gen: 4, Width: 16},
		LinkPowerSaving:     true,
		Power:               gpu.PowerLimits{CurrentW: 320, DefaultW: 320, MinW: 100, MaxW: 336},
		IdleW:               22.78,
		FullLoadW:           320,
		IdleSMClockMHz:      210,
		BoostSMClockMHz:     1950,
		MaxSMClockMHz:       2100,
		IdleMemClockMHz:     405,
		MaxMemClockMHz:      9501,
		IdleC:               31,
		LoadC:               75,
		ThermalLag:          30 * time.Second,
		FanIdlePct:          30,
		FanLoadPct:          80,
	}
}

// RTX3090 is an NVIDIA GeForce RTX 3090 24 GB (GA102).
// Fixture: rtx3090_x2_driver560.35.03.txt, GPU 0 (350 W default and max,
// 100 W min, idle 30.10 W at P8 and 30 C, fan 30 %, VBIOS, device id,
// max clocks 2100/9751 MHz, persistence on, 422 MiB reserved). Boost
// clock: NVIDIA's 1695 MHz specification.
func RTX3090() Card {
	return Card{
		Name:                "NVIDIA GeForce RTX 3090",
		Class:               gpu.ClassConsumer,
		Architecture:        gpu.ArchAmpere,
		ComputeCapability:   gpu.ComputeCapability{Major: 8, Minor: 6},
		PCIDeviceID:         0x220410de,
		MemoryBytes:         24576 * mib,
		ReservedMemoryBytes: 422 * mib,
		Persistence:         gpu.FeatureEnabled,
		VBIOS:               "94.02.42.40.34",
		EnergyCounter:       true,
		PowerSensor:         true,
		Fan:                 true,
		DeviceLink:          gpu.Link{Gen: 4, Width: 16},
		LinkPowerSaving:     true,
		Power:               gpu.PowerLimits{CurrentW: 350, DefaultW: 350, MinW: 100, MaxW: 350},
		IdleW:               30.10,
		FullLoadW:           350,
		IdleSMClockMHz:      210,
		BoostSMClockMHz:     1695,
		MaxSMClockMHz:       2100,
		IdleMemClockMHz:     405,
		MaxMemClockMHz:      9751,
		IdleC:               30,
		LoadC:               78,
		ThermalLag:          30 * time.Second,
		FanIdlePct:          30,
		FanLoadPct:          85,
	}
}

// A40 is an NVIDIA A40 48 GB (GA102, passive, ECC on).
// Fixture: a40_x10_driver550.127.05.txt, GPU 0 (46068 MiB with ECC on,
// 300 W default and max, 100 W min, idle 29.70 W at P8 and 29 C, fan
// reported as 0 %, SM clock 0 MHz at P8, 1740/7251 MHz max, VBIOS,
// persistence on, 665 MiB reserved).
func A40() Card {
	return Card{
		Name:                "NVIDIA A40",
		Class:               gpu.ClassDatacenter,
		Architecture:        gpu.ArchAmpere,
		ComputeCapability:   gpu.ComputeCapability{Major: 8, Minor: 6},
		PCIDeviceID:         0x223510de,
		MemoryBytes:         46068 * mib,
		ReservedMemoryBytes: 665 * mib,
		Persistence:         gpu.FeatureEnabled,
		VBIOS:               "94.02.5C.00.03",
		HasSerial:           true,
		ECC:                 gpu.FeatureEnabled,
		EnergyCounter:       true,
		PowerSensor:         true,
		Fan:                 true, // passive board, but NVML reports 0 %
		DeviceLink:          gpu.Link{Gen: 4, Width: 16},
		LinkPowerSaving:     true,
		Power:               gpu.PowerLimits{CurrentW: 300, DefaultW: 300, MinW: 100, MaxW: 300},
		IdleW:               29.70,
		FullLoadW:           300,
		IdleSMClockMHz:      0,
		BoostSMClockMHz:     1740,
		MaxSMClockMHz:       1740,
		IdleMemClockMHz:     405,
		MaxMemClockMHz:      7251,
		IdleC:               29,
		LoadC:               80,
		ThermalLag:          45 * time.Second,
	}
}

// A100SXM440GB is an NVIDIA A100-SXM4-40GB (GA100, ECC on, MIG capable and
// disabled at boot), as in a DGX A100. The fixtures hold only the 80 GB
// board (a100-sxm4-80gb_x4_driver555.42.02.txt): its idle draw (59.77 W,
// 25 C), 100 W minimum limit, SM clocks (210/1410 MHz), persistence on and
// a link that does not drop at idle are used here; 40960 MiB, 400 W and
// the 1215 MHz HBM2 clock are the 40 GB board's specification. VBIOS and
// the reserve (the 80 GB board's 763 MiB says nothing of this one) are
// unknown.
func A100SXM440GB() Card {
	return Card{
		Name:              "NVIDIA A100-SXM4-40GB",
		Class:             gpu.ClassDatacenter,
		Architecture:      gpu.ArchAmpere,
		ComputeCapability: gpu.ComputeCapability{Major: 8, Minor: 0},
		PCIDeviceID:       0x20b010de,
		MemoryBytes:       40960 * mib,
		Persistence:       gpu.FeatureEnabled,
		HasSerial:         true,
		ECC:               gpu.FeatureEnabled,
		MIG:               gpu.FeatureDisabled,
		EnergyCounter:     true,
		PowerSensor:       true,
		DeviceLink:        gpu.Link{Gen: 4, Width: 16},
		Power:             gpu.PowerLimits{CurrentW: 400, DefaultW: 400, MinW: 100, MaxW: 400},
		IdleW:             59.77,
		FullLoadW:         400,
		IdleSMClockMHz:    210,
		BoostSMClockMHz:   1410,
		MaxSMClockMHz:     1410,
		IdleMemClockMHz:   1215,
		MaxMemClockMHz:    1215,
		IdleC:             25,
		LoadC:             65,
		ThermalLag:        40 * time.Second,
	}
}

// CMP170HX is an NVIDIA CMP 170HX 8 GB HBM2e (GA100 mining board, passive).
// No nvidia-smi dump exists: the gen1 x4 link and the 250 W rating locked
// by the BIOS (min = max = default) come from the design brief and the
// reference notes, the 1410/1458 MHz clocks from press coverage; the idle
// draw (50 W) and temperatures are estimates. Persistence mode is the
// driver's default, off. Some drivers name it "NVIDIA Graphics Device";
// the simulator uses the product name. VBIOS and the reserve unknown.
func CMP170HX() Card {
	return Card{
		Name:              "NVIDIA CMP 170HX",
		Class:             gpu.ClassMining,
		Architecture:      gpu.ArchAmpere,
		ComputeCapability: gpu.ComputeCapability{Major: 8, Minor: 0},
		PCIDeviceID:       0x20c210de,
		MemoryBytes:       8192 * mib,
		Persistence:       gpu.FeatureDisabled,
		EnergyCounter:     true,
		PowerSensor:       true,
		DeviceLink:        gpu.Link{Gen: 1, Width: 4},
		Power:             gpu.PowerLimits{CurrentW: 250, DefaultW: 250, MinW: 250, MaxW: 250},
		IdleW:             50,
		FullLoadW:         250,
		IdleSMClockMHz:    210,
		BoostSMClockMHz:   1410,
		MaxSMClockMHz:     1410,
		IdleMemClockMHz:   1458,
		MaxMemClockMHz:    1458,
		IdleC:             35,
		LoadC:             70,
		ThermalLag:        40 * time.Second,
	}
}

// linkMax is NVML's max link: the lower generation and the lower width of
// device and slot.
func (c *Card) linkMax() gpu.Link {
	l := c.DeviceLink
	if c.Slot.Gen > 0 && c.Slot.Gen < l.Gen {
		l.Gen = c.Slot.Gen
	}
	if c.Slot.Width > 0 && c.Slot.Width < l.Width {
		l.Width = c.Slot.Width
	}
	return l
}

// hostGen is the slot's generation when it is below the device's: the one
// case where NVML can tell the host's limit.
func (c *Card) hostGen() int {
	if c.Slot.Gen > 0 && c.Slot.Gen < c.DeviceLink.Gen {
		return c.Slot.Gen
	}
	return 0
}

// linkBusy is the link as trained under load: the max link, through the
// riser's lanes where there is one.
func (c *Card) linkBusy() gpu.Link {
	l := c.linkMax()
	if c.Riser > 0 && c.Riser < l.Width {
		l.Width = c.Riser
	}
	return l
}

// linkIdle is the link at idle: gen 1 where link power saving applies.
func (c *Card) linkIdle() gpu.Link {
	l := c.linkBusy()
	if c.LinkPowerSaving && l.Gen > 1 {
		l.Gen = 1
	}
	return l
}

// bandwidthBytesPerS is the usable per-direction bandwidth of a link in
// bytes per second: gpu.LinkGBps, the one table the SDK judges links by,
// so that what the simulator carries and what readiness promises agree.
func bandwidthBytesPerS(l gpu.Link) uint64 {
	return uint64(math.Round(gpu.LinkGBps(l) * 1e9))
}
