package containerd_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// The runtime's CDI registry reads the specs nvidia-ctk writes on a GPU
// host, here a Tesla T4's: a GPU is named by index, by UUID or as "all",
// and a name no spec defines is refused before anything is created.
// Reading and resolving need neither a GPU nor containerd; injecting the
// devices into a container (Create does) needs the device nodes, which
// WriteSimulatedCDI makes on a host without GPUs.
func ExampleCDIRegistry() {
	// One spec per folder: two specs of one kind that name the same
	// devices in one folder conflict, and CDI drops those devices.
	dir, _ := os.MkdirTemp("", "cdi")
	defer os.RemoveAll(dir)
	spec, err := os.ReadFile("testdata/cdi/tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, "nvidia.yaml"), spec, 0o644); err != nil {
		fmt.Println(err)
		return
	}

	reg, err := containerd.NewCDIRegistry(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range reg.Devices() {
		fmt.Println(name)
	}
	fmt.Println("gpu=0:", reg.Resolve("nvidia.com/gpu=0"))
	err = reg.Resolve("nvidia.com/gpu=1", "gpu0")
	fmt.Println("gpu=1 unknown:", errors.Is(err, isolation.ErrNotFound), "- gpu0 malformed:", errors.Is(err, isolation.ErrInvalid))
	// Output:
	// nvidia.com/gpu=0
	// nvidia.com/gpu=GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256
	// nvidia.com/gpu=all
	// gpu=0: <nil>
	// gpu=1 unknown: true - gpu0 malformed: true
}
