package gpu

import (
	"context"
	"time"
)

// Backend is what a GPU driver implements: NVML on real hosts, the simulator
// everywhere else. It is deliberately small; further capabilities are
// separate interfaces (PowerLimiter, ClockLocker, EventSource,
// ProcessLister, MIGController) that the Manager discovers with a type
// assertion, the way database/sql discovers optional driver interfaces.
//
// Devices are addressed by their index in the slice Devices returned. Every
// method that blocks must return when ctx ends, even if the device hangs.
// Errors wrap one of this package's categories.
type Backend interface {
	// Devices enumerates the GPUs. It is called once, when the Manager
	// starts. A GPU that cannot be read stays in the list (at its index,
	// with what could be read) and is reported in an error that joins one
	// *DeviceError per such GPU; the Manager then keeps the others and
	// marks those unhealthy. Any other error fails the Manager.
	Devices(ctx context.Context) ([]Device, error)
	// Sample fills dst[i] (readings, UUID and Time) for the device at
	// dst[i].Index, for every i: one
	// call per rig, so a backend that must guard hung calls pays once. It
	// must not allocate in steady state. Readings a device lacks are left
	// invalid. When a device fails as a whole, its dst entry is left with
	// every reading invalid, the others are still filled, and the returned
	// error joins (errors.Join) one *DeviceError per failed device wrapping
	// ErrDeviceLost, ErrNotFound and so on. A cancelled ctx fails the call
	// with an error wrapping ctx.Err().
	Sample(ctx context.Context, dst []Sample) error
	// Close releases the backend. It is idempotent.
	Close() error
}

// PowerLimiter is implemented by backends that can read and set power limits.
type PowerLimiter interface {
	// PowerLimits reads the current limit and its constraints.
	PowerLimits(ctx context.Context, index int) (PowerLimits, error)
	// SetPowerLimit sets the limit in watts. Outside [MinW, MaxW] it returns
	// an error wrapping ErrInvalid that names the range.
	SetPowerLimit(ctx context.Context, index int, watts float64) error
}

// ClockLocker is implemented by backends that can lock GPU clocks.
type ClockLocker interface {
	LockClocks(ctx context.Context, index int, minMHz, maxMHz int) error
	ResetClocks(ctx context.Context, index int) error
}

// ProcessLister is implemented by backends that list compute processes.
type ProcessLister interface {
	Processes(ctx context.Context, index int) ([]Process, error)
}

// MIGController is implemented by backends that can switch MIG mode.
type MIGController interface {
	SetMIG(ctx context.Context, index int, enabled bool) error
}

// EventSource is implemented by backends that report health events.
type EventSource interface {
	// WatchEvents delivers events to ch until ctx ends, then returns
	// ctx.Err(). Every send also watches ctx.Done(). An error other than the
	// context's means the event path itself broke: the Manager then holds
	// the health of every healthy device as Unknown until the stream is
	// back (see Health).
	WatchEvents(ctx context.Context, ch chan<- Event) error
}

// Process is a compute process running on a device.
type Process struct {
	PID             int
	UsedMemoryBytes Optional[uint64]
	Name            string // empty when the backend cannot tell
}

// EventKind says what a health event reports.
type EventKind int

const (
	EventXID             EventKind = iota + 1 // an Xid error; XID holds its number
	EventDoubleBitECC                         // uncorrectable memory error
	EventSingleBitECC                         // corrected memory error, informational
	EventDeviceLost                           // the device fell off the bus
	EventEventPathBroken                      // the backend's event stream failed
)

func (k EventKind) String() string {
	switch k {
	case EventXID:
		return "xid"
	case EventDoubleBitECC:
		return "ecc-double-bit"
	case EventSingleBitECC:
		return "ecc-single-bit"
	case EventDeviceLost:
		return "device-lost"
	case EventEventPathBroken:
		return "event-path-broken"
	default:
		return "unknown"
	}
}

// Event is a health event of one device.
type Event struct {
	Index int
	UUID  string // filled in by the Manager when the backend leaves it empty
	Kind  EventKind
	XID   int // the Xid number for EventXID (79 for EventDeviceLost too)
	Time  time.Time
	// Fatal is set by the Manager: a device-level fault that marks the
	// device unhealthy and ends the work on it. Application Xids,
	// informational ones, corrected ECC errors and a broken event stream are
	// not fatal.
	Fatal bool
}

// IsApplicationXID reports whether an Xid is the workload's fault rather
// than the device's: an illegal address (13), an MMU fault from user code
// (31), a stopped channel (43), preemptive cleanup (45), a video decoder
// exception (68) and a context switch timeout (109). The NVIDIA device
// plugin treats the same set as harmless to the device.
func IsApplicationXID(xid int) bool {
	switch xid {
	case 13, 31, 43, 45, 68, 109:
		return true
	}
	return false
}

// IsInformationalXID reports whether an Xid records an event the device
// survived: a micro-controller warning (61), a page retirement or row remap
// recorded (63), a high but corrected single-bit ECC rate (92), and a
// contained ECC error, where the driver killed the one process that touched
// the bad memory (94). They are worth a log line, not a drained GPU.
func IsInformationalXID(xid int) bool {
	switch xid {
	case 61, 63, 92, 94:
		return true
	}
	return false
}

// fatal reports whether e is a device-level fault: it marks the device
// unhealthy and ends the work on it. Unknown Xids count as fatal, as in the
// NVIDIA device plugin: a GPU that reports what nobody can explain should
// not take new work.
func (e Event) fatal() bool {
	switch e.Kind {
	case EventXID:
		return !IsApplicationXID(e.XID) && !IsInformationalXID(e.XID)
	case EventSingleBitECC, EventEventPathBroken:
		return false
	default:
		return true
	}
}
