package gpu

import (
	"fmt"
	"strconv"
	"strings"
)

// Class says what market a card was built for. It decides defaults that the
// hardware does not report directly: a consumer card has no ECC, a CMP card
// has a throttled bus and throttled FP32.
type Class int

const (
	ClassUnknown     Class = iota
	ClassDatacenter        // A100, H100, A40, L40S, T4 ...
	ClassWorkstation       // RTX A6000, RTX 6000 Ada, Quadro ...
	ClassConsumer          // GeForce
	ClassMining            // CMP HX: mining-only silicon
)

var classNames = [...]string{"unknown", "datacenter", "workstation", "consumer", "mining"}

func (c Class) String() string {
	if c < 0 || int(c) >= len(classNames) {
		return "Class(" + strconv.Itoa(int(c)) + ")"
	}
	return classNames[c]
}

// Architecture is the GPU micro-architecture name as NVIDIA spells it.
type Architecture string

const (
	ArchUnknown   Architecture = ""
	ArchKepler    Architecture = "Kepler"
	ArchMaxwell   Architecture = "Maxwell"
	ArchPascal    Architecture = "Pascal"
	ArchVolta     Architecture = "Volta"
	ArchTuring    Architecture = "Turing"
	ArchAmpere    Architecture = "Ampere"
	ArchAda       Architecture = "Ada Lovelace"
	ArchHopper    Architecture = "Hopper"
	ArchBlackwell Architecture = "Blackwell"
)

// ComputeCapability is the CUDA compute capability, e.g. 8.6.
type ComputeCapability struct {
	Major, Minor int
}

func (c ComputeCapability) String() string {
	if c.Major == 0 && c.Minor == 0 {
		return "unknown"
	}
	return strconv.Itoa(c.Major) + "." + strconv.Itoa(c.Minor)
}

// AtLeast reports whether c is major.minor or newer.
func (c ComputeCapability) AtLeast(major, minor int) bool {
	return c.Major > major || (c.Major == major && c.Minor >= minor)
}

// Link is a PCIe link: generation (1 to 6) and lane count. Zero means unknown.
type Link struct {
	Gen   int
	Width int
}

func (l Link) String() string {
	if l.Gen == 0 && l.Width == 0 {
		return "unknown"
	}
	return fmt.Sprintf("gen%d x%d", l.Gen, l.Width)
}

// Feature is the state of a feature that some devices lack. The zero value
// is FeatureUnsupported, so a backend that never probed reports "absent".
type Feature int

const (
	FeatureUnsupported Feature = iota
	FeatureDisabled
	FeatureEnabled
)

func (f Feature) String() string {
	switch f {
	case FeatureDisabled:
		return "disabled"
	case FeatureEnabled:
		return "enabled"
	default:
		return "unsupported"
	}
}

// PowerLimits are a device's power limit and its constraints, in watts.
type PowerLimits struct {
	// CurrentW is the limit in force (NVML's enforced limit).
	CurrentW float64
	// DefaultW is the board's default limit, or 0 when the device does not
	// report it: a reset then has nothing to restore to, and no value is
	// guessed in its place.
	DefaultW float64
	MinW     float64
	MaxW     float64
}

// Contains reports whether w is within the device's constraints.
func (p PowerLimits) Contains(w float64) bool { return w >= p.MinW && w <= p.MaxW }

// HasDefault reports whether the device told its default limit.
func (p PowerLimits) HasDefault() bool { return p.DefaultW > 0 }

// Device is the inventory record of one GPU, as discovered. Fields a device
// does not report are left at their "absent" value: an empty string, a zero
// Link, FeatureUnsupported or an invalid Optional.
type Device struct {
	Index             int // the backend's enumeration index (nvidia-smi's)
	UUID              string
	Name              string
	Class             Class
	Architecture      Architecture
	ComputeCapability ComputeCapability
	MemoryBytes       uint64
	Serial            string // empty on boards without an inforom (GeForce)
	VBIOS             string
	// PCIBusID is normalised to domain:bus:device.function with a 4-digit
	// lower-case domain, e.g. "0000:0a:00.0", the form sysfs and CDI use.
	PCIBusID    string
	PCIDeviceID uint32 // device<<16 | vendor, e.g. 0x220610de for an RTX 3080
	// LinkCurrent is the link as trained now. At idle it often shows gen 1
	// through link power saving; the width does not drop, so a width below
	// LinkMax's is lanes a riser (or a bad seat) does not wire.
	LinkCurrent Link
	// LinkMax is the best link this device and its slot can train to: the
	// lower generation and the lower width of GPU and slot (NVML's max "of
	// device and system"). A card in an x1 slot reads width 1; an x1 riser
	// in an x16 slot still reads 16.
	LinkMax Link
	// LinkMaxGPUGen is the best generation of the GPU itself, whatever its
	// slot; 0 when unknown (NVML before R510). A CMP board fused to gen 1
	// reads 1, an RTX 3080 reads 4 even in a gen 1 slot.
	LinkMaxGPUGen int
	// LinkMaxHostGen is the best generation the host side (slot, chipset,
	// BIOS setting) allows, when it is known: NVML reports only the lower
	// of GPU and host, so it is known when the host is the lower one and
	// 0 otherwise (the host then allows at least LinkMax.Gen).
	LinkMaxHostGen int
	PowerLimit     Optional[PowerLimits]
	ECC            Feature
	MIG            Feature
	// Persistence is the driver's persistence mode (Linux). When it is
	// off, the driver unloads with the last client and forgets power
	// limits and locked clocks; the next client also pays the driver's
	// start-up.
	Persistence Feature
	// ReservedMemoryBytes is memory the driver and firmware set aside,
	// part of MemoryBytes that no job can use; absent when the driver does
	// not report it (before R510).
	ReservedMemoryBytes Optional[uint64]
	// Minor is N in /dev/nvidiaN; -1 when the backend cannot tell (0 is a
	// real minor number).
	Minor int
}

// DevicePath is the device node of this GPU, /dev/nvidiaN, or "" when the
// minor number is unknown.
func (d Device) DevicePath() string {
	if d.Minor < 0 {
		return ""
	}
	return "/dev/nvidia" + strconv.Itoa(d.Minor)
}

// NormalizePCIBusID turns the forms NVML and nvidia-smi print
// ("00000000:0A:00.0", "0000:0a:00.0", "0A:00.0") into domain:bus:device.function
// with a 4-digit lower-case domain. It reports ErrInvalid for anything else.
func NormalizePCIBusID(id string) (string, error) {
	s := strings.ToLower(strings.TrimRight(strings.TrimSpace(id), "\x00"))
	parts := strings.Split(s, ":")
	var domain, bus, devfn string
	switch len(parts) {
	case 3:
		domain, bus, devfn = parts[0], parts[1], parts[2]
	case 2:
		domain, bus, devfn = "0", parts[0], parts[1]
	default:
		return "", fmt.Errorf("%w: PCI bus id %q: want domain:bus:device.function", ErrInvalid, id)
	}
	dev, fn, ok := strings.Cut(devfn, ".")
	if !ok {
		return "", fmt.Errorf("%w: PCI bus id %q: want domain:bus:device.function", ErrInvalid, id)
	}
	d, err1 := strconv.ParseUint(domain, 16, 32)
	b, err2 := strconv.ParseUint(bus, 16, 8)
	v, err3 := strconv.ParseUint(dev, 16, 5)
	f, err4 := strconv.ParseUint(fn, 16, 3)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || d > 0xffff {
		return "", fmt.Errorf("%w: PCI bus id %q: want hex domain:bus:device.function", ErrInvalid, id)
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", d, b, v, f), nil
}
