package gpu

import (
	"strconv"
	"time"
)

// Health is the health of one device as the Manager last saw it. A device
// turns unhealthy on a device-side Xid, a double-bit ECC error or a lost
// device, and stays so until ResetHealth: such faults need an operator or a
// GPU reset, and handing the device to a customer in between would fail
// their job.
//
// While the backend's event stream is down nobody would hear of a fault, so
// every device that was healthy is Unknown (and not Healthy) until the
// stream is back and holds: new work should not go there, but nothing says
// the work already there is in trouble.
type Health struct {
	Healthy bool
	Unknown bool      // the event stream is down: no fault seen, none could be
	Reason  string    // why it is unhealthy, e.g. "xid 79: GPU has fallen off the bus"
	XID     int       // the Xid that made it unhealthy, 0 if none
	Since   time.Time // when it turned unhealthy
}

// XIDText describes an Xid number, after NVIDIA's Xid catalogue; unknown
// numbers get a generic text.
func XIDText(xid int) string {
	switch xid {
	case 13:
		return "graphics engine exception"
	case 31:
		return "GPU memory page fault"
	case 32:
		return "invalid or corrupted push buffer stream"
	case 43:
		return "GPU stopped processing"
	case 45:
		return "preemptive cleanup, due to previous errors"
	case 48:
		return "double bit ECC error"
	case 61:
		return "internal micro-controller breakpoint/warning"
	case 62:
		return "internal micro-controller halt"
	case 63:
		return "ECC page retirement or row remapping recording event"
	case 64:
		return "ECC page retirement or row remapper recording failure"
	case 68:
		return "video processor exception"
	case 74:
		return "NVLink error"
	case 79:
		return "GPU has fallen off the bus"
	case 92:
		return "high single-bit ECC error rate"
	case 94:
		return "contained ECC error"
	case 95:
		return "uncontained ECC error"
	case 109:
		return "context switch timeout"
	case 119:
		return "GSP RPC timeout"
	case 120:
		return "GSP error"
	}
	return "unlisted Xid, see NVIDIA's Xid catalogue"
}

const pathBrokenReason = "health event stream failed; device state unknown"

func (e Event) reason() string {
	switch e.Kind {
	case EventXID:
		return "xid " + strconv.Itoa(e.XID) + ": " + XIDText(e.XID)
	case EventDoubleBitECC:
		return "double bit ECC error"
	case EventDeviceLost:
		if e.XID != 0 {
			return "xid " + strconv.Itoa(e.XID) + ": " + XIDText(e.XID) + " (device lost)"
		}
		return "device lost"
	case EventEventPathBroken:
		return pathBrokenReason
	default:
		return e.Kind.String()
	}
}
