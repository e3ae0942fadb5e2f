package sim_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// fixtureDir holds the real nvidia-smi dumps the models cite, kept in the
// module (provenance in its SOURCES.txt).
const fixtureDir = "../testdata/nvidia-smi"

// smiCard is what a test needs from the first GPU of an nvidia-smi dump.
type smiCard struct {
	memoryMiB                         uint64
	defaultW, minW, maxW, idleDrawW   float64
	pciDeviceID                       uint32
	vbios                             string
	linkMaxGen, linkMaxWidth          int
	linkIdleGen, linkIdleWidth        int
	hasSerial, eccEnabled, migCapable bool
	displayActive                     bool
	// Text dumps only: the card's own max generation, persistence mode
	// and the driver's reserve.
	deviceMaxGen int
	persistence  string
	reservedMiB  uint64
}

// readSMI parses the first GPU of a text (`nvidia-smi -q`) or XML
// (`nvidia-smi -q -x`) dump. The dumps are part of the module, so a
// missing one fails the test.
func readSMI(t *testing.T, name string) smiCard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureDir, name))
	require.NoError(t, err)
	s := string(raw)
	if strings.HasSuffix(name, ".xml") {
		return parseSMIXML(t, s)
	}
	return parseSMIText(t, s)
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	require.NoError(t, err, "number %q", s)
	return f
}

// field finds "Key : value" after the section header, in the first GPU.
func textField(t *testing.T, s, section, key string) string {
	t.Helper()
	if section != "" {
		i := strings.Index(s, "\n    "+section+"\n")
		require.GreaterOrEqual(t, i, 0, "section %q", section)
		s = s[i:]
	}
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(key) + `\s+: (.*)$`).FindStringSubmatch(s)
	require.NotNil(t, m, "field %q in %q", key, section)
	return strings.TrimSpace(m[1])
}

func parseSMIText(t *testing.T, s string) smiCard {
	var c smiCard
	c.memoryMiB = uint64(num(t, strings.TrimSuffix(textField(t, s, "FB Memory Usage", "Total"), " MiB")))
	power := "GPU Power Readings"
	if !strings.Contains(s, "\n    "+power+"\n") {
		power = "Power Readings"
	}
	w := func(key string) float64 { return num(t, strings.TrimSuffix(textField(t, s, power, key), " W")) }
	c.defaultW, c.minW, c.maxW, c.idleDrawW = w("Default Power Limit"), w("Min Power Limit"), w("Max Power Limit"), w("Power Draw")
	id, err := strconv.ParseUint(strings.TrimPrefix(textField(t, s, "PCI", "Device Id"), "0x"), 16, 32)
	require.NoError(t, err)
	c.pciDeviceID = uint32(id)
	c.vbios = textField(t, s, "", "VBIOS Version")
	link := s[strings.Index(s, "GPU Link Info"):]
	c.linkMaxGen = int(num(t, textField(t, link, "", "Max")))
	c.linkIdleGen = int(num(t, textField(t, link, "", "Current")))
	width := link[strings.Index(link, "Link Width"):]
	c.linkMaxWidth = int(num(t, strings.TrimSuffix(textField(t, width, "", "Max"), "x")))
	c.linkIdleWidth = int(num(t, strings.TrimSuffix(textField(t, width, "", "Current"), "x")))
	c.hasSerial = textField(t, s, "", "Serial Number") != "N/A"
	c.eccEnabled = textField(t, s, "ECC Mode", "Current") == "Enabled"
	c.migCapable = textField(t, s, "MIG Mode", "Current") != "N/A"
	c.displayActive = textField(t, s, "", "Display Active") == "Enabled"
	c.deviceMaxGen = int(num(t, textField(t, link, "", "Device Max")))
	c.persistence = textField(t, s, "", "Persistence Mode")
	c.reservedMiB = uint64(num(t, strings.TrimSuffix(textField(t, s, "FB Memory Usage", "Reserved"), " MiB")))
	return c
}

func xmlField(t *testing.T, s, section, tag string) string {
	t.Helper()
	if section != "" {
		i := strings.Index(s, "<"+section+">")
		require.GreaterOrEqual(t, i, 0, "section %q", section)
		s = s[i:]
	}
	m := regexp.MustCompile(`<` + tag + `>([^<]*)</` + tag + `>`).FindStringSubmatch(s)
	require.NotNil(t, m, "tag %q in %q", tag, section)
	return strings.TrimSpace(m[1])
}

