//go:build cgo

package nvml

import (
	"fmt"
	"strconv"
	"strings"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// Calls newer than some drivers the backend meets. go-nvml links NVML with
// unresolved symbols ignored and opens it lazily, so calling a function
// the installed driver lacks aborts the whole process with "undefined
// symbol"; it never returns FUNCTION_NOT_FOUND. Each such call is looked up
// once, at New, and the backend uses its fallback when it is missing.
const (
	symClockEvents = iota
	symMemoryV2
	symGPUMaxLinkGen
	symMPSProcesses
	symProcessName
	symCount
)

// newerCall is one row of the table below.
type newerCall struct {
	symbol   string // C symbol in libnvidia-ml
	since    string // first driver branch that exports it
	fallback string // what the backend does without it
}

// newerCalls is the table of calls newer than OldestDriver (or, for the
// last two, absent from some libraries at or below it), indexed by the sym
// constants. A function, so no package state can change it.
//
//	| call                                    | since            | fallback                                                        |
//	|-----------------------------------------|------------------|-----------------------------------------------------------------|
//	| nvmlDeviceGetCurrentClocksEventReasons  | R535 (CUDA 12.2) | nvmlDeviceGetCurrentClocksThrottleReasons: the same bits        |
//	| nvmlDeviceGetMemoryInfo_v2              | R510             | nvmlDeviceGetMemoryInfo: used includes the driver's reserve,    |
//	|                                         |                  | reserved memory absent                                          |
//	| nvmlDeviceGetGpuMaxPcieLinkGeneration   | R510             | none: the GPU's own generation stays unknown, readiness cannot  |
//	|                                         |                  | tell a slot limit from a card limit                             |
//	| nvmlDeviceGetMPSComputeRunningProcesses | before R470      | MPS clients are not listed                                      |
//	| nvmlSystemGetProcessName                | every driver     | process names stay empty (stripped libraries lack it)           |
//
// go-nvml itself picks the newest of the _v2/_v3 variants the library
// exports for the process lists, PCI info, device count and handles and
// the event wait, so those need no row.
func newerCalls() [symCount]newerCall {
	return [symCount]newerCall{
		symClockEvents:   {"nvmlDeviceGetCurrentClocksEventReasons", "R535", "read clock reasons with nvmlDeviceGetCurrentClocksThrottleReasons (same bits)"},
		symMemoryV2:      {"nvmlDeviceGetMemoryInfo_v2", "R510", "read memory with nvmlDeviceGetMemoryInfo: used includes the driver's reserve, reserved memory is absent"},
		symGPUMaxLinkGen: {"nvmlDeviceGetGpuMaxPcieLinkGeneration", "R510", "the GPU's own PCIe generation stays unknown"},
		symMPSProcesses:  {"nvmlDeviceGetMPSComputeRunningProcesses", "before R470", "MPS clients are not listed among a GPU's processes"},
		symProcessName:   {"nvmlSystemGetProcessName", "every driver (stripped libraries lack it)", "process names stay empty"},
	}
}

// symbolLookup reports whether the loaded library exports a C symbol. It
// is the backend's one seam for what the driver has: tests hide a symbol
// through the mock library's Extensions().LookupSymbol.
type symbolLookup func(name string) bool

// libSymbols asks the library handle itself; the real library answers
// only once it is loaded, that is after Init.
func libSymbols(lib gonvml.Interface) symbolLookup {
	ext := lib.Extensions()
	if ext == nil {
		return func(string) bool { return false }
	}
	return func(name string) bool { return ext.LookupSymbol(name) == nil }
}

// resolveSymbols looks up every newer call once; Sample never looks again.
func (b *Backend) resolveSymbols(has symbolLookup) {
	for i, c := range newerCalls() {
		b.has[i] = has(c.symbol)
		if !b.has[i] {
			b.log.Info("nvml: the driver lacks a call; using its fallback", "call", c.symbol, "since", c.since, "fallback", c.fallback)
		}
	}
}

// driverVersion is the driver's version, e.g. 535.54.03 (Linux) or 551.61
// (Windows).
type driverVersion struct {
	major, minor, patch int
	text                string
}

func (v driverVersion) known() bool { return v.text != "" }

// parseDriverVersion reads what nvmlSystemGetDriverVersion returns.
func parseDriverVersion(s string) (driverVersion, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return driverVersion{}, fmt.Errorf("%w: driver version %q: want major.minor[.patch]", gpu.ErrInvalid, s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return driverVersion{}, fmt.Errorf("%w: driver version %q: want major.minor[.patch]", gpu.ErrInvalid, s)
		}
		n[i] = v
	}
	return driverVersion{major: n[0], minor: n[1], patch: n[2], text: s}, nil
}

