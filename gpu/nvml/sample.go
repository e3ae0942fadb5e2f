//go:build cgo

package nvml

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// probe is a bit set of telemetry calls.
type probe uint32

const (
	probePower probe = 1 << iota
	probeEnergy
	probeTemperature
	probeUtilization
	probeMemory
	probeSMClock
	probeMemClock
	probeClockEvents
	probePCIeTx
	probePCIeRx
	probeFan
	probeLinkGen
	probeLinkWidth
)

// probeNames lists the names of the probe bits in bit order. It is a
// function so that no package state can be changed.
func probeNames() [13]string {
	return [...]string{
		"power", "energy", "temperature", "utilization", "memory", "sm-clock", "mem-clock",
		"clock-events", "pcie-tx", "pcie-rx", "fan", "link-gen", "link-width",
	}
}

func (p probe) String() string {
	if p == 0 {
		return "none"
	}
	var names []string
	for i, n := range probeNames() {
		if p&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}

// pcieKB is the KB of NVML's PCIe throughput. nvml.h says only "KB/s"
// and does not define KB; we take 1024 bytes. Were it 1000, the readings
// would be 2.4% high, well inside what a 20 ms window varies.
const pcieKB = 1024

// probeTelemetry samples every telemetry call once at discovery so that the
// calls a device does not support are known before the first Sample.
func (b *Backend) probeTelemetry(p *prober) {
	var s gpu.Sample
	if err := b.sampleDevice(p.d, &s); err != nil && p.lost == nil {
		p.lost = err
	}
}

// pcieThroughputCost times the PCIe throughput reads of one Sample. NVML
// counts bytes over a 20 ms window and may block for it, which a mock
// never shows; New logs what it costs on the real host.
func (b *Backend) pcieThroughputCost(devs []*device) time.Duration {
	var total time.Duration
	for _, d := range devs {
		skip := probe(d.skip.Load())
		if d.broken != nil || skip&(probePCIeTx|probePCIeRx) == probePCIeTx|probePCIeRx {
			continue
		}
		start := time.Now()
		d.h.GetPcieThroughput(gonvml.PCIE_UTIL_TX_BYTES)
		d.h.GetPcieThroughput(gonvml.PCIE_UTIL_RX_BYTES)
		total += time.Since(start)
	}
	return total
}

// Sample reads the telemetry of the devices dst names. It does not
// allocate in steady state. Calls a device answered NOT_SUPPORTED are not
// repeated: the reading stays invalid.
func (b *Backend) Sample(ctx context.Context, dst []gpu.Sample) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nvml: sample: %w", err)
	}
	if err := b.acquire(ctx, "sample"); err != nil {
		return err
	}
	if ctx.Done() == nil {
		err := b.sampleInto(dst)
		b.release()
		return err
	}
	// The goroutine writes to scratch, never to dst: if the caller gives
	// up, the goroutine may still be writing after Sample returned.
	if cap(b.scratch) < len(dst) {
		b.scratch = make([]gpu.Sample, len(dst))
	}
	sc := b.scratch[:len(dst)]
	for i := range dst {
		sc[i].Index = dst[i].Index
	}
	b.batch, b.batchErr = sc, nil
	if err := b.runHeld(ctx, "sample", b.sampleFn); err != nil {
		return err
	}
	copy(dst, sc)
	err := b.batchErr
	b.batch, b.batchErr = nil, nil
	b.release()
	return err
}

func (b *Backend) sampleBatch() { b.batchErr = b.sampleInto(b.batch) }

// sampleInto fills dst; it runs while the slot is held.
func (b *Backend) sampleInto(dst []gpu.Sample) error {
	now := b.clock.Now()
	var errs []error
	for i := range dst {
		s := &dst[i]
		idx := s.Index
		*s = gpu.Sample{} // cleared in place: no Sample-sized temporary on the stack
		s.Index, s.Time = idx, now
		var d *device
		if idx >= 0 && idx < len(b.devs) {
			d = b.devs[idx]
			s.UUID = d.uuid
		}
		if d == nil || d.broken != nil {
			errs = append(errs, b.sampleErr(s, d, nil))
			continue
		}
		if err := b.sampleDevice(d, s); err != nil {
			errs = append(errs, b.sampleErr(s, d, err))
		}
	}
	if errs == nil {
		return nil
	}
	return errors.Join(errs...)
}

// sampleErr is the error of one device in a Sample, and clears its
// readings. It is kept out of line on purpose: the guarded Sample runs on
// a fresh goroutine, and a larger frame in the loop above would make its
// stack grow (and be copied) on every call.
//
//go:noinline
func (b *Backend) sampleErr(s *gpu.Sample, d *device, err error) error {
	idx, now := s.Index, s.Time
	*s = gpu.Sample{}
	s.Index, s.Time = idx, now
	switch {
	case d == nil:
		return &gpu.DeviceError{Index: idx, Err: fmt.Errorf("%w: no GPU with index %d: this node has %d", gpu.ErrNotFound, idx, len(b.devs))}
	case d.broken != nil:
		s.UUID = d.uuid
		return &gpu.DeviceError{Index: idx, UUID: d.uuid, Err: d.broken}
	default:
		s.UUID = d.uuid
		return &gpu.DeviceError{Index: idx, UUID: d.uuid, Err: err}
	}
}

