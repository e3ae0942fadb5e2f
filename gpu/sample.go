package gpu

import (
	"strings"
	"time"
)

// Sample is one reading of one device's telemetry. Readings the device does
// not support stay invalid rather than zero.
type Sample struct {
	Index int
	UUID  string
	Time  time.Time // taken from the Manager's clock

	PowerW Optional[float64]
	// EnergyMJ is the device's total energy counter in millijoules since the
	// driver loaded (NVML, Volta and newer). It is a counter: difference it,
	// and expect it to reset when the driver reloads.
	EnergyMJ        Optional[uint64]
	TemperatureC    Optional[int]
	GPUUtilPct      Optional[int]
	MemUtilPct      Optional[int]
	MemoryUsedBytes Optional[uint64]
	SMClockMHz      Optional[int]
	MemClockMHz     Optional[int]
	ClockEvents     Optional[ClockEvents]
	PCIeTxBytesPerS Optional[uint64]
	PCIeRxBytesPerS Optional[uint64]
	FanPct          Optional[int]
	Link            Link // current link; zero when unknown
}

// EnergyJ returns the energy counter in joules.
func (s *Sample) EnergyJ() Optional[float64] {
	if !s.EnergyMJ.Valid {
		return Optional[float64]{}
	}
	return Some(float64(s.EnergyMJ.Value) / 1000)
}

// ClockEvents is a bit set of reasons the clocks are held down, with NVML's
// bit values (nvmlClocksEventReason*).
type ClockEvents uint64

const (
	ClockEventGPUIdle              ClockEvents = 0x1
	ClockEventApplicationsClocks   ClockEvents = 0x2
	ClockEventSWPowerCap           ClockEvents = 0x4
	ClockEventHWSlowdown           ClockEvents = 0x8
	ClockEventSyncBoost            ClockEvents = 0x10
	ClockEventSWThermalSlowdown    ClockEvents = 0x20
	ClockEventHWThermalSlowdown    ClockEvents = 0x40
	ClockEventHWPowerBrakeSlowdown ClockEvents = 0x80
	ClockEventDisplayClock         ClockEvents = 0x100
)

var clockEventNames = []struct {
	bit  ClockEvents
	name string
}{
	{ClockEventGPUIdle, "idle"},
	{ClockEventApplicationsClocks, "app-clocks"},
	{ClockEventSWPowerCap, "sw-power-cap"},
	{ClockEventHWSlowdown, "hw-slowdown"},
	{ClockEventSyncBoost, "sync-boost"},
	{ClockEventSWThermalSlowdown, "sw-thermal"},
	{ClockEventHWThermalSlowdown, "hw-thermal"},
	{ClockEventHWPowerBrakeSlowdown, "hw-power-brake"},
	{ClockEventDisplayClock, "display-clock"},
}

// Throttled reports whether any reason other than idle holds the clocks down.
func (c ClockEvents) Throttled() bool { return c&^ClockEventGPUIdle != 0 }

func (c ClockEvents) String() string {
	if c == 0 {
		return "none"
	}
	var b strings.Builder
	rest := c
	for _, n := range clockEventNames {
		if c&n.bit != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		b.WriteString("other")
	}
	return b.String()
}
