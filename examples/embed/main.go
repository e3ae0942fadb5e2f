// Command embed is the smallest program that embeds the SDK: a simulated
// rig of 8 A40s, the process runtime, the node manager, one job and the
// events it goes through. The README shows this file; main_test.go keeps
// the two the same.
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
)

func main() {
	ctx, stop := context.WithCancel(context.Background())
	rig := must(sim.New(must(sim.PresetByName(sim.PresetA40)))) // gpu/nvml on a real node
	gpus := must(gpu.New(ctx, rig))
	// The process runtime isolates nothing (a node uses isolation/containerd);
	// WithUnsafeRoot lets it run "echo" as root too.
	logs := must(os.MkdirTemp("", "embed"))
	defer os.RemoveAll(logs)
	rt := must(process.New(process.WithUnsafeRoot(), process.WithLogDir(logs)))
	m := must(workload.New(gpus, rt, workload.WithLoad(rig.SetGPULoad)))
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	events := m.Watch(ctx, 0)
	must(m.Submit(ctx, workload.Spec{ID: "hello", Kind: workload.KindBatch, Tenant: "acme",
		GPUs: workload.GPURequest{Count: 2}, Image: "unused", Command: []string{"echo", "hello"}}))
	for ev := range events {
		fmt.Println(ev.ID, ev.Type, len(ev.GPUs), "GPUs")
		if ev.Type == workload.EventFailed { // it could not run: a bad image or command
			log.Fatal(ev.Reason)
		}
		if ev.Type == workload.EventExited {
			fmt.Printf("exit code %d, output: %s", ev.Exit.Code, must(m.Logs(ctx, ev.ID)))
			break
		}
	}
	stop()
	<-done // Run's goroutines have ended; now close what they used
	m.Close()
	rt.Close()
	gpus.Close()
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
