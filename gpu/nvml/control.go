//go:build cgo

package nvml

import (
	"context"
	"fmt"
	"math"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// PowerLimits reads a device's current power limit and its constraints.
func (b *Backend) PowerLimits(ctx context.Context, index int) (gpu.PowerLimits, error) {
	d, err := b.device(index)
	if err != nil {
		return gpu.PowerLimits{}, err
	}
	var (
		lim  gpu.PowerLimits
		rerr error
	)
	err = b.call(ctx, "read power limits", func() {
		l, op, ret := readPowerLimits(d.h)
		if ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, op, ret)
			return
		}
		lim = l
	})
	if err != nil {
		return gpu.PowerLimits{}, err
	}
	if rerr != nil {
		return gpu.PowerLimits{}, rerr
	}
	// Someone else (nvidia-smi, a driver reload) may have changed it.
	b.setInventoryLimits(d, lim)
	return lim, nil
}

func (b *Backend) setInventoryLimits(d *device, lim gpu.PowerLimits) {
	b.infoMu.Lock()
	d.info.PowerLimit = gpu.Some(lim)
	b.infoMu.Unlock()
}

// SetPowerLimit sets a device's power limit in watts. It checks the value
// against the device's constraints first: outside them it fails wrapping
// gpu.ErrInvalid and names the allowed range. NVML needs root for this.
func (b *Backend) SetPowerLimit(ctx context.Context, index int, watts float64) error {
	d, err := b.device(index)
	if err != nil {
		return err
	}
	if math.IsNaN(watts) || math.IsInf(watts, 0) || watts <= 0 {
		return fmt.Errorf("%w: power limit %v W for GPU %d: want a positive number of watts", gpu.ErrInvalid, watts, index)
	}
	mw := math.Round(watts * 1000)
	var (
		rerr    error
		lim     gpu.PowerLimits
		reread  gonvml.Return
		persist persistence
	)
	err = b.call(ctx, "set power limit", func() {
		minMW, maxMW, ret := d.h.GetPowerManagementLimitConstraints()
		if ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "get power limit constraints", ret)
			return
		}
		if mw < float64(minMW) || mw > float64(maxMW) {
			rerr = fmt.Errorf("%w: power limit %g W for GPU %d (%s) is outside its allowed range %g-%g W: choose a value in that range",
				gpu.ErrInvalid, watts, index, d.info.Name, mwToW(minMW), mwToW(maxMW))
			return
		}
		if ret := d.h.SetPowerManagementLimit(uint32(mw)); ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "set power limit", ret)
			return
		}
		// What is in force now, not what was asked: the driver rounds,
		// and another limit may still be lower.
		lim, _, reread = readPowerLimits(d.h)
		persist = readPersistence(d.h)
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	inForceW := mw / 1000
	if reread == gonvml.SUCCESS {
		inForceW = lim.CurrentW
		b.setInventoryLimits(d, lim)
	} else {
		b.infoMu.Lock()
		if d.info.PowerLimit.Valid {
			d.info.PowerLimit.Value.CurrentW = inForceW
		}
		b.infoMu.Unlock()
	}
	b.notePersistence(d, persist, "power limit")
	b.log.Info("nvml power limit set", "gpu", index, "watts", mw/1000, "in_force_watts", inForceW)
	return nil
}

// persistence is a persistence mode read, with whether it could be read.
type persistence struct {
	mode gonvml.EnableState
	ok   bool
}

func readPersistence(h gonvml.Device) persistence {
	m, ret := h.GetPersistenceMode()
	return persistence{mode: m, ok: ret == gonvml.SUCCESS}
}

// notePersistence records the persistence mode read with a control call
// and warns, once while it stays off, that what was just set is lost when
// the driver unloads.
func (b *Backend) notePersistence(d *device, p persistence, what string) {
	if !p.ok {
		return
	}
	on := p.mode == gonvml.FEATURE_ENABLED
	b.infoMu.Lock()
	d.info.Persistence = feature(on)
	b.infoMu.Unlock()
	if on {
		d.persistenceWarned.Store(false)
		return
	}
	if d.persistenceWarned.CompareAndSwap(false, true) {
		b.log.Warn("nvml: persistence mode is off: this setting is lost when the driver unloads with its last client; enable persistence mode (nvidia-smi -pm 1, or the nvidia-persistenced service)",
			"gpu", d.info.Index, "uuid", d.uuid, "setting", what)
	}
}

// LockClocks locks the GPU (SM) clock to [minMHz, maxMHz] (Volta and newer,
// root). ResetClocks releases it.
func (b *Backend) LockClocks(ctx context.Context, index int, minMHz, maxMHz int) error {
	d, err := b.device(index)
	if err != nil {
		return err
	}
	if minMHz <= 0 || maxMHz < minMHz {
		return fmt.Errorf("%w: clock range %d-%d MHz for GPU %d: want 0 < min <= max", gpu.ErrInvalid, minMHz, maxMHz, index)
	}
	// NVML reads values from 0xffffff00 up as named limits (the board's
	// TDP clock, "unlimited"), not as MHz.
	if int64(maxMHz) >= clockLimitIDStart {
		return fmt.Errorf("%w: clock range %d-%d MHz for GPU %d: values from %d up are NVML's named limits, not clocks; give MHz",
			gpu.ErrInvalid, minMHz, maxMHz, index, clockLimitIDStart)
	}
	var (
		rerr    error
		persist persistence
	)
	err = b.call(ctx, "lock clocks", func() {
		if ret := d.h.SetGpuLockedClocks(uint32(minMHz), uint32(maxMHz)); ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "set locked GPU clocks", ret)
			return
		}
		persist = readPersistence(d.h)
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	b.notePersistence(d, persist, "locked clocks")
	return nil
}