func parseSMIXML(t *testing.T, s string) smiCard {
	var c smiCard
	c.memoryMiB = uint64(num(t, strings.TrimSuffix(xmlField(t, s, "fb_memory_usage", "total"), " MiB")))
	power := "gpu_power_readings"
	if !strings.Contains(s, "<"+power+">") {
		power = "power_readings"
	}
	w := func(tag string) float64 { return num(t, strings.TrimSuffix(xmlField(t, s, power, tag), " W")) }
	c.defaultW, c.minW, c.maxW, c.idleDrawW = w("default_power_limit"), w("min_power_limit"), w("max_power_limit"), w("power_draw")
	if id, err := strconv.ParseUint(xmlField(t, s, "pci", "pci_device_id"), 16, 32); err == nil {
		c.pciDeviceID = uint32(id)
	}
	c.vbios = xmlField(t, s, "", "vbios_version")
	c.linkMaxGen = int(num(t, xmlField(t, s, "pcie_gen", "max_link_gen")))
	c.linkIdleGen = int(num(t, xmlField(t, s, "pcie_gen", "current_link_gen")))
	c.linkMaxWidth = int(num(t, strings.TrimSuffix(xmlField(t, s, "link_widths", "max_link_width"), "x")))
	c.linkIdleWidth = int(num(t, strings.TrimSuffix(xmlField(t, s, "link_widths", "current_link_width"), "x")))
	c.hasSerial = xmlField(t, s, "", "serial") != "N/A"
	c.eccEnabled = xmlField(t, s, "ecc_mode", "current_ecc") == "Enabled"
	c.migCapable = xmlField(t, s, "mig_mode", "current_mig") != "N/A"
	c.displayActive = xmlField(t, s, "", "display_active") == "Enabled"
	return c
}

// TestModelsMatchFixtures checks each model's memory, power limits, idle
// draw, identity and idle link against the nvidia-smi dump it cites.
func TestModelsMatchFixtures(t *testing.T) {
	tests := []struct {
		name    string
		card    sim.Card
		fixture string
		// The 40 GB A100 has no dump: only what the 80 GB board shares
		// with it is compared.
		sameBoard bool
		// The RTX 3080 dump is of an LHR board (0x2216); the preset uses
		// the original 0x2206 of an Ethereum-era rig.
		checkDeviceID bool
	}{
		{"RTX 3080", sim.RTX3080(), "rtx3080_driver536.40.xml", true, false},
		{"RTX 3090", sim.RTX3090(), "rtx3090_x2_driver560.35.03.txt", true, true},
		{"A40", sim.A40(), "a40_x10_driver550.127.05.txt", true, true},
		{"A100 SXM4", sim.A100SXM440GB(), "a100-sxm4-80gb_x4_driver555.42.02.txt", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := readSMI(t, tt.fixture)
			c := tt.card
			assert.InDelta(t, want.minW, c.Power.MinW, 1e-9, "min power limit")
			assert.InDelta(t, want.idleDrawW, c.IdleW, 1e-9, "idle draw")
			assert.Equal(t, want.hasSerial, c.HasSerial, "serial")
			assert.Equal(t, want.eccEnabled, c.ECC == gpu.FeatureEnabled, "ECC")
			assert.Equal(t, want.migCapable, c.MIG != gpu.FeatureUnsupported, "MIG capability")
			assert.Equal(t, gpu.Link{Gen: want.linkMaxGen, Width: want.linkMaxWidth}, c.DeviceLink, "device link")
			// A display keeps the link up; headless idle boards drop to gen 1.
			if !want.displayActive {
				assert.Equal(t, want.linkIdleGen < want.linkMaxGen, c.LinkPowerSaving, "idle link drops its generation")
			}
			if tt.sameBoard {
				assert.Equal(t, want.memoryMiB<<20, c.MemoryBytes, "memory")
				assert.InDelta(t, want.defaultW, c.Power.DefaultW, 1e-9, "default power limit")
				assert.InDelta(t, want.maxW, c.Power.MaxW, 1e-9, "max power limit")
				assert.InDelta(t, want.defaultW, c.FullLoadW, 1e-9, "full-load draw is the default limit (TDP)")
				assert.Equal(t, want.vbios, c.VBIOS, "VBIOS")
			}
			if tt.checkDeviceID {
				assert.Equal(t, want.pciDeviceID, c.PCIDeviceID, "PCI device id")
			}
		})
	}
}

