package gpu

import (
	"strconv"
	"time"
)

// Clock tells the time. The Manager stamps samples and events with it, so
// tests and the simulator can drive time instead of sleeping.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

func itoa(i int) string { return strconv.Itoa(i) }
