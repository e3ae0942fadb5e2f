package dra_test

import (
	"context"
	"fmt"
	"os"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/kubernetes/dra"
	"github.com/gpufarm/gpufarm/workload"
)

// What the driver publishes for an ex-mining card on an x1 riser: the
// scheduler can tell it from an A40 and send it inference only.
func ExampleDriver_Published() {
	ctx := context.Background()
	p, _ := sim.PresetByName(sim.PresetRTX3080Riser)
	p.Cards = p.Cards[:1]
	rig, _ := sim.New(p)
	gpus, _ := gpu.New(ctx, rig)
	defer gpus.Close()
	logs, _ := os.MkdirTemp("", "dra-example")
	defer os.RemoveAll(logs)
	rt, _ := process.New(process.WithUnsafeRoot(), process.WithLogDir(logs))
	defer rt.Close()
	m, _ := workload.New(gpus, rt)
	defer m.Close()
	d, _ := dra.New(m, gpus, "rig-07")

	dev := d.Published()[0]
	a := dev.Attributes
	mem := dev.Capacity["memory"].Value
	fmt.Printf("%s: %s, compute %s, PCIe gen%d x%d, riser %v\n", dev.Name, *a["model"].StringValue,
		*a["computeCapability"].VersionValue, *a["pcieGeneration"].IntValue, *a["pcieWidth"].IntValue, *a["riser"].BoolValue)
	fmt.Printf("use %s, memory %s, fits %.0fB parameters for int4 inference\n", *a["use"].StringValue, mem.String(),
		float64(*a["inferenceINT4Params"].IntValue)/1e9)
	// Output:
	// gpu-0: GeForce RTX 3080, compute 8.6.0, PCIe gen1 x1, riser true
	// use inference, memory 10Gi, fits 15B parameters for int4 inference
}
