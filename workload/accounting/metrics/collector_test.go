package metrics_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/metrics"
)

var t0 = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// workloads is a hand-made workload manager: a queue of two, a power
// budget, one training job that started after a handover of 1.5 s.
type workloads struct {
	mu     sync.Mutex
	events chan workload.Event
}

func (w *workloads) Status() workload.Status {
	return workload.Status{Running: true, Queued: 2, Live: 4, Finished: 1, DrawW: 1830, BudgetW: 2000}
}

func (w *workloads) List(workload.Filter) []workload.Workload {
	return []workload.Workload{{State: workload.StateRunning}, {State: workload.StateRunning}, {State: workload.StateQueued},
		{State: workload.StateQueued}, {State: workload.StateExited}}
}

func (w *workloads) Watch(ctx context.Context, _ uint64) <-chan workload.Event { return w.events }

func (w *workloads) Allocations(uuid string, from, to time.Time) ([]workload.Allocation, error) {
	return []workload.Allocation{{GPU: uuid, Workload: "train-" + uuid[4:8], Attempt: 1, Tenant: "acme", Kind: workload.KindTraining,
		PricePerGPUHour: 1.5, From: t0}}, nil
}

type node struct {
	clk   *sim.ManualClock
	rig   *sim.Rig
	gpus  *gpu.Manager
	meter *accounting.Meter
	work  *workloads
	c     *metrics.Collector
}

// newNode is an A40 rig whose GPUs all run training, metered for two
// minutes at 1 Hz.
func newNode(t *testing.T, opts ...metrics.Option) *node {
	t.Helper()
	ctx := context.Background()
	p, err := sim.PresetByName(sim.PresetA40)
	require.NoError(t, err)
	n := &node{clk: sim.NewClock(t0), work: &workloads{events: make(chan workload.Event, 1)}}
	n.rig, err = sim.New(p, sim.WithClock(n.clk))
	require.NoError(t, err)
	n.gpus, err = gpu.New(ctx, n.rig, gpu.WithClock(n.clk))
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.gpus.Close() })
	n.meter, err = accounting.New(ctx, n.gpus, n.work, accounting.NewMemoryLedger(), accounting.WithTariff(accounting.Flat(0.2)))
	require.NoError(t, err)
	for i := range n.gpus.Devices() {
		require.NoError(t, n.rig.SetLoad(i, sim.Load{Util: 0.9, MemoryBytes: 20 << 30}))
	}
	for s := 0; s <= 120; s++ {
		n.clk.Set(t0.Add(time.Duration(s) * time.Second))
		require.NoError(t, n.meter.Poll(ctx))
	}
	n.c, err = metrics.New(n.meter, n.gpus, n.work, append([]metrics.Option{metrics.WithHostname("rig-7"), metrics.WithClock(n.clk)}, opts...)...)
	require.NoError(t, err)
	return n
}

func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	fams, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestSeriesMatchDCGMExporter compares the dcgm-exporter series with real
// scrapes: every DCGM name we export that a scrape has is of the same type
// and carries the labels the scrapes put on whole GPUs (gpu, UUID,
// pci_bus_id, device, modelName, Hostname), in the same forms, so the
// dashboards built on dcgm-exporter work unchanged.
func TestSeriesMatchDCGMExporter(t *testing.T) {
	ours := gather(t, newNode(t).c)
	dir := "testdata/dcgm-exporter"
	files, err := filepath.Glob(filepath.Join(dir, "*.prom"))
	require.NoError(t, err)
	require.Len(t, files, 4)
	compared := map[string]bool{}
	for _, file := range files {
		f, err := os.Open(file)
		require.NoError(t, err)
		parser := expfmt.NewTextParser(model.LegacyValidation)
		theirs, err := parser.TextToMetricFamilies(f)
		_ = f.Close()
		require.NoError(t, err, file)
		for name, fam := range theirs {
			mine, ok := ours[name]
			if !ok {
				continue
			}
			compared[name] = true
			if fam.GetType() != dto.MetricType_UNTYPED { // scrapes without # TYPE lines
				assert.Equal(t, fam.GetType(), mine.GetType(), "%s: type as in %s", name, filepath.Base(file))
			}
			for _, m := range fam.GetMetric() {
				if label(m, "GPU_I_ID") != "" {
					continue // a MIG instance's series
				}
				// The labels of whole-GPU series, minus what is about the
				// driver, the pod or the process, which we do not know.
				var want []string
				for _, n := range labelNames(m) {
					if regexp.MustCompile(`^(DCGM_FI_|container$|namespace$|pod$|pod_uid$)`).MatchString(n) {
						continue
					}
					want = append(want, n)
				}
				got := labelNames(mine.GetMetric()[0])
				for _, n := range want {
					assert.Contains(t, got, n, "%s: label %s of %s", name, n, filepath.Base(file))
				}
			}
		}
	}
	for _, name := range []string{"DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_UTIL",
		"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_XID_ERRORS"} {
		assert.True(t, compared[name], "%s is compared with a real scrape", name)
		require.Len(t, ours[name].GetMetric(), 8, "%s for each of the 8 GPUs", name)
	}

	// Label values in dcgm-exporter's forms, numbers in its units.
	for _, m := range ours["DCGM_FI_DEV_POWER_USAGE"].GetMetric() {
		assert.Equal(t, []string{"Hostname", "UUID", "device", "gpu", "modelName", "pci_bus_id"}, labelNames(m))
		assert.Regexp(t, `^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$`, label(m, "pci_bus_id"))
		assert.Equal(t, "nvidia"+label(m, "gpu"), label(m, "device"))
		assert.Regexp(t, `^GPU-[0-9a-f-]{36}$`, label(m, "UUID"))
		assert.Equal(t, "NVIDIA A40", label(m, "modelName"))
		assert.Equal(t, "rig-7", label(m, "Hostname"))
		assert.InDelta(t, 270, m.GetGauge().GetValue(), 60, "watts, not milliwatts")
	}
	for _, m := range ours["DCGM_FI_DEV_FB_USED"].GetMetric() {
		assert.Equal(t, float64(20<<10), m.GetGauge().GetValue(), "MiB")
	}
	for _, m := range ours["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].GetMetric() {
		assert.Greater(t, m.GetCounter().GetValue(), 120*200e3, "millijoules since the driver loaded")
	}
}

