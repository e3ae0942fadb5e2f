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

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func itoa(i int) string { return strconv.Itoa(i) }
