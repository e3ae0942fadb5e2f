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
// RTX 3080 on a gen1 x1 riser, a CMP 170HX, an A40 and an H100.
package nvml