func TestHostnameLabelOfNewerExporters(t *testing.T) {
	ours := gather(t, newNode(t, metrics.WithHostnameLabel("hostname")).c)
	m := ours["DCGM_FI_DEV_GPU_TEMP"].GetMetric()[0]
	assert.Equal(t, "rig-7", label(m, "hostname"))
	assert.Empty(t, label(m, "Hostname"))
	_, err := metrics.New(nil, nil, nil, metrics.WithHostnameLabel("host"))
	require.ErrorIs(t, err, accounting.ErrInvalid)
	assert.ErrorContains(t, err, `WithHostnameLabel("host")`)
}

// TestGpufarmSeries: the accounting's own series say what the meter
// booked, and the workload manager's state.
func TestGpufarmSeries(t *testing.T) {
	n := newNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.c.Run(ctx) }()
	n.work.events <- workload.Event{Type: workload.EventStarted, Time: n.clk.Now(), Handover: &workload.Handover{Total: 1500 * time.Millisecond}}
	require.Eventually(t, func() bool {
		// Again until Run has subscribed: an Xid nobody watches is gone.
		require.NoError(t, n.rig.InjectXID(3, 43))
		f := gather(t, n.c)
		xid := 0.0
		for _, m := range f["DCGM_FI_DEV_XID_ERRORS"].GetMetric() {
			if label(m, "gpu") == "3" {
				xid = m.GetGauge().GetValue()
			}
		}
		return f["gpufarm_handover_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount() == 1 && xid == 43
	}, 5*time.Second, 10*time.Millisecond, "Run keeps the handovers and the last Xid")
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	f := gather(t, n.c)
	st := n.meter.Stats()
	var booked int64
	for _, tk := range st.TenantKinds {
		booked += tk.EnergyMJ
	}
	var exported float64
	for _, m := range f["gpufarm_energy_joules_total"].GetMetric() {
		exported += m.GetCounter().GetValue()
	}
	assert.InDelta(t, float64(booked)/1000, exported, 1e-6)
	assert.Positive(t, exported)
	assert.Len(t, f["gpufarm_workload_energy_joules_total"].GetMetric(), 8, "one training workload per GPU")
	var revenue float64
	for _, m := range f["gpufarm_revenue_total"].GetMetric() {
		revenue += m.GetCounter().GetValue()
	}
	assert.InDelta(t, 8*1.5*2.0/60, revenue, 1e-6, "8 GPUs rented at 1.50 an hour for two minutes")
	assert.Equal(t, 2.0, f["gpufarm_queue_depth"].GetMetric()[0].GetGauge().GetValue())
	assert.Equal(t, 2000.0, f["gpufarm_power_budget_watts"].GetMetric()[0].GetGauge().GetValue())
	states := map[string]float64{}
	for _, m := range f["gpufarm_workloads"].GetMetric() {
		states[label(m, "state")] = m.GetGauge().GetValue()
	}
	assert.Equal(t, map[string]float64{"running": 2, "queued": 2, "exited": 1}, states)
	assert.Equal(t, 1.0, f["gpufarm_ledger_ok"].GetMetric()[0].GetGauge().GetValue())
}
