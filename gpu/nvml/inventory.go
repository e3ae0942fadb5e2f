//go:build cgo

package nvml

import (
	"errors"
	"fmt"
	"strings"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpufarm/gpufarm/gpu"
)

// discover enumerates the GPUs and probes each. It returns one
// *gpu.DeviceError per device that cannot be used at all.
func (b *Backend) discover() ([]*device, []error) {
	n, ret := b.lib.DeviceGetCount()
	if ret != gonvml.SUCCESS {
		return nil, []error{nvErr("count devices", ret)}
	}
	devs := make([]*device, 0, n)
	var errs []error
	for i := 0; i < n; i++ {
		d, err := b.discoverOne(i)
		if err != nil {
			// A GPU that cannot be read (typically one that fell off its
			// riser) stays in the list as a stub whose every call fails,
			// so that the others keep their indexes and the node runs on.
			d.broken = unreadable(i, err)
			d.info = gpu.Device{Index: i, UUID: d.uuid, Name: d.info.Name, Minor: -1}
			if d.info.Name == "" {
				d.info.Name = "unreadable GPU"
			}
			errs = append(errs, &gpu.DeviceError{Index: i, UUID: d.uuid, Err: d.broken})
		}
		devs = append(devs, d)
	}
	return devs, errs
}

// unreadable is the error of a GPU discovery could not read. A GPU this
// process may not open is not lost: it needs access, not a reset.
func unreadable(i int, err error) error {
	if errors.Is(err, gpu.ErrPermission) {
		return fmt.Errorf("GPU %d may not be opened by this process: give it access to the GPU's /dev/nvidiaN (device cgroup, container device list) or run as root: %w", i, err)
	}
	return fmt.Errorf("%w: GPU %d could not be read at discovery: %w", gpu.ErrDeviceLost, i, err)
}

// prober records the outcome of optional NVML calls for one device:
// NOT_SUPPORTED means absent; a lost GPU fails the device; anything else
// is logged and treated as absent.
type prober struct {
	b    *Backend
	d    *device
	lost error
}

// ok reports whether ret is SUCCESS and notes what a failure means.
func (p *prober) ok(op string, ret gonvml.Return) bool {
	switch ret {
	case gonvml.SUCCESS:
		return true
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_FUNCTION_NOT_FOUND:
		return false
	case gonvml.ERROR_GPU_IS_LOST:
		if p.lost == nil {
			p.lost = Error{Op: op, Code: ret}
		}
		return false
	default:
		p.b.log.Warn("nvml probe failed; treating the feature as absent", "gpu", p.d.info.Index, "op", op, "err", Error{Op: op, Code: ret})
		return false
	}
}

