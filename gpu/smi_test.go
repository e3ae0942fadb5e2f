package gpu_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

// smiDevices reads the devices of an `nvidia-smi -q` text dump, the way an
// operator's tooling would, so readiness is tested on what real cards report.
func smiDevices(t *testing.T, path string) []gpu.Device {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()

	var devs []gpu.Device
	var stack []string // section names by indentation level
	kv := map[string]string{}
	flush := func() {
		if len(kv) == 0 {
			return
		}
		devs = append(devs, smiDevice(t, len(devs), kv))
		kv = map[string]string{}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "GPU ") {
			flush()
			stack = stack[:0]
			continue
		}
		trimmed := strings.TrimLeft(line, " ")
		level := (len(line)-len(trimmed))/4 - 1
		if level < 0 || trimmed == "" {
			continue
		}
		if level < len(stack) {
			stack = stack[:level]
		}
		key, val, ok := strings.Cut(trimmed, ":")
		if !ok {
			stack = append(stack, strings.TrimSpace(trimmed))
			continue
		}
		path := append(append([]string{}, stack...), strings.TrimSpace(key))
		kv[strings.Join(path, "/")] = strings.TrimSpace(val)
	}
	require.NoError(t, sc.Err())
	flush()
	return devs
}

// ccByName: nvidia-smi -q does not print the compute capability.
var ccByName = map[string]gpu.ComputeCapability{
	"NVIDIA A100-SXM4-80GB":      {8, 0},
	"NVIDIA A40":                 {8, 6},
	"NVIDIA GeForce GTX 1050 Ti": {6, 1},
	"NVIDIA H100 NVL":            {9, 0},
	"NVIDIA H100 80GB HBM3":      {9, 0},
	"NVIDIA GeForce RTX 3070":    {8, 6},
	"NVIDIA GeForce RTX 3080":    {8, 6},
	"NVIDIA GeForce RTX 3090":    {8, 6},
}

func smiDevice(t *testing.T, i int, kv map[string]string) gpu.Device {
	num := func(k string) int {
		v := strings.TrimSuffix(strings.Fields(kv[k] + " x")[0], "x")
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "field %s = %q", k, kv[k])
		return n
	}
	watts := func(k string) float64 {
		v, err := strconv.ParseFloat(strings.TrimSuffix(kv[k], " W"), 64)
		require.NoError(t, err, "field %s = %q", k, kv[k])
		return v
	}
	bus, err := gpu.NormalizePCIBusID(kv["PCI/Bus Id"])
	require.NoError(t, err)
	d := gpu.Device{
		Index:             i,
		UUID:              kv["GPU UUID"],
		Name:              kv["Product Name"],
		Architecture:      gpu.Architecture(kv["Product Architecture"]),
		ComputeCapability: ccByName[kv["Product Name"]],
		MemoryBytes:       uint64(num("FB Memory Usage/Total")) << 20,
		PCIBusID:          bus,
		LinkCurrent:       gpu.Link{Gen: num("PCI/GPU Link Info/PCIe Generation/Current"), Width: num("PCI/GPU Link Info/Link Width/Current")},
		LinkMax:           gpu.Link{Gen: num("PCI/GPU Link Info/PCIe Generation/Max"), Width: num("PCI/GPU Link Info/Link Width/Max")},
	}
	// Older nvidia-smi prints neither the device's nor the host's max.
	if kv["PCI/GPU Link Info/PCIe Generation/Device Max"] != "" {
		d.LinkMaxGPUGen = num("PCI/GPU Link Info/PCIe Generation/Device Max")
		// nvidia-smi knows the host's max even when it is the higher one;
		// NVML tells it only when it is the lower, and so does Device.
		if host := num("PCI/GPU Link Info/PCIe Generation/Host Max"); host < d.LinkMaxGPUGen {
			d.LinkMaxHostGen = host
		}
	}
	d.Persistence = smiFeature(kv["Persistence Mode"])
	if kv["FB Memory Usage/Reserved"] != "" {
		d.ReservedMemoryBytes = gpu.Some(uint64(num("FB Memory Usage/Reserved")) << 20)
	}
	if s := kv["Serial Number"]; s != "N/A" {
		d.Serial = s
	}
	d.ECC = smiFeature(kv["ECC Mode/Current"])
	switch kv["Product Brand"] {
	case "GeForce":
		d.Class = gpu.ClassConsumer
	default:
		d.Class = gpu.ClassDatacenter
	}
	for _, sec := range []string{"GPU Power Readings", "Power Readings"} {
		if v := kv[sec+"/Default Power Limit"]; v != "" && v != "N/A" {
			d.PowerLimit = gpu.Some(gpu.PowerLimits{
				CurrentW: watts(sec + "/Current Power Limit"), DefaultW: watts(sec + "/Default Power Limit"),
				MinW: watts(sec + "/Min Power Limit"), MaxW: watts(sec + "/Max Power Limit"),
			})
			break
		}
	}
	return d
}

// smiFeature reads nvidia-smi's Enabled/Disabled; "N/A" is unsupported.
func smiFeature(v string) gpu.Feature {
	switch v {
	case "Enabled":
		return gpu.FeatureEnabled
	case "Disabled":
		return gpu.FeatureDisabled
	default:
		return gpu.FeatureUnsupported
	}
}
