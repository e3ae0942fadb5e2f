package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Load is what a workload puts on one device. The zero value is an idle
// device.
type Load struct {
	// Util is the busy fraction of the GPU, 0 to 1. It sets GPUUtilPct and
	// the share of the span between idle and full-load power.
	Util float64
	// MemUtil is the busy fraction of the memory bus, 0 to 1 (Ethash
	// mining is near 1, inference of a resident model much lower).
	MemUtil float64
	// MemoryBytes is the device memory in use; at most the card's memory.
	MemoryBytes uint64
	// PCIeTxBytesPerS and PCIeRxBytesPerS are the host traffic the workload
	// wants; the device reports at most what its current link carries, so
	// a job on a gen1 x1 riser sees 250 MB/s whatever it asks for.
	PCIeTxBytesPerS uint64
	PCIeRxBytesPerS uint64
	// Processes are the compute processes the device lists.
	Processes []gpu.Process
}

// validate reports every problem with l for card c at once.
func (l Load) validate(c *Card) error {
	var errs []error
	if !(l.Util >= 0 && l.Util <= 1) { // also rejects NaN
		errs = append(errs, fmt.Errorf("util %v outside 0-1", l.Util))
	}
	if !(l.MemUtil >= 0 && l.MemUtil <= 1) {
		errs = append(errs, fmt.Errorf("memory util %v outside 0-1", l.MemUtil))
	}
	if l.MemoryBytes > c.MemoryBytes {
		errs = append(errs, fmt.Errorf("memory %d bytes exceeds the card's %d bytes", l.MemoryBytes, c.MemoryBytes))
	}
	seen := map[int]bool{}
	for _, p := range l.Processes {
		if p.PID <= 0 {
			errs = append(errs, fmt.Errorf("process pid %d is not positive", p.PID))
		} else if seen[p.PID] {
			errs = append(errs, fmt.Errorf("process pid %d listed twice", p.PID))
		}
		seen[p.PID] = true
		if p.UsedMemoryBytes.Valid && p.UsedMemoryBytes.Value > l.MemoryBytes {
			errs = append(errs, fmt.Errorf("process %d uses %d bytes, more than the load's %d", p.PID, p.UsedMemoryBytes.Value, l.MemoryBytes))
		}
	}
	return errors.Join(errs...)
}

func (l Load) clone() Load {
	l.Processes = slices.Clone(l.Processes)
	return l
}

// device is one simulated GPU. The power model is piecewise constant: every
// change (load, limit, clock lock, reset) closes a segment at the current
// time, folding its energy and temperature into the segment start, and
// recomputes the derived state. Observations read the open segment without
// changing it, so how often a device is sampled never changes its numbers.
type device struct {
	card Card
	info gpu.Device // static inventory; mutable fields are set in inventory()

	load             Load
	limitMW          int64 // current power limit
	lockMin, lockMax int   // locked SM clock range, 0 when unlocked
	mig              gpu.Feature

	// The open segment.
	segStart    time.Time
	segEnergyMJ uint64
	segCarryPJ  uint64  // energy below 1 mJ, in 1e-9 mJ, always < 1e9
	segTempC    float64 // temperature at segStart
	st          derived

	// Faults.
	lost    bool
	lostXID int
	hang    chan struct{} // non-nil while hung; closed by Unhang
	failN   int
	failErr error
}

// derived is everything that is constant within a segment.
type derived struct {
	powerMW    uint64
	tssC       float64 // steady-state temperature at powerMW
	smMHz      int
	memMHz     int
	events     gpu.ClockEvents
	link       gpu.Link
	txBytesPS  uint64
	rxBytesPS  uint64
	gpuUtilPct int
	memUtilPct int
}

func newDevice(c Card, info gpu.Device, start time.Time) *device {
	d := &device{card: c, info: info, mig: c.MIG, segStart: start, segTempC: c.IdleC}
	d.limitMW = wattsToMW(c.Power.CurrentW)
	if d.limitMW == 0 {
		d.limitMW = wattsToMW(c.Power.DefaultW)
	}
	d.recompute()
	return d
}

