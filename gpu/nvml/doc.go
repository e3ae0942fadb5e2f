// Package nvml is the NVIDIA backend of package gpu, over NVML through
// github.com/NVIDIA/go-nvml (v0.13.0-1). It is the only package of the SDK
// that needs cgo; built with CGO_ENABLED=0, New fails wrapping
// gpu.ErrUnavailable and everything else still compiles.
//
// Typical use hands the backend to a gpu.Manager:
//
//	b, err := nvml.New(ctx, nvml.WithLogger(log))
//	if err != nil {
//		return err // errors.Is(err, gpu.ErrUnavailable): no driver on this node
//	}
//	m, err := gpu.New(ctx, b) // the Manager closes b
//
// # Probing
//
// NVML gives consumer (GeForce) and mining (CMP) cards "limited support":
// serials, ECC, MIG and sometimes the energy counter answer
// ERROR_NOT_SUPPORTED. Every optional call is therefore a probe: an
// unsupported feature is recorded as absent (empty string, zero Link,
// gpu.FeatureUnsupported, invalid gpu.Optional), never as a failed device.
// New tries each telemetry reading once and remembers per device which ones
// are unsupported, so Sample skips them; that is also what keeps sampling
// cheap.
//
// # Drivers
//
// The oldest driver the backend is built for is R470 (OldestDriver), which
// ex-mining rigs commonly still run. go-nvml resolves NVML's functions
// lazily, so calling one the installed driver lacks aborts the process
// ("undefined symbol") instead of returning an error. New therefore looks
// up, once, every call newer than some supported driver (the table at
// newerCalls: clock event reasons from R535, memory info v2 and the GPU's
// own PCIe generation from R510, ...) and uses its older equivalent when
// it is missing; Sample never looks anything up. New also reads the driver
// version: on drivers 535.43 to 535.86, whose process lists are garbled,
// Processes fails wrapping gpu.ErrUnsupported and says to upgrade.
// DriverVersion reports the version.
//
// # Readings worth knowing
//
// Memory: MemoryUsedBytes is what jobs allocated (memory info v2), so an
// idle GPU reads 0; Device.ReservedMemoryBytes is the driver's own part.
// Before R510 only version 1 exists, whose used amount includes the
// reserve and whose reserve is unknown. A MIG GPU whose memory NVML
// refuses to an unprivileged caller takes its size from the full-GPU
// instance profile.
//
// PCIe throughput is NVML's byte count over a 20 ms window, in KB/s taken
// as 1024 bytes; the call may block for the window, so New measures what
// the reads cost per Sample and logs it, and WithPCIeThroughput(false)
// leaves them out.
//
// Power limits: the current limit is the enforced one, re-read after every
// set; a default limit the board does not report stays 0. Persistence mode
// is read into the inventory, and setting a limit or locking clocks while
// it is off logs a warning, since the driver forgets both when it unloads.
//
// Processes lists compute, graphics and MPS processes, each once.
//
// # Classes
//
// Device.Class comes from NVML's brand, the product name and the PCI device
// id (see classify for the table): CMP cards are recognised by their PCI id
// even when they call themselves "NVIDIA Graphics Device".
//
// # Errors
//
// NVML return codes become an Error{Op, Code}, which unwraps to a gpu
// category: NOT_SUPPORTED to gpu.ErrUnsupported, GPU_IS_LOST to
// gpu.ErrDeviceLost, NO_PERMISSION to gpu.ErrPermission, a missing library
// or driver to gpu.ErrUnavailable, and so on (ErrDriver for the rest).
//
// # Hung calls
//
// A wedged GPU can make NVML block for minutes. Every method honours its
// ctx: when ctx can end, the NVML work runs on a goroutine that is
// abandoned at ctx's end and finishes when the driver returns; at most one
// is abandoned at a time, because NVML work goes through a single slot.
// With context.Background the work runs inline, which is cheaper. See
// Backend.
//
// # Testing without a GPU
//
// WithLibrary injects any go-nvml Interface, such as go-nvml's mock
// package. The tests of this package run the backend over mock/dgxa100
// (extended with the readings it lacks) and over hand-built mocks of an
// RTX 3080 on a gen1 x1 riser, a CMP 170HX, an A40 and an H100. An older
// driver is mocked by a library whose Extensions().LookupSymbol fails for
// the calls it lacks: that lookup is the backend's one seam for what the
// driver has.
package nvml
