package isolation_test

import (
	"fmt"

	"github.com/gpufarm/gpufarm/isolation"
)

// Validate reports every problem of a spec at once.
func ExampleSpec_Validate() {
	spec := isolation.Spec{
		ID:     "train-42",
		Tenant: "acme",
		Image:  "registry.example/llm-train:1.4",
		GPUs:   []isolation.GPU{{Device: "gpu0"}},
		Limits: isolation.Limits{MemoryBytes: -1},
	}
	for _, err := range spec.Validate().(interface{ Unwrap() []error }).Unwrap() {
		fmt.Println(err)
	}
	// Output:
	// isolation: invalid argument: spec.GPUs[0].Device "gpu0" is not a CDI device name (want vendor.com/class=name, e.g. nvidia.com/gpu=0): unqualified device "gpu0", missing vendor
	// isolation: invalid argument: spec.GPUs[0].UUID is empty: give the UUID of the GPU behind "gpu0" (GPUFor sets it; accounting and recovery need it)
	// isolation: invalid argument: spec.Limits.MemoryBytes is -1: give 0 for no limit or a positive value
}