func wattsToMW(w float64) int64 { return int64(math.Round(w * 1000)) }

// clamp keeps a device's time from running backwards.
func (d *device) clamp(t time.Time) time.Time {
	if t.Before(d.segStart) {
		return d.segStart
	}
	return t
}

// energyAt integrates the open segment up to t exactly: power in mW times
// time in ns is energy in 1e-9 mJ, split into whole seconds and the rest so
// that nothing overflows for any segment length, with the sub-millijoule
// remainder carried into the next segment.
func (d *device) energyAt(t time.Time) (mJ, carryPJ uint64) {
	dt := uint64(d.clamp(t).Sub(d.segStart))
	sec, ns := dt/uint64(time.Second), dt%uint64(time.Second)
	p := d.st.powerMW
	pj := d.segCarryPJ + p*ns
	return d.segEnergyMJ + p*sec + pj/1e9, pj % 1e9
}

// tempAt is the closed form of a first-order lag toward the segment's
// steady-state temperature.
func (d *device) tempAt(t time.Time) float64 {
	dt := d.clamp(t).Sub(d.segStart)
	if d.card.ThermalLag <= 0 {
		return d.st.tssC
	}
	return d.st.tssC + (d.segTempC-d.st.tssC)*math.Exp(-dt.Seconds()/d.card.ThermalLag.Seconds())
}

// advance closes the open segment at t. Call recompute after changing the
// inputs.
func (d *device) advance(t time.Time) {
	t = d.clamp(t)
	d.segEnergyMJ, d.segCarryPJ = d.energyAt(t)
	d.segTempC = d.tempAt(t)
	d.segStart = t
}

// recompute derives the segment's constant state from the inputs.
//
// Power: demand = idle + Util*(full-idle)*(f/boost)², where f is the SM
// clock the card aims for (boost, or the locked range clamped around it).
// Dynamic power goes roughly with f·V² and V with f, so the square is a
// middle ground that rewards down-clocking as miners see it. Demand above
// the power limit is clipped to the limit (never below idle) and sets the
// SW power cap reason; the clock then drops to the f that fits. A power
// cap wins over a clock lock's minimum, as on real boards.
func (d *device) recompute() {
	c := &d.card
	l := &d.load
	var st derived

	busy := l.Util > 0 || l.PCIeTxBytesPerS > 0 || l.PCIeRxBytesPerS > 0
	if busy {
		st.link = c.linkBusy()
	} else {
		st.link = c.linkIdle()
	}
	bw := bandwidthBytesPerS(st.link)
	st.txBytesPS = min(l.PCIeTxBytesPerS, bw)
	st.rxBytesPS = min(l.PCIeRxBytesPerS, bw)
	st.gpuUtilPct = int(math.Round(l.Util * 100))
	st.memUtilPct = int(math.Round(l.MemUtil * 100))

	target := float64(c.BoostSMClockMHz)
	if d.lockMax > 0 {
		target = math.Min(math.Max(target, float64(d.lockMin)), float64(d.lockMax))
	}
	scale := 1.0
	if c.BoostSMClockMHz > 0 {
		r := target / float64(c.BoostSMClockMHz)
		scale = r * r
	}
	span := c.FullLoadW - c.IdleW
	demandW := c.IdleW + l.Util*span*scale
	demandMW := wattsToMW(demandW)
	powerMW := demandMW
	clipped := false
	if c.Power.MaxW > 0 && demandMW > d.limitMW {
		clipped = true
		powerMW = max(d.limitMW, wattsToMW(c.IdleW))
	}
	st.powerMW = uint64(max(powerMW, 0))

	if l.Util == 0 {
		st.events |= gpu.ClockEventGPUIdle
	}
	if clipped {
		st.events |= gpu.ClockEventSWPowerCap
	}

	// SM clock.
	switch {
	case c.MaxSMClockMHz == 0:
	case l.Util == 0:
		st.smMHz = c.IdleSMClockMHz
		if d.lockMax > 0 {
			st.smMHz = min(max(st.smMHz, d.lockMin), d.lockMax)
		}
	default:
		f := target
		if clipped && l.Util*span > 0 {
			allowed := (float64(st.powerMW)/1000 - c.IdleW) / (l.Util * span)
			f = float64(c.BoostSMClockMHz) * math.Sqrt(math.Max(allowed, 0))
		}
		st.smMHz = max(int(math.Round(f)), c.IdleSMClockMHz)
	}
	if c.MaxMemClockMHz > 0 {
		st.memMHz = c.IdleMemClockMHz
		if busy {
			st.memMHz = c.MaxMemClockMHz
		}
	}

	// Steady-state temperature on the line through (IdleW, IdleC) and
	// (FullLoadW, LoadC): ambient + k*power.
	st.tssC = c.IdleC
	if span > 0 {
		st.tssC += (float64(st.powerMW)/1000 - c.IdleW) * (c.LoadC - c.IdleC) / span
	}
	d.st = st
}

