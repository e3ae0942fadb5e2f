//go:build cgo

package nvml

import (
	"context"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// directSample is what a program calling go-nvml by hand would do for one
// sample of every field of every device: the baseline of BenchmarkSample.
func directSample(devs []gonvml.Device, dst []gpu.Sample) {
	now := time.Now()
	for i, h := range devs {
		s := &dst[i]
		*s = gpu.Sample{Index: i, Time: now}
		if mw, ret := h.GetPowerUsage(); ret == gonvml.SUCCESS {
			s.PowerW = gpu.Some(float64(mw) / 1000)
		}
		if mj, ret := h.GetTotalEnergyConsumption(); ret == gonvml.SUCCESS {
			s.EnergyMJ = gpu.Some(mj)
		}
		if c, ret := h.GetTemperature(gonvml.TEMPERATURE_GPU); ret == gonvml.SUCCESS {
			s.TemperatureC = gpu.Some(int(c))
		}
		if u, ret := h.GetUtilizationRates(); ret == gonvml.SUCCESS {
			s.GPUUtilPct, s.MemUtilPct = gpu.Some(int(u.Gpu)), gpu.Some(int(u.Memory))
		}
		if m, ret := h.GetMemoryInfo_v2(); ret == gonvml.SUCCESS {
			s.MemoryUsedBytes = gpu.Some(m.Used)
		}
		if v, ret := h.GetClockInfo(gonvml.CLOCK_SM); ret == gonvml.SUCCESS {
			s.SMClockMHz = gpu.Some(int(v))
		}
		if v, ret := h.GetClockInfo(gonvml.CLOCK_MEM); ret == gonvml.SUCCESS {
			s.MemClockMHz = gpu.Some(int(v))
		}
		if v, ret := h.GetCurrentClocksEventReasons(); ret == gonvml.SUCCESS {
			s.ClockEvents = gpu.Some(gpu.ClockEvents(v))
		}
		if v, ret := h.GetPcieThroughput(gonvml.PCIE_UTIL_TX_BYTES); ret == gonvml.SUCCESS {
			s.PCIeTxBytesPerS = gpu.Some(uint64(v) * 1024)
		}
		if v, ret := h.GetPcieThroughput(gonvml.PCIE_UTIL_RX_BYTES); ret == gonvml.SUCCESS {
			s.PCIeRxBytesPerS = gpu.Some(uint64(v) * 1024)
		}
		if v, ret := h.GetFanSpeed(); ret == gonvml.SUCCESS {
			s.FanPct = gpu.Some(int(v))
		}
		if v, ret := h.GetCurrPcieLinkGeneration(); ret == gonvml.SUCCESS {
			s.Link.Gen = v
		}
		if v, ret := h.GetCurrPcieLinkWidth(); ret == gonvml.SUCCESS {
			s.Link.Width = v
		}
	}
}

// BenchmarkSample compares, in one loop, one sample of every field of the
// 8 GPUs of the extended dgxa100 mock taken
//   - directly with go-nvml calls (directSample),
//   - through gpu.Manager.SampleAll with context.Background (inline path),
//   - through gpu.Manager.SampleAll with a cancellable context (the
//     guarded path: the NVML batch runs on a goroutine).
//
// The metrics are each path's ns per sample of the rig and the ratios
// manager/direct ("ratio", goal <= 1.2) and guarded/direct. The devices
// support every reading, so both sides make the same 13 calls per GPU, the
// two PCIe throughput reads included. The mock answers those at once; on
// a real GPU each may block for NVML's 20 ms window, the same on both
// sides, so the ratio would only move towards 1 (New logs the real cost).
// The driver-symbol checks happen at New: a Sample looks nothing up.
// ns/op covers an iteration: two untimed warm-up passes plus the three paths.
func BenchmarkSample(b *testing.B) {
	x := newDGX(func(s *spec) { s.fan = true })
	devs := make([]gonvml.Device, len(x.Devices))
	copy(devs, x.Devices[:])
	be, err := New(context.Background(), WithLibrary(x), WithEventWait(DefaultEventWait))
	if err != nil {
		b.Fatal(err)
	}
	m, err := gpu.New(context.Background(), be)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct := make([]gpu.Sample, len(devs))
	viaManager := make([]gpu.Sample, len(devs))
	guarded := make([]gpu.Sample, len(devs))
	var tDirect, tManager, tGuarded time.Duration
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		// The guarded batch of the previous iteration may have run on the
		// other CPU; an untimed pass warms this one for both timed paths,
		// and they alternate which goes first.
		directSample(devs, direct)
		var dDirect, dManager time.Duration
		if n%2 == 0 {
			t0 := time.Now()
			directSample(devs, direct)
			t1 := time.Now()
			viaManager, err = m.SampleAll(context.Background(), viaManager)
			dDirect, dManager = t1.Sub(t0), time.Since(t1)
		} else {
			t0 := time.Now()
			viaManager, err = m.SampleAll(context.Background(), viaManager)
			t1 := time.Now()
			directSample(devs, direct)
			dManager, dDirect = t1.Sub(t0), time.Since(t1)
		}
		if err != nil {
			b.Fatal(err)
		}
		// Likewise the guarded path gets its own untimed pass, so it is
		// timed in its steady state, not right after the inline paths
		// touched every mock on this CPU.
		if _, err := m.SampleAll(ctx, guarded); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		guarded, err = m.SampleAll(ctx, guarded)
		dGuarded := time.Since(t2)
		if err != nil {
			b.Fatal(err)
		}
		tDirect += dDirect
		tManager += dManager
		tGuarded += dGuarded
		n++
	}
	if !viaManager[7].FanPct.Valid || viaManager[7].PowerW != direct[7].PowerW || guarded[7].Link != direct[7].Link {
		b.Fatalf("the paths read different data: %+v vs %+v", viaManager[7], direct[7])
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n) }
	b.ReportMetric(per(tDirect), "direct-ns/op")
	b.ReportMetric(per(tManager), "manager-ns/op")
	b.ReportMetric(per(tGuarded), "guarded-ns/op")
	b.ReportMetric(per(tManager)/per(tDirect), "ratio")
	b.ReportMetric(per(tGuarded)/per(tDirect), "ratio-guarded")
}