// TestModelsMatchFixturePersistenceAndReserve checks what only the text
// dumps print: the card's own max PCIe generation, persistence mode and
// the memory the driver reserves.
func TestModelsMatchFixturePersistenceAndReserve(t *testing.T) {
	tests := []struct {
		name    string
		card    sim.Card
		fixture string
		// The 80 GB A100's reserve says nothing of the 40 GB board's.
		reserve bool
	}{
		{"RTX 3080", sim.RTX3080(), "rtx3080_driver550.54.14.txt", true},
		{"RTX 3090", sim.RTX3090(), "rtx3090_x2_driver560.35.03.txt", true},
		{"A40", sim.A40(), "a40_x10_driver550.127.05.txt", true},
		{"A100 SXM4", sim.A100SXM440GB(), "a100-sxm4-80gb_x4_driver555.42.02.txt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := readSMI(t, tt.fixture)
			c := tt.card
			assert.Equal(t, want.deviceMaxGen, c.DeviceLink.Gen, "the card's own max generation")
			assert.Equal(t, strings.ToLower(want.persistence), c.Persistence.String(), "persistence mode")
			if tt.reserve {
				assert.Equal(t, want.reservedMiB<<20, c.ReservedMemoryBytes, "reserved memory")
			} else {
				assert.Zero(t, c.ReservedMemoryBytes, "unknown, not guessed")
			}
		})
	}
}

