package isolation_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
	// isolation: invalid argument: gpu: invalid argument: spec.GPUs[0].Device "gpu0" is not a CDI device name (want vendor.com/class=name, e.g. nvidia.com/gpu=0): unqualified device "gpu0", missing vendor
	// isolation: invalid argument: gpu: invalid argument: spec.GPUs[0].UUID is empty: give the UUID of the GPU behind "gpu0" (GPUFor sets it; accounting and recovery need it)
	// isolation: invalid argument: gpu: invalid argument: spec.Limits.MemoryBytes is -1: give 0 for no limit or a positive value
}

// The process runtime runs a host program with the container's lifecycle
// and logs, and isolates nothing.
func ExampleProcess() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	rt, err := isolation.NewProcess(isolation.WithLogDir(filepath.Join(dir, "logs")))
	if err != nil {
		panic(err)
	}
	defer rt.Close()
	ctx := context.Background()
	info, err := rt.Create(ctx, isolation.Spec{
		ID: "hello", Tenant: "dev", Image: "unused",
		Args: []string{"/bin/sh", "-c", "echo hello from $CUDA_VISIBLE_DEVICES; exit 7"},
		GPUs: []isolation.GPU{{Device: "nvidia.com/gpu=0", UUID: "GPU-1234"}},
	})
	if err != nil {
		panic(err)
	}
	if err := rt.Start(ctx, info.Ref); err != nil {
		panic(err)
	}
	exit, _ := rt.Wait(ctx, info.Ref)
	logs, _ := rt.Logs(ctx, info.Ref)
	out, _ := io.ReadAll(logs)
	logs.Close()
	fmt.Printf("%s", out)
	fmt.Println(exit.Code, exit.Reason)
	// Output:
	// hello from GPU-1234
	// 7 exited
}