// sampleDevice reads every telemetry field d supports into s. It returns
// an error only when the device failed as a whole (lost).
func (b *Backend) sampleDevice(d *device, s *gpu.Sample) error {
	skip := probe(d.skip.Load())
	h := d.h
	var ret gonvml.Return
	if skip&probePower == 0 {
		var mw uint32
		if mw, ret = h.GetPowerUsage(); b.read(d, probePower, ret) {
			s.PowerW = gpu.Some(float64(mw) / 1000)
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get power usage", Code: ret}
		}
	}
	if skip&probeEnergy == 0 {
		var mj uint64
		if mj, ret = h.GetTotalEnergyConsumption(); b.read(d, probeEnergy, ret) {
			s.EnergyMJ = gpu.Some(mj)
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get total energy consumption", Code: ret}
		}
	}
	if skip&probeTemperature == 0 {
		var c uint32
		if c, ret = h.GetTemperature(gonvml.TEMPERATURE_GPU); b.read(d, probeTemperature, ret) {
			s.TemperatureC = gpu.Some(int(c))
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get temperature", Code: ret}
		}
	}
	if skip&probeUtilization == 0 {
		var u gonvml.Utilization
		if u, ret = h.GetUtilizationRates(); b.read(d, probeUtilization, ret) {
			s.GPUUtilPct = gpu.Some(int(u.Gpu))
			s.MemUtilPct = gpu.Some(int(u.Memory))
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get utilization", Code: ret}
		}
	}
	if skip&probeMemory == 0 {
		var used uint64
		if used, ret = memoryUsed(d); b.read(d, probeMemory, ret) {
			s.MemoryUsedBytes = gpu.Some(used)
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get memory info", Code: ret}
		}
	}
	if skip&probeSMClock == 0 {
		var mhz uint32
		if mhz, ret = h.GetClockInfo(gonvml.CLOCK_SM); b.read(d, probeSMClock, ret) {
			s.SMClockMHz = gpu.Some(int(mhz))
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get SM clock", Code: ret}
		}
	}
	if skip&probeMemClock == 0 {
		var mhz uint32
		if mhz, ret = h.GetClockInfo(gonvml.CLOCK_MEM); b.read(d, probeMemClock, ret) {
			s.MemClockMHz = gpu.Some(int(mhz))
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get memory clock", Code: ret}
		}
	}
	if skip&probeClockEvents == 0 {
		// Both calls return the same bits; drivers before R535 have only
		// the older name, and calling the newer one there aborts.
		var reasons uint64
		if b.has[symClockEvents] {
			reasons, ret = h.GetCurrentClocksEventReasons()
		} else {
			reasons, ret = h.GetCurrentClocksThrottleReasons()
		}
		if b.read(d, probeClockEvents, ret) {
			s.ClockEvents = gpu.Some(gpu.ClockEvents(reasons))
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get clock event reasons", Code: ret}
		}
	}
	if skip&probePCIeTx == 0 {
		var kbps uint32
		if kbps, ret = h.GetPcieThroughput(gonvml.PCIE_UTIL_TX_BYTES); b.read(d, probePCIeTx, ret) {
			s.PCIeTxBytesPerS = gpu.Some(uint64(kbps) * pcieKB)
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get PCIe tx throughput", Code: ret}
		}
	}
	if skip&probePCIeRx == 0 {
		var kbps uint32
		if kbps, ret = h.GetPcieThroughput(gonvml.PCIE_UTIL_RX_BYTES); b.read(d, probePCIeRx, ret) {
			s.PCIeRxBytesPerS = gpu.Some(uint64(kbps) * pcieKB)
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get PCIe rx throughput", Code: ret}
		}
	}
	if skip&probeFan == 0 {
		var pct uint32
		if pct, ret = h.GetFanSpeed(); b.read(d, probeFan, ret) {
			s.FanPct = gpu.Some(int(pct))
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get fan speed", Code: ret}
		}
	}
	if skip&probeLinkGen == 0 {
		var g int
		if g, ret = h.GetCurrPcieLinkGeneration(); b.read(d, probeLinkGen, ret) {
			s.Link.Gen = g
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get current PCIe generation", Code: ret}
		}
	}
	if skip&probeLinkWidth == 0 {
		var w int
		if w, ret = h.GetCurrPcieLinkWidth(); b.read(d, probeLinkWidth, ret) {
			s.Link.Width = w
		} else if ret == gonvml.ERROR_GPU_IS_LOST {
			return Error{Op: "get current PCIe width", Code: ret}
		}
	}
	return nil
}

// memoryUsed reads the memory in use. Version 2's used leaves out the
// driver's reserve, so an idle GPU reads 0; version 1 (before R510) counts
// the reserve. Out of line for the same reason as sampleErr: both memory
// structs in sampleDevice's frame would grow the guarded goroutine's stack.
//
//go:noinline
func memoryUsed(d *device) (uint64, gonvml.Return) {
	if d.memV2 {
		m, ret := d.h.GetMemoryInfo_v2()
		return m.Used, ret
	}
	m, ret := d.h.GetMemoryInfo()
	return m.Used, ret
}

// read reports whether a telemetry call succeeded. NOT_SUPPORTED is
// remembered so the call is skipped from then on; other failures leave the
// reading invalid for this sample only.
func (b *Backend) read(d *device, p probe, ret gonvml.Return) bool {
	switch ret {
	case gonvml.SUCCESS:
		return true
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND:
		d.skip.Or(uint32(p))
	case gonvml.ERROR_GPU_IS_LOST:
	default:
		if b.log.Enabled(context.Background(), slog.LevelDebug) {
			b.log.Debug("nvml reading failed", "gpu", d.info.Index, "reading", p.String(), "err", Error{Op: "sample", Code: ret})
		}
	}
	return false
}
