//go:build cgo

package nvml

import (
	"errors"
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// ErrDriver is the category of NVML failures that fit none of gpu's
// categories (ERROR_UNKNOWN, ERROR_MEMORY, a corrupted inforom ...).
var ErrDriver = errors.New("nvml: driver error")

// Error is an NVML return code from one operation. It unwraps to the gpu
// error category of its code, so callers match errors.Is(err,
// gpu.ErrDeviceLost) and still reach the code with errors.As(err, &e) for
// a var e nvml.Error.
type Error struct {
	Op   string        // what was attempted, e.g. "get power usage"
	Code gonvml.Return // NVML's return code
}

func (e Error) Error() string {
	msg := "nvml: " + e.Op + ": " + e.Code.Error()
	if h := hint(e.Code); h != "" {
		msg += " (" + h + ")"
	}
	return msg
}

// Unwrap returns the gpu category of the code.
func (e Error) Unwrap() error { return category(e.Code) }

// category maps an NVML code to a gpu error category.
func category(code gonvml.Return) error {
	switch code {
	case gonvml.ERROR_NOT_FOUND:
		return gpu.ErrNotFound
	case gonvml.ERROR_INVALID_ARGUMENT:
		return gpu.ErrInvalid
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND:
		// FUNCTION_NOT_FOUND: the installed driver predates the call.
		return gpu.ErrUnsupported
	case gonvml.ERROR_NO_PERMISSION:
		return gpu.ErrPermission
	case gonvml.ERROR_GPU_IS_LOST, gonvml.ERROR_RESET_REQUIRED:
		return gpu.ErrDeviceLost
	case gonvml.ERROR_IN_USE, gonvml.ERROR_TIMEOUT:
		// TIMEOUT: NVML gave up waiting for the device; try again later.
		return gpu.ErrBusy
	case gonvml.ERROR_LIBRARY_NOT_FOUND, gonvml.ERROR_DRIVER_NOT_LOADED,
		gonvml.ERROR_UNINITIALIZED, gonvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return gpu.ErrUnavailable
	default:
		return ErrDriver
	}
}

// hint says what an operator can do about a code.
func hint(code gonvml.Return) string {
	switch code {
	case gonvml.ERROR_NO_PERMISSION:
		return "run as root or with the needed capability"
	case gonvml.ERROR_GPU_IS_LOST:
		return "the GPU fell off the bus: reset it (nvidia-smi -r) or reboot the node"
	case gonvml.ERROR_RESET_REQUIRED:
		return "reset the GPU (nvidia-smi -r) or reboot the node"
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return "install the NVIDIA driver"
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return "load the nvidia kernel module"
	case gonvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "the driver library and kernel module differ: reboot after a driver upgrade"
	case gonvml.ERROR_INSUFFICIENT_POWER:
		return "check the GPU's power cables"
	default:
		return ""
	}
}

// nvErr returns nil for SUCCESS and an Error otherwise.
func nvErr(op string, code gonvml.Return) error {
	if code == gonvml.SUCCESS {
		return nil
	}
	return Error{Op: op, Code: code}
}

// initError explains why the library could not start, with what to do.
func initError(code gonvml.Return, path string) error {
	lib := "libnvidia-ml.so.1"
	if path != "" {
		lib = path
	}
	e := Error{Op: "init", Code: code}
	switch code {
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		if path != "" {
			return fmt.Errorf("%s not found: check the path given to WithLibraryPath, or install the NVIDIA driver (e.g. Debian package nvidia-driver / libnvidia-ml1): %w", lib, e)
		}
		return fmt.Errorf("%s not found: install the NVIDIA driver (e.g. Debian package nvidia-driver / libnvidia-ml1) or pass WithLibraryPath: %w", lib, e)
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("the NVIDIA kernel driver is not loaded: install the NVIDIA driver (e.g. Debian package nvidia-driver) and load it (modprobe nvidia): %w", e)
	case gonvml.ERROR_NO_PERMISSION:
		return fmt.Errorf("no permission to open the NVIDIA devices: run as root or give access to /dev/nvidia*: %w", e)
	default:
		return e
	}
}
