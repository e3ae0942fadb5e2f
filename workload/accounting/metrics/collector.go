package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// GPUs is what the collector reads of the node's GPUs: *gpu.Manager.
type GPUs interface {
	Devices() []gpu.Device
	Health(uuid string) (gpu.Health, error)
	Watch(ctx context.Context) <-chan gpu.Event
}

// Workloads is what the collector reads of the workload manager:
// *workload.Manager.
type Workloads interface {
	Status() workload.Status
	List(f workload.Filter) []workload.Workload
	Watch(ctx context.Context, after uint64) <-chan workload.Event
}

var (
	_ GPUs      = (*gpu.Manager)(nil)
	_ Workloads = (*workload.Manager)(nil)
)

// Option configures a Collector.
type Option func(*options) error

type options struct {
	hostname  string
	hostLabel string
	clock     gpu.Clock
}

// WithHostname sets the Hostname label; the default is the machine's
// host name.
func WithHostname(h string) Option {
	return func(o *options) error {
		if h == "" {
			return errors.New("WithHostname(\"\"): name the host")
		}
		o.hostname = h
		return nil
	}
}

// WithHostnameLabel names the host label: "Hostname" by default, as
// dcgm-exporter releases to 4.5.3-4.8.2 and the dashboards built on them
// have it; "hostname" for exporters built after May 2026.
func WithHostnameLabel(name string) Option {
	return func(o *options) error {
		if name != "Hostname" && name != "hostname" {
			return fmt.Errorf("WithHostnameLabel(%q): want Hostname or hostname", name)
		}
		o.hostLabel = name
		return nil
	}
}

// WithClock sets the clock Run reads to tell new workload events from the
// ones the manager replays; give it the workload manager's clock. The
// default is the system clock.
func WithClock(c gpu.Clock) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("WithClock(nil): pass a clock, or leave the option out")
		}
		o.clock = c
		return nil
	}
}

// Collector is a prometheus.Collector for one node: the dcgm-exporter
// series of every GPU, from the very samples the meter booked, and the
// gpufarm_* series of energy, cost and revenue per workload, tenant and
// kind, workload states, queue depth, handover durations and power cap
// state. Register it in a prometheus.Registry, or serve Handler.
//
// Run, while it runs, keeps each GPU's last Xid and the handover
// histogram; without it DCGM_FI_DEV_XID_ERRORS shows the Xid that made a
// GPU unhealthy and the histogram stays empty.
type Collector struct {
	meter *accounting.Meter
	gpus  GPUs
	work  Workloads // may be nil
	o     options

	devLabels [][]string // per GPU index: the dcgm-exporter label values
	descs     descs
	handover  prometheus.Histogram

	mu      sync.Mutex
	lastXID []int
	samples []gpu.Sample // scratch for Collect, under mu
}

type descs struct {
	power, energy, util, temp, fbUsed, fbFree, smClock, memClock, xid, powerLimit *prometheus.Desc
	metered, resets, gaps, limitLowered                                           *prometheus.Desc
	energyTK, facilityTK, costTK, revenueTK, secondsTK                            *prometheus.Desc
	energyWL, costWL, revenueWL                                                   *prometheus.Desc
	states, queue, drawW, budgetW, storeOK, ledgerUnsent, ledgerOK                *prometheus.Desc
}

