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
	return lim, rerr
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
	var rerr error
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
		}
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	b.infoMu.Lock()
	if d.info.PowerLimit.Valid {
		d.info.PowerLimit.Value.CurrentW = mw / 1000
	}
	b.infoMu.Unlock()
	b.log.Info("nvml power limit set", "gpu", index, "watts", mw/1000)
	return nil
}

// LockClocks locks the GPU (SM) clock to [minMHz, maxMHz] (Volta and newer,
// root). ResetClocks releases it.
func (b *Backend) LockClocks(ctx context.Context, index int, minMHz, maxMHz int) error {
	d, err := b.device(index)
	if err != nil {
		return err
	}
	if minMHz <= 0 || maxMHz < minMHz || int64(maxMHz) > math.MaxUint32 {
		return fmt.Errorf("%w: clock range %d-%d MHz for GPU %d: want 0 < min <= max", gpu.ErrInvalid, minMHz, maxMHz, index)
	}
	var rerr error
	err = b.call(ctx, "lock clocks", func() {
		if ret := d.h.SetGpuLockedClocks(uint32(minMHz), uint32(maxMHz)); ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "set locked GPU clocks", ret)
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

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

// Processes lists the compute processes on a device. Names are resolved
// with NVML when the library can; a process that exited meanwhile keeps an
// empty name. UsedMemoryBytes is absent when NVML cannot tell (MIG without
// privileges, Windows WDDM).
func (b *Backend) Processes(ctx context.Context, index int) ([]gpu.Process, error) {
	d, err := b.device(index)
	if err != nil {
		return nil, err
	}
	var (
		out  []gpu.Process
		rerr error
	)
	err = b.call(ctx, "list processes", func() {
		procs, ret := d.h.GetComputeRunningProcesses()
		if ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "get compute processes", ret)
			return
		}
		out = make([]gpu.Process, 0, len(procs))
		for _, p := range procs {
			gp := gpu.Process{PID: int(p.Pid)}
			if p.UsedGpuMemory != math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE
				gp.UsedMemoryBytes = gpu.Some(p.UsedGpuMemory)
			}
			if b.procNames {
				if name, ret := b.lib.SystemGetProcessName(int(p.Pid)); ret == gonvml.SUCCESS {
					gp.Name = name
				}
			}
			out = append(out, gp)
		}
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
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
	var rerr error
	err = b.call(ctx, "set MIG mode", func() {
		activation, ret := d.h.SetMigMode(mode)
		if ret != gonvml.SUCCESS {
			rerr = b.controlErr(d, "set MIG mode", ret)
			return
		}
		if activation != gonvml.SUCCESS {
			rerr = fmt.Errorf("GPU %d: MIG mode change is pending: stop its processes and reset it (nvidia-smi -r -i %d), or reboot: %w",
				index, index, Error{Op: "activate MIG mode", Code: activation})
		}
	})
	if err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	b.infoMu.Lock()
	d.info.MIG = feature(enabled)
	b.infoMu.Unlock()
	// Some readings (utilization) are unsupported only while MIG is on:
	// probe everything again.
	d.skip.Store(0)
	b.log.Info("nvml MIG mode set", "gpu", index, "enabled", enabled)
	return nil
}

// controlErr wraps a failed control call with the device it concerns.
func (b *Backend) controlErr(d *device, op string, ret gonvml.Return) error {
	return fmt.Errorf("GPU %d (%s): %w", d.info.Index, d.uuid, Error{Op: op, Code: ret})
}