// fanPct follows the temperature between the card's idle and load points.
func (d *device) fanPct(tempC float64) int {
	c := &d.card
	f := float64(c.FanIdlePct)
	if c.LoadC > c.IdleC {
		f += (tempC - c.IdleC) / (c.LoadC - c.IdleC) * float64(c.FanLoadPct-c.FanIdlePct)
	}
	lo, hi := float64(min(c.FanIdlePct, c.FanLoadPct)), 100.0
	return int(math.Round(math.Min(math.Max(f, lo), hi)))
}

// fill writes a reading at t into s. It must not allocate.
func (d *device) fill(s *gpu.Sample, t time.Time) {
	c := &d.card
	*s = gpu.Sample{Index: d.info.Index, UUID: d.info.UUID, Time: t, Link: d.st.link}
	if c.PowerSensor {
		s.PowerW = gpu.Some(float64(d.st.powerMW) / 1000)
	}
	if c.EnergyCounter {
		e, _ := d.energyAt(t)
		s.EnergyMJ = gpu.Some(e)
	}
	temp := d.tempAt(t)
	s.TemperatureC = gpu.Some(int(math.Round(temp)))
	// NVML has no utilization rates on MIG-enabled GPUs.
	if d.mig != gpu.FeatureEnabled {
		s.GPUUtilPct = gpu.Some(d.st.gpuUtilPct)
		s.MemUtilPct = gpu.Some(d.st.memUtilPct)
	}
	s.MemoryUsedBytes = gpu.Some(d.load.MemoryBytes)
	if c.MaxSMClockMHz > 0 {
		s.SMClockMHz = gpu.Some(d.st.smMHz)
	}
	if c.MaxMemClockMHz > 0 {
		s.MemClockMHz = gpu.Some(d.st.memMHz)
	}
	s.ClockEvents = gpu.Some(d.st.events)
	s.PCIeTxBytesPerS = gpu.Some(d.st.txBytesPS)
	s.PCIeRxBytesPerS = gpu.Some(d.st.rxBytesPS)
	if c.Fan {
		s.FanPct = gpu.Some(d.fanPct(temp))
	}
}

// inventory is the device record as of now.
func (d *device) inventory() gpu.Device {
	info := d.info
	info.LinkCurrent = d.st.link
	info.MIG = d.mig
	if d.card.Power.MaxW > 0 {
		p := d.card.Power
		p.CurrentW = float64(d.limitMW) / 1000
		info.PowerLimit = gpu.Some(p)
	}
	return info
}

func (d *device) powerLimits() gpu.PowerLimits {
	p := d.card.Power
	p.CurrentW = float64(d.limitMW) / 1000
	return p
}

// reset is a GPU reset: processes die, and the non-persistent settings
// (power limit, clock locks) return to their defaults. The energy counter
// keeps counting: it resets only when the driver reloads.
func (d *device) reset(t time.Time) {
	d.advance(t)
	d.load = Load{}
	d.limitMW = wattsToMW(d.card.Power.DefaultW)
	d.lockMin, d.lockMax = 0, 0
	d.lost, d.lostXID = false, 0
	d.failN, d.failErr = 0, nil
	if d.hang != nil {
		close(d.hang)
		d.hang = nil
	}
	d.recompute()
}