// New makes a collector over the meter (which has the samples and the
// totals), the GPU manager (inventory, Xids) and the workload manager
// (states, queue, power, handovers; nil leaves those series out).
func New(meter *accounting.Meter, gpus GPUs, work Workloads, opts ...Option) (*Collector, error) {
	o := options{hostLabel: "Hostname", clock: gpu.SystemClock{}}
	var errs []error
	if meter == nil {
		errs = append(errs, errors.New("nil meter: pass the node's accounting.Meter"))
	}
	if gpus == nil {
		errs = append(errs, errors.New("nil GPUs: pass the node's *gpu.Manager"))
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, accounting.Errorf(accounting.ErrInvalid, "new metrics collector: %w", err)
	}
	if o.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("new metrics collector: the host name is unknown (%w): pass WithHostname", err)
		}
		o.hostname = h
	}
	c := &Collector{meter: meter, gpus: gpus, work: work, o: o}
	for i, d := range meter.Devices() {
		minor := d.Minor
		if minor < 0 {
			minor = i
		}
		c.devLabels = append(c.devLabels, []string{strconv.Itoa(i), d.UUID, dcgmBusID(d.PCIBusID), "nvidia" + strconv.Itoa(minor), d.Name, o.hostname})
	}
	c.lastXID = make([]int, len(c.devLabels))
	dev := []string{"gpu", "UUID", "pci_bus_id", "device", "modelName", o.hostLabel}
	tk := []string{"tenant", "kind"}
	wl := []string{"workload", "tenant", "kind"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c.descs = descs{
		power:        d("DCGM_FI_DEV_POWER_USAGE", "Board power draw in W.", dev),
		energy:       d("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Board energy counter in mJ since the driver loaded.", dev),
		util:         d("DCGM_FI_DEV_GPU_UTIL", "GPU utilisation in %.", dev),
		temp:         d("DCGM_FI_DEV_GPU_TEMP", "GPU temperature in C.", dev),
		fbUsed:       d("DCGM_FI_DEV_FB_USED", "Frame buffer memory used in MiB.", dev),
		fbFree:       d("DCGM_FI_DEV_FB_FREE", "Frame buffer memory free in MiB.", dev),
		smClock:      d("DCGM_FI_DEV_SM_CLOCK", "SM clock in MHz.", dev),
		memClock:     d("DCGM_FI_DEV_MEM_CLOCK", "Memory clock in MHz.", dev),
		xid:          d("DCGM_FI_DEV_XID_ERRORS", "The last Xid the GPU reported, 0 for none.", dev),
		powerLimit:   d("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power limit in force in W.", dev),
		metered:      d("gpufarm_gpu_energy_joules_total", "Energy the meter booked for the GPU (counter or integrated power), in J.", dev),
		resets:       d("gpufarm_gpu_energy_counter_resets_total", "Times the GPU's energy counter went backwards (driver reloads).", dev),
		gaps:         d("gpufarm_gpu_sample_gaps_total", "Gaps in the GPU's samples booked as gap records.", dev),
		limitLowered: d("gpufarm_gpu_power_limit_lowered", "1 while the GPU's power limit is below its default (a power cap or a tuning), else 0.", dev),
		energyTK:     d("gpufarm_energy_joules_total", "GPU energy booked per tenant and kind (idle and gap included), in J.", tk),
		facilityTK:   d("gpufarm_facility_energy_joules_total", "Facility energy (GPU energy times wall factor and PUE) per tenant and kind, in J.", tk),
		costTK:       d("gpufarm_cost_total", "Cost of the facility energy per tenant and kind, in the operator's currency.", tk),
		revenueTK:    d("gpufarm_revenue_total", "Revenue per tenant and kind, in the operator's currency.", tk),
		secondsTK:    d("gpufarm_gpu_seconds_total", "GPU-seconds per tenant and kind.", tk),
		energyWL:     d("gpufarm_workload_energy_joules_total", "GPU energy booked per workload, in J.", wl),
		costWL:       d("gpufarm_workload_cost_total", "Cost of the facility energy per workload, in the operator's currency.", wl),
		revenueWL:    d("gpufarm_workload_revenue_total", "Revenue per workload, in the operator's currency.", wl),
		states:       d("gpufarm_workloads", "Workload records per state.", []string{"state"}),
		queue:        d("gpufarm_queue_depth", "Paid workloads waiting in the queue.", nil),
		drawW:        d("gpufarm_power_draw_watts", "The GPUs' total draw at the workload manager's last measurement, in W.", nil),
		budgetW:      d("gpufarm_power_budget_watts", "The standing site power budget for the GPUs in W, 0 for none.", nil),
		storeOK:      d("gpufarm_workload_store_ok", "1 while the workload store takes writes, else 0.", nil),
		ledgerUnsent: d("gpufarm_ledger_unsent_records", "Records the ledger has not yet accepted.", nil),
		ledgerOK:     d("gpufarm_ledger_ok", "1 when the ledger took the meter's last append, else 0.", nil),
	}
	c.handover = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gpufarm_handover_duration_seconds",
		Help:    "Time from the decision to hand GPUs over to the new workload running.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300},
	})
	return c, nil
}

// dcgmBusID writes a bus id as NVML and dcgm-exporter do:
// 00000000:0A:00.0.
func dcgmBusID(id string) string {
	domain, rest, ok := strings.Cut(id, ":")
	if !ok {
		return strings.ToUpper(id)
	}
	n, err := strconv.ParseUint(domain, 16, 32)
	if err != nil {
		return strings.ToUpper(id)
	}
	return fmt.Sprintf("%08X:%s", n, strings.ToUpper(rest))
}

// Handler serves this collector alone, in a registry of its own.
func (c *Collector) Handler() (http.Handler, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}), nil
}

// Run watches the GPUs' events (for each one's last Xid) and the
// workloads' (for the handover histogram) until ctx ends, and returns
// ctx's error.
func (c *Collector) Run(ctx context.Context) error {
	start := c.o.clock.Now()
	gev := c.gpus.Watch(ctx) // closes when ctx ends
	var wev <-chan workload.Event
	if c.work != nil {
		wev = c.work.Watch(ctx, 0) // likewise
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-gev:
			if !ok {
				gev = nil
				continue
			}
			if ev.XID > 0 && ev.Index >= 0 && ev.Index < len(c.lastXID) {
				c.mu.Lock()
				c.lastXID[ev.Index] = ev.XID
				c.mu.Unlock()
			}
		case ev, ok := <-wev:
			if !ok {
				wev = nil
				continue
			}
			if ev.Type == workload.EventStarted && ev.Handover != nil && !ev.Time.Before(start) {
				c.handover.Observe(ev.Handover.Total.Seconds())
			}
		}
	}
}

