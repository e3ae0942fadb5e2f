package sim

import (
	"fmt"
	"strings"

	"github.com/gpufarm/gpufarm/gpu"
)

// Preset is a named rig: one Card per device, in enumeration order.
type Preset struct {
	Name        string
	Description string
	Cards       []Card
}

// Preset names.
const (
	PresetRTX3080Riser = "rtx3080-riser"
	PresetRTX3090      = "rtx3090"
	PresetA40          = "a40"
	PresetCMP170HX     = "cmp170hx"
	PresetA100         = "a100"
	PresetMixed        = "mixed"
)

// Presets returns the built-in rigs, freshly built on every call so that
// callers may change them.
func Presets() []Preset {
	return []Preset{
		rtx3080RiserPreset(),
		rtx3090Preset(),
		a40Preset(),
		cmp170hxPreset(),
		a100Preset(),
		mixedPreset(),
	}
}

// PresetByName returns the built-in rig of that name. An unknown name gives
// an error wrapping gpu.ErrNotFound that lists the valid names.
func PresetByName(name string) (Preset, error) {
	ps := Presets()
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return Preset{}, fmt.Errorf("%w: no simulator preset %q; use one of %s", gpu.ErrNotFound, name, strings.Join(names, ", "))
}

// busIDs places boards on the given PCI buses, device 0 function 0.
func busIDs(cards []Card, buses ...int) []Card {
	for i := range cards {
		cards[i].PCIBusID = fmt.Sprintf("0000:%02x:00.0", buses[i])
	}
	return cards
}

func repeat(n int, c Card) []Card {
	cards := make([]Card, n)
	for i := range cards {
		cards[i] = c
	}
	return cards
}

// riser3080 is an RTX 3080 on a USB x1 riser in one of a mining board's x1
// slots, which the rig's BIOS forces to gen 1: the classic Ethereum rig.
// Its driver does not expose the energy counter (NOT_SUPPORTED), so
// consumers must integrate power.
func riser3080() Card {
	c := RTX3080()
	c.Slot = gpu.Link{Gen: 1, Width: 1}
	c.Riser = 1
	c.EnergyCounter = false
	return c
}

// riser3080InX16 is the same card on the same riser in the board's one x16
// slot: NVML's max width is then the slot's 16 and only the trained width
// shows the riser.
func riser3080InX16() Card {
	c := riser3080()
	c.Slot.Width = 16
	return c
}

// slot3090 is an RTX 3090 in a full-size gen3 x16 slot.
func slot3090() Card {
	c := RTX3090()
	c.Slot = gpu.Link{Gen: 3, Width: 16}
	return c
}

func rtx3080RiserPreset() Preset {
	return Preset{
		Name:        PresetRTX3080Riser,
		Description: "8x GeForce RTX 3080 10 GB on PCIe gen1 x1 risers in x1 slots (ex-Ethereum rig, no energy counter)",
		Cards:       busIDs(repeat(8, riser3080()), 1, 2, 3, 4, 5, 6, 7, 8),
	}
}

func rtx3090Preset() Preset {
	return Preset{
		Name:        PresetRTX3090,
		Description: "6x GeForce RTX 3090 24 GB in PCIe gen3 x16 slots",
		Cards:       busIDs(repeat(6, slot3090()), 0x01, 0x21, 0x41, 0x61, 0x81, 0xc1),
	}
}

func a40Preset() Preset {
	return Preset{
		Name:        PresetA40,
		Description: "8x NVIDIA A40 48 GB, PCIe gen4 x16, ECC on",
		// The first eight bus ids of the a40_x10 fixture.
		Cards: busIDs(repeat(8, A40()), 0x4f, 0x52, 0x53, 0x56, 0x57, 0xce, 0xd1, 0xd2),
	}
}

func cmp170hxPreset() Preset {
	return Preset{
		Name:        PresetCMP170HX,
		Description: "8x NVIDIA CMP 170HX 8 GB HBM2e, PCIe gen1 x4, power limit locked at 250 W",
		Cards:       busIDs(repeat(8, CMP170HX()), 1, 2, 3, 4, 5, 6, 7, 8),
	}
}

func a100Preset() Preset {
	return Preset{
		Name:        PresetA100,
		Description: "DGX A100: 8x NVIDIA A100-SXM4-40GB, ECC on, MIG capable (disabled)",
		// A DGX A100's GPU bus ids.
		Cards: busIDs(repeat(8, A100SXM440GB()), 0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd),
	}
}

func mixedPreset() Preset {
	cards := []Card{riser3080InX16(), riser3080(), slot3090(), slot3090(), A40(), A40(), CMP170HX(), CMP170HX()}
	return Preset{
		Name:        PresetMixed,
		Description: "mixed rig: 2x RTX 3080 on gen1 x1 risers (one in an x16 slot), 2x RTX 3090 gen3 x16, 2x A40, 2x CMP 170HX",
		Cards:       busIDs(cards, 1, 2, 3, 4, 5, 6, 7, 8),
	}
}