// atLeast compares major.minor; patch levels within a release never
// changed what the known-bad ranges are about.
func (v driverVersion) atLeast(major, minor int) bool {
	return v.major > major || (v.major == major && v.minor >= minor)
}

// badRange is a range of drivers, by major.minor, inclusive at both ends,
// in which one call returns garbage.
type badRange struct {
	fromMajor, fromMinor int
	toMajor, toMinor     int
	call                 string // what the backend refuses
	why                  string
}

func (r badRange) contains(v driverVersion) bool {
	return v.known() && v.atLeast(r.fromMajor, r.fromMinor) && !v.atLeast(r.toMajor, r.toMinor+1)
}

// badDriverRanges lists the known-bad drivers. Drivers 535.43 to 535.86
// fill the process lists with a 32-byte entry (with
// usedGpuCcProtectedMemory) under the same _v3 symbol while go-nvml's
// ProcessInfo is 24 bytes: every entry after the first has a wrong PID and
// memory, and the driver writes past the Go buffer.
func badDriverRanges() []badRange {
	return []badRange{{
		fromMajor: 535, fromMinor: 43, toMajor: 535, toMinor: 86,
		call: "list processes",
		why:  "its process lists use a larger entry than NVML declares, which garbles PIDs and memory and overruns the buffer",
	}}
}

// refusal is the error a call answers on a known-bad driver, or nil.
func refusal(v driverVersion, call string) error {
	for _, r := range badDriverRanges() {
		if r.call == call && r.contains(v) {
			return fmt.Errorf("%w: NVIDIA driver %s cannot %s safely: %s (drivers %d.%d to %d.%d); upgrade the driver to a release after %d.%d",
				gpu.ErrUnsupported, v.text, call, r.why, r.fromMajor, r.fromMinor, r.toMajor, r.toMinor, r.toMajor, r.toMinor)
		}
	}
	return nil
}

// readDriver reads the driver version once, at New, and works out which
// calls it must refuse.
func (b *Backend) readDriver() {
	s, ret := b.lib.SystemGetDriverVersion()
	if ret != gonvml.SUCCESS {
		b.log.Warn("nvml: driver version unreadable; known-bad drivers cannot be recognised", "err", Error{Op: "get driver version", Code: ret})
		return
	}
	v, err := parseDriverVersion(s)
	if err != nil {
		b.log.Warn("nvml: driver version unparsable; known-bad drivers cannot be recognised", "err", err)
		return
	}
	b.driver = v
	if !v.atLeast(oldestDriverMajor, 0) {
		b.log.Warn("nvml: the driver is older than the oldest one this SDK is built for; calls it lacks are skipped", "driver", v.text, "oldest", OldestDriver)
	}
	b.refuseProcesses = refusal(v, "list processes")
	if b.refuseProcesses != nil {
		b.log.Warn("nvml: process lists refused on this driver", "err", b.refuseProcesses)
	}
}

// DriverVersion returns the NVIDIA driver version New read, e.g.
// "550.54.15", or "" when the driver did not tell.
func (b *Backend) DriverVersion() string { return b.driver.text }