// Describe sends every series' description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	d := c.descs
	for _, x := range []*prometheus.Desc{d.power, d.energy, d.util, d.temp, d.fbUsed, d.fbFree, d.smClock, d.memClock, d.xid, d.powerLimit,
		d.metered, d.resets, d.gaps, d.limitLowered, d.energyTK, d.facilityTK, d.costTK, d.revenueTK, d.secondsTK,
		d.energyWL, d.costWL, d.revenueWL} {
		ch <- x
	}
	if c.work != nil {
		for _, x := range []*prometheus.Desc{d.states, d.queue, d.drawW, d.budgetW, d.storeOK} {
			ch <- x
		}
		c.handover.Describe(ch)
	}
	ch <- d.ledgerUnsent
	ch <- d.ledgerOK
}

const mib = 1 << 20

// Collect sends the current values.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	d := &c.descs
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	devs := c.gpus.Devices()
	c.mu.Lock()
	c.samples = c.meter.Latest(c.samples)
	for i, s := range c.samples {
		if i >= len(c.devLabels) {
			break
		}
		l := c.devLabels[i]
		xid := c.lastXID[i]
		if i < len(devs) && xid == 0 {
			if h, err := c.gpus.Health(devs[i].UUID); err == nil {
				xid = h.XID
			}
		}
		gauge(d.xid, float64(xid), l...)
		if i < len(devs) && devs[i].PowerLimit.Valid {
			p := devs[i].PowerLimit.Value
			gauge(d.powerLimit, p.CurrentW, l...)
			lowered := 0.0
			if p.HasDefault() && p.CurrentW < p.DefaultW {
				lowered = 1
			}
			gauge(d.limitLowered, lowered, l...)
		}
		if s.Time.IsZero() {
			continue
		}
		if s.PowerW.Valid {
			gauge(d.power, s.PowerW.Value, l...)
		}
		if s.EnergyMJ.Valid {
			counter(d.energy, float64(s.EnergyMJ.Value), l...)
		}
		if s.GPUUtilPct.Valid {
			gauge(d.util, float64(s.GPUUtilPct.Value), l...)
		}
		if s.TemperatureC.Valid {
			gauge(d.temp, float64(s.TemperatureC.Value), l...)
		}
		if s.MemoryUsedBytes.Valid {
			gauge(d.fbUsed, float64(s.MemoryUsedBytes.Value/mib), l...)
			if i < len(devs) && devs[i].MemoryBytes >= s.MemoryUsedBytes.Value {
				gauge(d.fbFree, float64((devs[i].MemoryBytes-s.MemoryUsedBytes.Value)/mib), l...)
			}
		}
		if s.SMClockMHz.Valid {
			gauge(d.smClock, float64(s.SMClockMHz.Value), l...)
		}
		if s.MemClockMHz.Valid {
			gauge(d.memClock, float64(s.MemClockMHz.Value), l...)
		}
	}
	c.mu.Unlock()

	st := c.meter.Stats()
	for _, g := range st.GPUs {
		if g.Index < len(c.devLabels) {
			l := c.devLabels[g.Index]
			counter(d.metered, float64(g.MeteredMJ)/1000, l...)
			counter(d.resets, float64(g.CounterResets), l...)
			counter(d.gaps, float64(g.Gaps), l...)
		}
	}
	for _, t := range st.TenantKinds {
		k := string(t.Kind)
		counter(d.energyTK, float64(t.EnergyMJ)/1000, t.Tenant, k)
		counter(d.facilityTK, float64(t.FacilityEnergyMJ)/1000, t.Tenant, k)
		counter(d.costTK, t.Cost.Float(), t.Tenant, k)
		counter(d.revenueTK, t.Revenue.Float(), t.Tenant, k)
		counter(d.secondsTK, t.Seconds, t.Tenant, k)
	}
	for _, t := range st.Workloads {
		k := string(t.Kind)
		counter(d.energyWL, float64(t.EnergyMJ)/1000, t.Workload, t.Tenant, k)
		counter(d.costWL, t.Cost.Float(), t.Workload, t.Tenant, k)
		counter(d.revenueWL, t.Revenue.Float(), t.Workload, t.Tenant, k)
	}
	gauge(d.ledgerUnsent, float64(st.Unsent))
	gauge(d.ledgerOK, boolFloat(st.LedgerErr == nil))

	if c.work == nil {
		return
	}
	ws := c.work.Status()
	gauge(d.queue, float64(ws.Queued))
	gauge(d.drawW, ws.DrawW)
	gauge(d.budgetW, ws.BudgetW)
	gauge(d.storeOK, boolFloat(ws.StoreErr == nil))
	counts := map[workload.State]int{}
	for _, w := range c.work.List(workload.Filter{}) {
		counts[w.State]++
	}
	for s, n := range counts {
		gauge(d.states, float64(n), string(s))
	}
	c.handover.Collect(ch)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