func TestPresetInventory(t *testing.T) {
	uuidRE := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	tests := []struct {
		preset      string
		n           int
		name        string
		class       gpu.Class
		cc          gpu.ComputeCapability
		deviceID    uint32
		memoryMiB   uint64
		limits      gpu.PowerLimits
		linkMax     gpu.Link
		linkIdle    gpu.Link
		serial      bool
		ecc, mig    gpu.Feature
		energyValid bool
		// The card's own max generation, the host's when it is the
		// lower, persistence mode and the reserve.
		gpuGen, hostGen int
		persistence     gpu.Feature
		reserved        gpu.Optional[uint64]
	}{
		// x1 slots held at gen 1: NVML's max is the slot's gen1 x1.
		{"rtx3080-riser", 8, "NVIDIA GeForce RTX 3080", gpu.ClassConsumer, gpu.ComputeCapability{Major: 8, Minor: 6}, 0x220610de, 10240,
			gpu.PowerLimits{CurrentW: 320, DefaultW: 320, MinW: 100, MaxW: 336}, gpu.Link{Gen: 1, Width: 1}, gpu.Link{Gen: 1, Width: 1},
			false, gpu.FeatureUnsupported, gpu.FeatureUnsupported, false, 4, 1, gpu.FeatureDisabled, gpu.Some[uint64](239 << 20)},
		{"rtx3090", 6, "NVIDIA GeForce RTX 3090", gpu.ClassConsumer, gpu.ComputeCapability{Major: 8, Minor: 6}, 0x220410de, 24576,
			gpu.PowerLimits{CurrentW: 350, DefaultW: 350, MinW: 100, MaxW: 350}, gpu.Link{Gen: 3, Width: 16}, gpu.Link{Gen: 1, Width: 16},
			false, gpu.FeatureUnsupported, gpu.FeatureUnsupported, true, 4, 3, gpu.FeatureEnabled, gpu.Some[uint64](422 << 20)},
		{"a40", 8, "NVIDIA A40", gpu.ClassDatacenter, gpu.ComputeCapability{Major: 8, Minor: 6}, 0x223510de, 46068,
			gpu.PowerLimits{CurrentW: 300, DefaultW: 300, MinW: 100, MaxW: 300}, gpu.Link{Gen: 4, Width: 16}, gpu.Link{Gen: 1, Width: 16},
			true, gpu.FeatureEnabled, gpu.FeatureUnsupported, true, 4, 0, gpu.FeatureEnabled, gpu.Some[uint64](665 << 20)},
		{"cmp170hx", 8, "NVIDIA CMP 170HX", gpu.ClassMining, gpu.ComputeCapability{Major: 8, Minor: 0}, 0x20c210de, 8192,
			gpu.PowerLimits{CurrentW: 250, DefaultW: 250, MinW: 250, MaxW: 250}, gpu.Link{Gen: 1, Width: 4}, gpu.Link{Gen: 1, Width: 4},
			false, gpu.FeatureUnsupported, gpu.FeatureUnsupported, true, 1, 0, gpu.FeatureDisabled, gpu.Optional[uint64]{}},
		{"a100", 8, "NVIDIA A100-SXM4-40GB", gpu.ClassDatacenter, gpu.ComputeCapability{Major: 8, Minor: 0}, 0x20b010de, 40960,
			gpu.PowerLimits{CurrentW: 400, DefaultW: 400, MinW: 100, MaxW: 400}, gpu.Link{Gen: 4, Width: 16}, gpu.Link{Gen: 4, Width: 16},
			true, gpu.FeatureEnabled, gpu.FeatureDisabled, true, 4, 0, gpu.FeatureEnabled, gpu.Optional[uint64]{}},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			rig := newRig(t, tt.preset, nil)
			devs, err := rig.Devices(context.Background())
			require.NoError(t, err)
			require.Len(t, devs, tt.n)
			dst := samplesFor(devs)
			require.NoError(t, rig.Sample(context.Background(), dst))
			buses := map[string]bool{}
			for i, d := range devs {
				assert.Equal(t, i, d.Index)
				assert.Equal(t, i, d.Minor)
				assert.Equal(t, "/dev/nvidia"+strconv.Itoa(i), d.DevicePath())
				assert.Regexp(t, uuidRE, d.UUID)
				norm, err := gpu.NormalizePCIBusID(d.PCIBusID)
				require.NoError(t, err)
				assert.Equal(t, norm, d.PCIBusID)
				assert.False(t, buses[d.PCIBusID], "bus id %s twice", d.PCIBusID)
				buses[d.PCIBusID] = true
				assert.Equal(t, tt.name, d.Name)
				assert.Equal(t, tt.class, d.Class)
				assert.Equal(t, gpu.ArchAmpere, d.Architecture)
				assert.Equal(t, tt.cc, d.ComputeCapability)
				assert.Equal(t, tt.deviceID, d.PCIDeviceID)
				assert.Equal(t, tt.memoryMiB<<20, d.MemoryBytes)
				assert.Equal(t, gpu.Some(tt.limits), d.PowerLimit)
				assert.Equal(t, tt.linkMax, d.LinkMax, "max link")
				assert.Equal(t, tt.linkIdle, d.LinkCurrent, "idle link")
				assert.Equal(t, tt.gpuGen, d.LinkMaxGPUGen, "the card's own generation")
				assert.Equal(t, tt.hostGen, d.LinkMaxHostGen, "the host's generation")
				assert.Equal(t, tt.persistence, d.Persistence)
				assert.Equal(t, tt.reserved, d.ReservedMemoryBytes)
				assert.Equal(t, tt.serial, d.Serial != "", "serial %q", d.Serial)
				assert.Equal(t, tt.ecc, d.ECC)
				assert.Equal(t, tt.mig, d.MIG)
				assert.Equal(t, tt.energyValid, dst[i].EnergyMJ.Valid, "energy counter")
				assert.Equal(t, gpu.Some(0), dst[i].GPUUtilPct, "idle utilization")
			}
		})
	}
}