func (b *Backend) discoverOne(i int) (*device, error) {
	d := &device{}
	d.skip.Store(uint32(b.optedOut))
	d.info.Index = i
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret != gonvml.SUCCESS {
		return d, nvErr("get device handle", ret)
	}
	d.h = h
	// Required: without a UUID or a name the device cannot be addressed
	// or shown.
	uuid, ret := h.GetUUID()
	if ret != gonvml.SUCCESS {
		return d, nvErr("get UUID", ret)
	}
	d.uuid, d.info.UUID = uuid, uuid
	name, ret := h.GetName()
	if ret != gonvml.SUCCESS {
		return d, nvErr("get name", ret)
	}
	d.info.Name = name

	p := &prober{b: b, d: d}
	info := &d.info
	brand, ret := h.GetBrand()
	brandOK := p.ok("get brand", ret)
	if major, minor, ret := h.GetCudaComputeCapability(); p.ok("get compute capability", ret) {
		info.ComputeCapability = gpu.ComputeCapability{Major: major, Minor: minor}
	}
	arch, ret := h.GetArchitecture()
	archOK := p.ok("get architecture", ret)
	info.Architecture = architecture(arch, archOK, info.ComputeCapability)
	if cur, _, ret := h.GetMigMode(); p.ok("get MIG mode", ret) {
		info.MIG = feature(cur == gonvml.DEVICE_MIG_ENABLE)
	}
	b.discoverMemory(p)
	if s, ret := h.GetSerial(); p.ok("get serial", ret) {
		info.Serial = strings.TrimSpace(s)
	}
	if s, ret := h.GetVbiosVersion(); p.ok("get VBIOS version", ret) {
		info.VBIOS = strings.TrimSpace(s)
	}
	if pci, ret := h.GetPciInfo(); p.ok("get PCI info", ret) {
		info.PCIDeviceID = pci.PciDeviceId
		info.PCIBusID = pciBusID(pci)
	}
	info.Class = classify(brand, brandOK, name, info.PCIDeviceID)
	if g, ret := h.GetCurrPcieLinkGeneration(); p.ok("get current PCIe generation", ret) {
		info.LinkCurrent.Gen = g
	}
	if w, ret := h.GetCurrPcieLinkWidth(); p.ok("get current PCIe width", ret) {
		info.LinkCurrent.Width = w
	}
	// The max generation and width are the lower of what the GPU and its
	// slot can do (NVML's definition); the GPU's own generation tells a
	// slot held at gen 1 from a card fused to it.
	if g, ret := h.GetMaxPcieLinkGeneration(); p.ok("get max PCIe generation", ret) {
		info.LinkMax.Gen = g
	}
	if w, ret := h.GetMaxPcieLinkWidth(); p.ok("get max PCIe width", ret) {
		info.LinkMax.Width = w
	}
	if b.has[symGPUMaxLinkGen] {
		if g, ret := h.GetGpuMaxPcieLinkGeneration(); p.ok("get GPU max PCIe generation", ret) {
			info.LinkMaxGPUGen = g
		}
	}
	if info.LinkMax.Gen > 0 && info.LinkMax.Gen < info.LinkMaxGPUGen {
		info.LinkMaxHostGen = info.LinkMax.Gen // the host is the lower one
	}
	if lim, op, ret := readPowerLimits(h); p.ok(op, ret) {
		info.PowerLimit = gpu.Some(lim)
	}
	if cur, _, ret := h.GetEccMode(); p.ok("get ECC mode", ret) {
		info.ECC = feature(cur == gonvml.FEATURE_ENABLED)
	}
	if m, ret := h.GetPersistenceMode(); p.ok("get persistence mode", ret) {
		info.Persistence = feature(m == gonvml.FEATURE_ENABLED)
	}
	info.Minor = -1 // absent: never point at another GPU's /dev/nvidiaN
	if m, ret := h.GetMinorNumber(); p.ok("get minor number", ret) {
		info.Minor = m
	}
	if p.lost == nil {
		b.probeTelemetry(p)
	}
	if p.lost != nil {
		return d, p.lost
	}
	b.log.Debug("nvml gpu discovered", "gpu", i, "uuid", uuid, "name", name, "class", info.Class.String(),
		"link", info.LinkCurrent.String(), "link_max", info.LinkMax.String(), "unsupported_probes", probe(d.skip.Load()).String())
	return d, nil
}

// discoverMemory reads the memory size, and the driver's reserve where
// the driver tells it. It runs after the MIG mode is known.
func (b *Backend) discoverMemory(p *prober) {
	h, info := p.d.h, &p.d.info
	var ret gonvml.Return
	if b.has[symMemoryV2] {
		var m gonvml.Memory_v2
		switch m, ret = h.GetMemoryInfo_v2(); ret {
		case gonvml.SUCCESS:
			p.d.memV2 = true
			info.MemoryBytes = m.Total
			info.ReservedMemoryBytes = gpu.Some(m.Reserved)
			return
		case gonvml.ERROR_GPU_IS_LOST:
			p.ok("get memory info v2", ret)
			return
		}
		// Version 1 then: 510.39.01 exports v2 but answers
		// FUNCTION_NOT_FOUND, and a board may refuse v2 alone.
	}
	var m gonvml.Memory
	if m, ret = h.GetMemoryInfo(); ret == gonvml.SUCCESS {
		info.MemoryBytes = m.Total
		return
	}
	if !b.memoryFromMIGProfile(p, "get memory info", ret) {
		p.ok("get memory info", ret)
	}
}

// memoryFromMIGProfile: with MIG on, NVML gives a whole GPU's memory only
// to privileged callers. The full-GPU instance profile still tells what a
// job can get, which is what MemoryBytes is for; it reports whether that
// worked.
func (b *Backend) memoryFromMIGProfile(p *prober, op string, ret gonvml.Return) bool {
	if ret != gonvml.ERROR_NO_PERMISSION || p.d.info.MIG != gpu.FeatureEnabled {
		return false
	}
	prof, pret := p.d.h.GetGpuInstanceProfileInfo(gonvml.GPU_INSTANCE_PROFILE_7_SLICE)
	if pret != gonvml.SUCCESS || prof.MemorySizeMB == 0 {
		b.log.Warn("nvml: memory of a MIG GPU unreadable without privileges; run as root to read it",
			"gpu", p.d.info.Index, "err", Error{Op: op, Code: ret})
		return false
	}
	p.d.info.MemoryBytes = prof.MemorySizeMB << 20
	b.log.Info("nvml: memory of a MIG GPU taken from its full-GPU instance profile (reading it needs root)",
		"gpu", p.d.info.Index, "memory_mib", prof.MemorySizeMB)
	return true
}

