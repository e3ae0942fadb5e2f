package workload_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
)

// Miners fill a simulated rig of A40s; a paid training job takes two GPUs
// from them and they come back when it ends. The process runtime runs
// "sleep" for both here; a node uses isolation/containerd and images.
func ExampleManager() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _ := sim.PresetByName(sim.PresetA40)
	rig, _ := sim.New(p)
	gpus, _ := gpu.New(ctx, rig)
	defer gpus.Close()
	logs, _ := os.MkdirTemp("", "example-logs")
	defer os.RemoveAll(logs)
	rt, _ := process.New(process.WithUnsafeRoot(), process.WithLogDir(logs))
	defer rt.Close()

	miner := workload.FillerFunc(func(ctx context.Context, d gpu.Device) (workload.Spec, bool) {
		return workload.Spec{Tenant: "mining", Image: "miner", Command: []string{"sleep", "3600"}, StopGrace: time.Second}, true
	})
	m, _ := workload.New(gpus, rt, workload.WithFiller(miner), workload.WithLoad(rig.SetGPULoad))
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-ran // Run owns its goroutines; wait before closing what they use
		m.Close()
	}()

	events := m.Watch(ctx, 0)
	mining := func() int {
		return len(m.List(workload.Filter{Kind: workload.KindMining, States: []workload.State{workload.StateRunning}}))
	}
	for mining() < 8 {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("miners running:", mining())

	_, err := m.Submit(ctx, workload.Spec{
		ID: "train-1", Kind: workload.KindTraining, Tenant: "acme", Priority: 1,
		GPUs: workload.GPURequest{Count: 2}, Image: "trainer", Command: []string{"sleep", "3600"},
		StopGrace: time.Second, PricePerGPUHour: 0.40,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for ev := range events {
		if ev.ID == "train-1" && ev.Type == workload.EventStarted {
			fmt.Printf("train-1 started on %d GPUs, handed over by %d miners\n", len(ev.GPUs), len(ev.Handover.From))
			break
		}
	}
	s, _ := gpus.Sample(ctx, m.List(workload.Filter{Kind: workload.KindTraining})[0].GPUs[0])
	fmt.Printf("its GPU draws %.0f W\n", s.PowerW.Value)
	fmt.Println("miners running:", mining())
	// Output:
	// miners running: 8
	// train-1 started on 2 GPUs, handed over by 2 miners
	// its GPU draws 273 W
	// miners running: 6
}
