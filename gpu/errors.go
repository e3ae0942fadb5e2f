package gpu

import "errors"

// Error categories. Backends wrap their own codes with these using %w, so
// callers match the category with errors.Is and still reach the backend's
// code (for example an nvml.Error) with errors.As.
var (
	// ErrNotFound: no device with that UUID or index.
	ErrNotFound = errors.New("gpu: device not found")
	// ErrUnavailable: the backend cannot be reached (driver library missing,
	// driver not loaded, backend closed).
	ErrUnavailable = errors.New("gpu: backend unavailable")
	// ErrUnsupported: the device or backend lacks the feature. It is never a
	// failure of the whole device.
	ErrUnsupported = errors.New("gpu: not supported by this device")
	// ErrBusy: the device is in use and the operation must wait.
	ErrBusy = errors.New("gpu: device busy")
	// ErrDeviceLost: the device fell off the bus (XID 79) or needs a reset.
	ErrDeviceLost = errors.New("gpu: device lost")
	// ErrInvalid: an argument is out of range or malformed.
	ErrInvalid = errors.New("gpu: invalid argument")
	// ErrPermission: the operation needs privileges the process lacks.
	ErrPermission = errors.New("gpu: permission denied")
)

// DeviceError is the error of one device in a call that covers several, such
// as Backend.Sample: the other devices' results are still valid. Several are
// joined with errors.Join, so errors.As finds each one.
type DeviceError struct {
	Index int
	UUID  string
	Err   error
}

func (e *DeviceError) Error() string {
	if e.UUID != "" {
		return "gpu " + itoa(e.Index) + " (" + e.UUID + "): " + e.Err.Error()
	}
	return "gpu " + itoa(e.Index) + ": " + e.Err.Error()
}

func (e *DeviceError) Unwrap() error { return e.Err }
