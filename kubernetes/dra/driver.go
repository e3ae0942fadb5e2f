package dra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

// DriverName is the DRA driver's name: the domain of its attributes, the
// driver field of its ResourceSlices and of the DeviceClasses that select
// its GPUs.
const DriverName = "gpu.gpufarm.io"

// Labels the driver puts on a claim's workload.
const (
	LabelClaim     = "gpufarm.io/claim"     // namespace/name
	LabelClaimUID  = "gpufarm.io/claim-uid" // the claim's UID
	LabelPod       = "gpufarm.io/pod"       // the pod the claim is reserved for, when known
	AnnotationKind = "gpufarm.io/kind"      // on a claim: training (default), inference or batch
	// AnnotationPrice on a claim is what its tenant pays per GPU-hour, for
	// the ledger's revenue.
	AnnotationPrice = "gpufarm.io/price-per-gpu-hour"
)

// Driver is the node side of Dynamic Resource Allocation for one node: it
// publishes the node's GPUs with what they are good for, and prepares a
// claim's GPUs by taking them from mining through the workload manager,
// which holds and accounts for them until the claim is unprepared.
type Driver struct {
	m    *workload.Manager
	gpus *gpu.Manager
	node string
	o    options

	mu      sync.Mutex
	helper  *kubeletplugin.Helper
	noTaint bool // the API server drops device taints: unhealthy GPUs leave the slice instead
	last    string
	changed chan struct{} // poked when health or the slice may have changed
}

// Option configures a Driver.
type Option func(*options)

type options struct {
	log         *slog.Logger
	cdiKind     string
	prepare     time.Duration
	healthEvery time.Duration
}

// Defaults.
const (
	DefaultCDIKind        = "nvidia.com/gpu" // nvidia-ctk's, and the simulated specs'
	DefaultPrepareTimeout = 2 * time.Minute
	DefaultHealthInterval = time.Second
)

// WithLogger logs what the driver does.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithCDIKind is the CDI kind of the GPU devices the container runtime
// injects: a prepared GPU is "KIND=UUID" (DefaultCDIKind).
func WithCDIKind(kind string) Option { return func(o *options) { o.cdiKind = kind } }

// WithPrepareTimeout bounds how long preparing a claim waits for its GPUs
// to be handed over (DefaultPrepareTimeout); kubelet retries after.
func WithPrepareTimeout(d time.Duration) Option { return func(o *options) { o.prepare = d } }

// WithHealthInterval is how often GPU health is read for the slice and for
// kubelet's health stream (DefaultHealthInterval).
func WithHealthInterval(d time.Duration) Option { return func(o *options) { o.healthEvery = d } }

// New makes the driver of node nodeName over a running manager. It fails
// with workload.ErrInvalid naming every problem.
func New(m *workload.Manager, gpus *gpu.Manager, nodeName string, opts ...Option) (*Driver, error) {
	o := options{cdiKind: DefaultCDIKind, prepare: DefaultPrepareTimeout, healthEvery: DefaultHealthInterval}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if m == nil || gpus == nil {
		errs = append(errs, errors.New("the workload manager and the GPU manager are needed"))
	}
	if nodeName == "" {
		errs = append(errs, errors.New("the node name is empty: give the name of the Kubernetes node"))
	}
	if !strings.Contains(o.cdiKind, "/") {
		errs = append(errs, fmt.Errorf("WithCDIKind(%q): want vendor/class, e.g. nvidia.com/gpu", o.cdiKind))
	}
	if o.prepare <= 0 || o.healthEvery <= 0 {
		errs = append(errs, fmt.Errorf("WithPrepareTimeout(%v), WithHealthInterval(%v): give positive durations", o.prepare, o.healthEvery))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: dra: %w", workload.ErrInvalid, err)
	}
	return &Driver{m: m, gpus: gpus, node: nodeName, o: o, changed: make(chan struct{}, 1)}, nil
}

// Run registers the driver with kubelet (through the plugin helper, whose
// options, e.g. the socket paths, are given), publishes the node's
// ResourceSlice, and keeps it and kubelet's health stream current until
// ctx ends.
func (d *Driver) Run(ctx context.Context, client kubernetes.Interface, helperOpts ...kubeletplugin.Option) error {
	opts := append([]kubeletplugin.Option{kubeletplugin.DriverName(DriverName), kubeletplugin.KubeClient(client),
		kubeletplugin.NodeName(d.node)}, helperOpts...)
	h, err := kubeletplugin.Start(ctx, d, opts...)
	if err != nil {
		return fmt.Errorf("dra: start the kubelet plugin: %w", err)
	}
	defer h.Stop()
	d.mu.Lock()
	d.helper = h
	d.mu.Unlock()
	tick := time.NewTicker(d.o.healthEvery)
	defer tick.Stop()
	for {
		if err := d.publish(ctx); err != nil {
			d.o.log.Warn("publish the ResourceSlice", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-d.changed:
		}
	}
}

// Published is the slice the driver publishes now: its devices.
func (d *Driver) Published() []resourceapi.Device { return d.devices() }

// publish hands the current devices to the helper when they changed.
func (d *Driver) publish(ctx context.Context) error {
	devs := d.devices()
	key := fmt.Sprint(devs)
	d.mu.Lock()
	h, same := d.helper, key == d.last
	d.mu.Unlock()
	if h == nil || same {
		return nil
	}
	err := h.PublishResources(ctx, resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		d.node: {Slices: []resourceslice.Slice{{Devices: devs}}},
	}})
	if err == nil {
		d.mu.Lock()
		d.last = key
		d.mu.Unlock()
	}
	return err
}

