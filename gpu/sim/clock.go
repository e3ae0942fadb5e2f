package sim

import (
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// ManualClock is a gpu.Clock that moves only when told, so tests and demos
// get exact, repeatable energy and temperature numbers. It is safe for
// concurrent use.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

var _ gpu.Clock = (*ManualClock)(nil)

// NewClock returns a clock that reads start until it is advanced.
func NewClock(start time.Time) *ManualClock { return &ManualClock{now: start} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time.
func (c *ManualClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Set moves the clock to t. A rig never runs backwards: if t is earlier
// than the latest time it saw, it holds that time until the clock passes
// it again.
func (c *ManualClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
