package process_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
)

// The process runtime runs a host program with the container's lifecycle
// and logs, and isolates nothing.
func Example() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	// WithUnsafeRoot: CI runs the example as root; an unprivileged user
	// needs no option.
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(filepath.Join(dir, "logs")))
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
