package isolation

import "time"

// Test hooks for the log cap.
var (
	RotateLog    = rotateLog
	OpenLogs     = openLogs
	NewCappedLog = func(path string, capBytes int64) (interface {
		Write([]byte) (int, error)
		Close() error
	}, error) {
		return newCappedLog(path, capBytes)
	}
)

// SetStaleLeaseAge lets a test treat fresh create leases as interrupted.
func SetStaleLeaseAge(r *Containerd, d time.Duration) { r.staleLease = d }
