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
type Health struct {
	Healthy bool
	Reason  string    // why it is unhealthy, e.g. "xid 79: GPU has fallen off the bus"
	XID     int       // the Xid that made it unhealthy, 0 if none
	Since   time.Time // when it turned unhealthy
}

// xidText names the Xids operators meet most, from NVIDIA's Xid catalogue.
var xidText = map[int]string{
	13:  "graphics engine exception",
	31:  "GPU memory page fault",
	32:  "invalid or corrupted push buffer stream",
	43:  "GPU stopped processing",
	45:  "preemptive cleanup, due to previous errors",
	48:  "double bit ECC error",
	61:  "internal micro-controller breakpoint/warning",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement or row remapping recording event",
	64:  "ECC page retirement or row remapper recording failure",
	68:  "video processor exception",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	109: "context switch timeout",
	119: "GSP RPC timeout",
	120: "GSP error",
}

// XIDText describes an Xid number; unknown numbers get a generic text.
func XIDText(xid int) string {
	if s, ok := xidText[xid]; ok {
		return s
	}
	return "unlisted Xid, see NVIDIA's Xid catalogue"
}

func (e Event) reason() string {
	switch e.Kind {
	case EventXID:
		return "xid " + strconv.Itoa(e.XID) + ": " + XIDText(e.XID)
	case EventDoubleBitECC:
		return "double bit ECC error"
	case EventDeviceLost:
		return "device lost"
	case EventEventPathBroken:
		return "health event stream failed; device state unknown"
	default:
		return e.Kind.String()
	}
}
