package gputest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/gputest"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// A backend's test builds a Harness and calls gputest.Run(t, h). The
// Harness only says how to make a fresh backend.
func ExampleRun() {
	h := gputest.Harness{New: func(t *testing.T) gpu.Backend {
		p, err := sim.PresetByName(sim.PresetA40)
		if err != nil {
			t.Fatal(err)
		}
		rig, err := sim.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return rig
	}}
	// In a test: gputest.Run(t, h)
	b := h.New(&testing.T{})
	defer b.Close()
	devs, _ := b.Devices(context.Background())
	fmt.Println(len(devs), "devices under test")
	// Output: 8 devices under test
}