// readPowerLimits reads the limit in force and its constraints, for
// discovery and for PowerLimits alike. The limit in force is NVML's
// enforced one: the management limit may be overridden by others. A
// default the device does not report stays 0: a guess would make a reset
// restore the wrong value without a word. On failure it names the NVML
// call that failed and its code; otherwise ret is SUCCESS.
func readPowerLimits(h gonvml.Device) (lim gpu.PowerLimits, op string, ret gonvml.Return) {
	minMW, maxMW, ret := h.GetPowerManagementLimitConstraints()
	if ret != gonvml.SUCCESS {
		return gpu.PowerLimits{}, "get power limit constraints", ret
	}
	op = "get enforced power limit"
	cur, ret := h.GetEnforcedPowerLimit()
	if ret == gonvml.ERROR_NOT_SUPPORTED {
		op = "get power limit"
		cur, ret = h.GetPowerManagementLimit()
	}
	if ret != gonvml.SUCCESS {
		return gpu.PowerLimits{}, op, ret
	}
	lim = gpu.PowerLimits{CurrentW: mwToW(cur), MinW: mwToW(minMW), MaxW: mwToW(maxMW)}
	if def, ret := h.GetPowerManagementDefaultLimit(); ret == gonvml.SUCCESS {
		lim.DefaultW = mwToW(def)
	}
	return lim, "", gonvml.SUCCESS
}

func mwToW(mw uint32) float64 { return float64(mw) / 1000 }

func feature(enabled bool) gpu.Feature {
	if enabled {
		return gpu.FeatureEnabled
	}
	return gpu.FeatureDisabled
}

// pciBusID normalises NVML's bus id. When the string is empty (go-nvml's
// dgxa100 mock, some vGPU setups) it is rebuilt from the numeric fields;
// when those are all zero too the id is unknown and left empty, since no
// GPU sits at 0000:00:00.0 (the host bridge's address).
func pciBusID(pci gonvml.PciInfo) string {
	if s := cString(pci.BusId[:]); s != "" {
		if id, err := gpu.NormalizePCIBusID(s); err == nil {
			return id
		}
	}
	if s := cString(pci.BusIdLegacy[:]); s != "" {
		if id, err := gpu.NormalizePCIBusID(s); err == nil {
			return id
		}
	}
	if pci.Domain == 0 && pci.Bus == 0 && pci.Device == 0 {
		return ""
	}
	return fmt.Sprintf("%04x:%02x:%02x.0", pci.Domain, pci.Bus, pci.Device)
}

// cString converts a NUL-terminated C char array. It takes its elements
// one by one so it compiles whether go-nvml declares them uint8 (v0.13.0)
// or int8 (v0.13.1 on).
func cString[T ~uint8 | ~int8](a []T) string {
	buf := make([]byte, 0, len(a))
	for _, c := range a {
		if c == 0 {
			break
		}
		buf = append(buf, byte(c))
	}
	return string(buf)
}

// architecture names NVML's architecture, falling back to the compute
// capability when the driver does not know it.
func architecture(a gonvml.DeviceArchitecture, ok bool, cc gpu.ComputeCapability) gpu.Architecture {
	if ok {
		switch a {
		case gonvml.DEVICE_ARCH_KEPLER:
			return gpu.ArchKepler
		case gonvml.DEVICE_ARCH_MAXWELL:
			return gpu.ArchMaxwell
		case gonvml.DEVICE_ARCH_PASCAL:
			return gpu.ArchPascal
		case gonvml.DEVICE_ARCH_VOLTA:
			return gpu.ArchVolta
		case gonvml.DEVICE_ARCH_TURING:
			return gpu.ArchTuring
		case gonvml.DEVICE_ARCH_AMPERE:
			return gpu.ArchAmpere
		case gonvml.DEVICE_ARCH_ADA:
			return gpu.ArchAda
		case gonvml.DEVICE_ARCH_HOPPER:
			return gpu.ArchHopper
		case gonvml.DEVICE_ARCH_BLACKWELL:
			return gpu.ArchBlackwell
		}
	}
	switch {
	case cc.Major >= 10:
		return gpu.ArchBlackwell
	case cc.Major == 9:
		return gpu.ArchHopper
	case cc.Major == 8 && cc.Minor == 9:
		return gpu.ArchAda
	case cc.Major == 8:
		return gpu.ArchAmpere
	case cc.Major == 7 && cc.Minor == 5:
		return gpu.ArchTuring
	case cc.Major == 7:
		return gpu.ArchVolta
	case cc.Major == 6:
		return gpu.ArchPascal
	case cc.Major == 5:
		return gpu.ArchMaxwell
	case cc.Major == 3:
		return gpu.ArchKepler
	default:
		return gpu.ArchUnknown
	}
}