// poke asks Run to look again now.
func (d *Driver) poke() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// deviceName is a GPU's name in the slice: gpu-<index>.
func deviceName(index int) string { return "gpu-" + strconv.Itoa(index) }

// devices describes every GPU for the slice: attributes from the inventory
// and readiness, memory as capacity, and a taint on an unhealthy one (or
// no entry, when the API server drops taints).
func (d *Driver) devices() []resourceapi.Device {
	rs, _ := d.gpus.HostReadiness()
	byUUID := map[string]gpu.Readiness{}
	for _, r := range rs {
		byUUID[r.UUID] = r
	}
	d.mu.Lock()
	noTaint := d.noTaint
	d.mu.Unlock()
	var out []resourceapi.Device
	for _, g := range d.m.GPUs() {
		dev, r := g.Device, byUUID[g.Device.UUID]
		attrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
			"uuid":                            str(dev.UUID),
			"model":                           str(strings.TrimPrefix(dev.Name, "NVIDIA ")),
			"class":                           str(dev.Class.String()),
			"architecture":                    str(string(dev.Architecture)),
			"computeCapability":               version(dev.ComputeCapability),
			"pcieGeneration":                  integer(int64(r.Link.Gen)),
			"pcieWidth":                       integer(int64(r.Link.Width)),
			"riser":                           boolean(slices.Contains(r.Flags, gpu.FlagRiserX1)),
			"use":                             str(r.Use.String()),
			"inferenceFP16Params":             integer(int64(r.Fit.InferenceFP16Params)),
			"inferenceINT4Params":             integer(int64(r.Fit.InferenceINT4Params)),
			"qloraParams":                     integer(int64(r.Fit.QLoRAParams)),
			"ecc":                             boolean(dev.ECC == gpu.FeatureEnabled),
			"persistenceMode":                 boolean(dev.Persistence == gpu.FeatureEnabled),
			"resource.kubernetes.io/pciBusID": str(dev.PCIBusID),
		}
		if dev.Architecture == gpu.ArchUnknown {
			delete(attrs, "architecture")
		}
		if dev.ComputeCapability == (gpu.ComputeCapability{}) {
			delete(attrs, "computeCapability")
		}
		rd := resourceapi.Device{
			Name:       deviceName(dev.Index),
			Attributes: attrs,
			Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
				"memory": {Value: *resource.NewQuantity(int64(dev.MemoryBytes), resource.BinarySI)},
			},
		}
		if !g.Healthy {
			if noTaint {
				continue
			}
			rd.Taints = []resourceapi.DeviceTaint{{Key: DriverName + "/unhealthy", Value: taintValue(g.Health),
				Effect: resourceapi.DeviceTaintEffectNoSchedule}}
		}
		out = append(out, rd)
	}
	return out
}

// taintValue fits a health reason into a label value (63 characters of
// letters, digits, '-', '_' and '.').
func taintValue(why string) string {
	var b strings.Builder
	for _, r := range why {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
		if b.Len() >= 63 {
			break
		}
	}
	return strings.Trim(b.String(), "-_.")
}

func str(s string) resourceapi.DeviceAttribute    { return resourceapi.DeviceAttribute{StringValue: &s} }
func integer(n int64) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{IntValue: &n} }
func boolean(b bool) resourceapi.DeviceAttribute  { return resourceapi.DeviceAttribute{BoolValue: &b} }
func version(c gpu.ComputeCapability) resourceapi.DeviceAttribute {
	v := fmt.Sprintf("%d.%d.0", c.Major, c.Minor)
	return resourceapi.DeviceAttribute{VersionValue: &v}
}

// HandleError is called for background errors of the helper. A slice
// whose taints the API server dropped is published again without the
// unhealthy GPUs; other errors are logged (publishing is retried).
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	var dropped *resourceslice.DroppedFieldsError
	if errors.As(err, &dropped) {
		d.mu.Lock()
		first := !d.noTaint
		d.noTaint, d.last = true, ""
		d.mu.Unlock()
		if first {
			d.o.log.Warn("the API server drops device taints (DRADeviceTaints is off): unhealthy GPUs leave the slice instead", "err", err)
		}
		d.poke()
		return
	}
	d.o.log.Warn("dra: "+msg, "err", err)
}

// WatchHealthStatus streams each GPU's health to kubelet: all at once,
// then on every change, and again before kubelet's 30 s timeout.
func (d *Driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	tick := time.NewTicker(d.o.healthEvery)
	defer tick.Stop()
	var last map[string]kubeletplugin.HealthStatus
	sent := time.Time{}
	for {
		now := time.Now()
		cur := map[string]kubeletplugin.HealthStatus{}
		rep := kubeletplugin.DeviceHealthReport{}
		for _, g := range d.m.GPUs() {
			st, msg := kubeletplugin.HealthStatusHealthy, ""
			if !g.Healthy {
				st, msg = kubeletplugin.HealthStatusUnhealthy, g.Health
			}
			name := deviceName(g.Device.Index)
			cur[name] = st
			rep.Devices = append(rep.Devices, kubeletplugin.DeviceHealth{PoolName: d.node, DeviceName: name, Health: st,
				LastUpdated: now, Message: msg})
		}
		if !maps.Equal(cur, last) || now.Sub(sent) > 20*time.Second {
			select {
			case reports <- rep:
				last, sent = cur, now
			case <-ctx.Done():
				return nil
			}
			if last != nil {
				d.poke() // the slice follows the health
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// uidString is a claim UID as the workload labels keep it.
func uidString(u types.UID) string { return string(u) }