func TestMixedPreset(t *testing.T) {
	rig := newRig(t, sim.PresetMixed, nil)
	devs, err := rig.Devices(context.Background())
	require.NoError(t, err)
	var names []string
	for _, d := range devs {
		names = append(names, d.Name)
	}
	assert.Equal(t, []string{
		"NVIDIA GeForce RTX 3080", "NVIDIA GeForce RTX 3080",
		"NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3090",
		"NVIDIA A40", "NVIDIA A40",
		"NVIDIA CMP 170HX", "NVIDIA CMP 170HX",
	}, names)
	assert.Equal(t, gpu.Link{Gen: 1, Width: 1}, devs[0].LinkCurrent, "the 3080s sit on risers")
	assert.Equal(t, gpu.Link{Gen: 1, Width: 1}, devs[1].LinkCurrent)
	// What NVML can tell of the two risers, and so what readiness says.
	assert.Equal(t, gpu.Link{Gen: 1, Width: 16}, devs[0].LinkMax, "a riser in the x16 slot: the slot's width")
	assert.Equal(t, gpu.Link{Gen: 1, Width: 1}, devs[1].LinkMax, "a riser in an x1 slot: the slot's one lane")
	r0, r1 := gpu.Assess(devs[0], gpu.Health{Healthy: true}), gpu.Assess(devs[1], gpu.Health{Healthy: true})
	assert.Equal(t, gpu.LinkLimitRiser, r0.WidthLimit)
	assert.Equal(t, gpu.LinkLimitSlot, r1.WidthLimit)
	assert.Equal(t, gpu.LinkLimitSlot, r0.GenLimit, "the BIOS holds the slots at gen 1; the card can do gen 4")
	cmp := gpu.Assess(devs[6], gpu.Health{Healthy: true})
	assert.Equal(t, [2]gpu.LinkLimit{gpu.LinkLimitCard, gpu.LinkLimitCard}, [2]gpu.LinkLimit{cmp.GenLimit, cmp.WidthLimit}, "CMP: the card")
}

func TestPresetIdentityIsStable(t *testing.T) {
	for _, p := range sim.Presets() {
		t.Run(p.Name, func(t *testing.T) {
			a := newRig(t, p.Name, nil)
			b := newRig(t, p.Name, nil)
			da, err := a.Devices(context.Background())
			require.NoError(t, err)
			db, err := b.Devices(context.Background())
			require.NoError(t, err)
			assert.Equal(t, da, db, "same preset, same inventory")
		})
	}
	a := newRig(t, sim.PresetA40, nil)
	b := newRig(t, sim.PresetMixed, nil)
	da, _ := a.Devices(context.Background())
	db, _ := b.Devices(context.Background())
	assert.NotEqual(t, da[4].UUID, db[4].UUID, "UUIDs differ between presets")
}

func TestPresetByName(t *testing.T) {
	p, err := sim.PresetByName("a40")
	require.NoError(t, err)
	assert.Len(t, p.Cards, 8)

	_, err = sim.PresetByName("h100")
	require.ErrorIs(t, err, gpu.ErrNotFound)
	for _, name := range []string{"rtx3080-riser", "rtx3090", "a40", "cmp170hx", "a100", "mixed"} {
		assert.Contains(t, err.Error(), name, "the error lists the valid names")
	}
}

func TestNewRejectsBadCards(t *testing.T) {
	bad := sim.RTX3080()
	bad.MemoryBytes = 0
	bad.Power.MinW = 400
	dup := sim.A40()
	dup.PCIBusID = "0000:01:00.0"
	dup2 := sim.A40()
	dup2.PCIBusID = "01:00.0"
	riser := sim.A40()
	riser.Riser = -1
	riser.ReservedMemoryBytes = riser.MemoryBytes
	_, err := sim.New(sim.Preset{Name: "custom", Cards: []sim.Card{bad, dup, dup2, riser}})
	require.ErrorIs(t, err, gpu.ErrInvalid)
	for _, want := range []string{"card 0", "no memory", "power limits", "0000:01:00.0 already used by card 1",
		"card 3", "riser of -1 lanes", "reserved memory"} {
		assert.Contains(t, err.Error(), want, "every problem is reported at once")
	}

	_, err = sim.New(sim.Preset{Name: "empty"})
	assert.ErrorIs(t, err, gpu.ErrInvalid)
}

func TestCustomRigDerivesIdentity(t *testing.T) {
	fixed := sim.A40()
	fixed.PCIBusID = "0000:01:00.0"
	fixed.UUID = "GPU-00000000-0000-0000-0000-000000000001"
	fixed.Serial = "1322221017584"
	rig, err := sim.New(sim.Preset{Name: "custom", Cards: []sim.Card{sim.A40(), fixed}})
	require.NoError(t, err)
	devs, err := rig.Devices(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "0000:02:00.0", devs[0].PCIBusID, "derived bus ids avoid explicit ones")
	assert.Equal(t, "0000:01:00.0", devs[1].PCIBusID)
	assert.Equal(t, fixed.UUID, devs[1].UUID)
	assert.Equal(t, fixed.Serial, devs[1].Serial)
	assert.Len(t, devs[0].Serial, 13)
}