// clockLimitIDStart is NVML_CLOCK_LIMIT_ID_RANGE_START.
const clockLimitIDStart = 0xffffff00

// ResetClocks releases locked GPU clocks.
func (b *Backend) ResetClocks(ctx context.Context, index int) error {
	d, err := b.device(index)
	if err != nil {
		return err
	}
	var rerr error
	err = b.call(ctx, "reset clocks", func() {
		if ret := d.h.ResetGpuLockedClocks(); ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "reset locked GPU clocks", ret)
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// Processes lists every process holding a device: compute (CUDA),
// graphics (Xorg, OpenGL) and MPS clients, once each, since a GPU is free
// for the next tenant only when none is left. Names are resolved with NVML
// when the library can; a process that exited meanwhile keeps an empty
// name. UsedMemoryBytes is absent when NVML cannot tell (MIG without
// privileges, Windows WDDM). On drivers 535.43 to 535.86, whose process
// lists are garbled, it fails wrapping gpu.ErrUnsupported and says to
// upgrade.
func (b *Backend) Processes(ctx context.Context, index int) ([]gpu.Process, error) {
	d, err := b.device(index)
	if err != nil {
		return nil, err
	}
	if b.refuseProcesses != nil {
		return nil, fmt.Errorf("GPU %d: %w", index, b.refuseProcesses)
	}
	var (
		out  []gpu.Process
		rerr error
	)
	err = b.call(ctx, "list processes", func() {
		out, rerr = b.processes(d)
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return out, nil
}

// processes merges the three lists NVML keeps. A list the device does not
// keep (NOT_SUPPORTED) is empty; any other failure fails the call, as a
// partial list could pass a busy GPU as free.
func (b *Backend) processes(d *device) ([]gpu.Process, error) {
	compute, ret := d.h.GetComputeRunningProcesses()
	if ret != gonvml.SUCCESS {
		return nil, b.controlErr(d, "get compute processes", ret)
	}
	graphics, ret := d.h.GetGraphicsRunningProcesses()
	if ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
		return nil, b.controlErr(d, "get graphics processes", ret)
	}
	var mps []gonvml.ProcessInfo
	if b.has[symMPSProcesses] {
		if mps, ret = d.h.GetMPSComputeRunningProcesses(); ret != gonvml.SUCCESS && ret != gonvml.ERROR_NOT_SUPPORTED {
			return nil, b.controlErr(d, "get MPS processes", ret)
		}
	}
	out := make([]gpu.Process, 0, len(compute)+len(graphics)+len(mps))
	at := make(map[int]int, cap(out)) // PID -> position in out
	for _, list := range [][]gonvml.ProcessInfo{compute, graphics, mps} {
		for _, p := range list {
			pid := int(p.Pid)
			mem := gpu.Optional[uint64]{}
			if p.UsedGpuMemory != math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE
				mem = gpu.Some(p.UsedGpuMemory)
			}
			if i, seen := at[pid]; seen {
				// A process with compute and graphics contexts is listed
				// in both with the same memory: count it once.
				if mem.Valid && (!out[i].UsedMemoryBytes.Valid || mem.Value > out[i].UsedMemoryBytes.Value) {
					out[i].UsedMemoryBytes = mem
				}
				continue
			}
			gp := gpu.Process{PID: pid, UsedMemoryBytes: mem}
			if b.has[symProcessName] {
				if name, ret := b.lib.SystemGetProcessName(pid); ret == gonvml.SUCCESS {
					gp.Name = name
				}
			}
			at[pid] = len(out)
			out = append(out, gp)
		}
	}
	return out, nil
}

// SetMIG enables or disables MIG mode (A100, A30, H100 and newer; root).
// The change may stay pending until the GPU is reset; SetMIG then fails
// and says so.
func (b *Backend) SetMIG(ctx context.Context, index int, enabled bool) error {
	d, err := b.device(index)
	if err != nil {
		return err
	}
	mode := gonvml.DEVICE_MIG_DISABLE
	if enabled {
		mode = gonvml.DEVICE_MIG_ENABLE
	}
	var (
		rerr     error
		minor    int
		minorRet gonvml.Return
	)
	err = b.call(ctx, "set MIG mode", func() {
		activation, ret := d.h.SetMigMode(mode)
		if ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "set MIG mode", ret)
			return
		}
		if activation != gonvml.SUCCESS {
			rerr = fmt.Errorf("GPU %d: MIG mode change is pending: stop its processes and reset it (nvidia-smi -r -i %d), or reboot: %w",
				index, index, Error{Op: "activate MIG mode", Code: activation})
			return
		}
		// The device node may change with the mode; isolation hands
		// /dev/nvidiaN to containers, so it must be read again.
		minor, minorRet = d.h.GetMinorNumber()
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	b.infoMu.Lock()
	d.info.MIG = feature(enabled)
	if minorRet == gonvml.SUCCESS {
		d.info.Minor = minor
	} else {
		d.info.Minor = -1 // unknown rather than another GPU's node
	}
	b.infoMu.Unlock()
	// Some readings (utilization) are unsupported only while MIG is on:
	// probe everything again, but what the caller turned off.
	d.skip.Store(uint32(b.optedOut))
	b.log.Info("nvml MIG mode set", "gpu", index, "enabled", enabled)
	return nil
}

// controlErr wraps a failed control call with the device it concerns.
func (b *Backend) controlErr(d *device, op string, ret gonvml.Return) error {
	return fmt.Errorf("GPU %d (%s): %w", d.info.Index, d.uuid, Error{Op: op, Code: ret})
}
