package gputest_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/gputest"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// simHarness is the Harness a simulator-backed test passes to Run: how to
// build a fresh backend, and how to make its devices hang and report Xids
// so that the fault checks run too.
func simHarness(preset string) gputest.Harness {
	rig := func(t *testing.T, b gpu.Backend) *sim.Rig {
		r, ok := b.(*sim.Rig)
		require.True(t, ok, "backend %T not built by this harness", b)
		return r
	}
	return gputest.Harness{
		New: func(t *testing.T) gpu.Backend {
			p, err := sim.PresetByName(preset)
			require.NoError(t, err)
			r, err := sim.New(p)
			require.NoError(t, err)
			return r
		},
		Hang: func(t *testing.T, b gpu.Backend, index int) {
			require.NoError(t, rig(t, b).Hang(index))
		},
		InjectXID: func(t *testing.T, b gpu.Backend, index, xid int) {
			require.NoError(t, rig(t, b).InjectXID(index, xid))
		},
	}
}

// TestRunOnSimulator runs the suite, fault checks included, with the
// harness above: the suite must pass on a correct backend.
func TestRunOnSimulator(t *testing.T) {
	gputest.Run(t, simHarness(sim.PresetA40))
}

// A backend's test runs every check with one call,
//
//	func TestConformance(t *testing.T) { gputest.Run(t, simHarness(sim.PresetA40)) }
//
// and each check is a subtest with one of these names.
func ExampleChecks() {
	for _, name := range gputest.Checks() {
		fmt.Println(name)
	}
	// Output:
	// Inventory
	// Sample
	// EnergyCounterMonotonic
	// UnknownIndex
	// CancelledContext
	// PowerLimits
	// Clocks
	// Processes
	// EventsStopWithContext
	// HungDeviceSample
	// XIDEvents
	// CloseIdempotent
}
