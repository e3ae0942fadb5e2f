package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/metrics"
)

// The metrics of a simulated rig, as Prometheus scrapes them: GPU 0's
// power under the name and labels of dcgm-exporter.
func Example() {
	ctx := context.Background()
	clk := sim.NewClock(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	p, _ := sim.PresetByName(sim.PresetA40)
	rig, _ := sim.New(p, sim.WithClock(clk))
	gpus, _ := gpu.New(ctx, rig, gpu.WithClock(clk))
	defer gpus.Close()
	idle := accounting.TimelineFunc(func(string, time.Time, time.Time) ([]workload.Allocation, error) { return nil, nil })
	meter, _ := accounting.New(ctx, gpus, idle, accounting.NewMemoryLedger())
	_ = rig.SetLoad(0, sim.Load{Util: 0.5})
	_ = meter.Poll(ctx)

	c, _ := metrics.New(meter, gpus, nil, metrics.WithHostname("rig-7"))
	h, _ := c.Handler() // or register c in your own prometheus.Registry
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "DCGM_FI_DEV_POWER_USAGE{") && strings.Contains(line, `gpu="0"`) {
			fmt.Println(line)
		}
	}
	// Output:
	// DCGM_FI_DEV_POWER_USAGE{Hostname="rig-7",UUID="GPU-b3f69e0b-d52d-cb88-1d0a-f9ad749a0a33",device="nvidia0",gpu="0",modelName="NVIDIA A40",pci_bus_id="00000000:4F:00.0"} 164.85
}
