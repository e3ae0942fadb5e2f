package containerd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gpufarm/gpufarm/isolation"

	"golang.org/x/sys/unix"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpufarm/gpufarm/gpu"
)

// NVIDIA's character device major number and the minor of /dev/nvidiactl.
const (
	nvidiaMajor    = 195
	nvidiactlMinor = 255
)

// SimulatedSpecFile is the name of the CDI spec WriteSimulatedCDI writes.
const SimulatedSpecFile = "gpufarm-simulated-gpus.json"

// SimulatedCDI is what WriteSimulatedCDI made.
type SimulatedCDI struct {
	// SpecDir holds the spec file; give it to the runtime's CDI spec dirs.
	SpecDir string
	// SpecPath is the spec file.
	SpecPath string
	// DevDir holds the device nodes: nvidiaN and nvidiactl.
	DevDir string
	// Names are the CDI device names per device index: by index and by UUID.
	Names map[int][]string
}

// WriteSimulatedCDI makes simulated GPUs real enough for device isolation
// tests: for each device a character device dir/dev/nvidiaN (major 195,
// minor Device.Minor) and dir/dev/nvidiactl (195:255), made with mknod, and
// a CDI spec dir/gpufarm-simulated-gpus.json of kind "nvidia.com/gpu" (the
// kind nvidia-ctk uses, so the same names work on real and simulated
// hosts) whose devices are named by index, by UUID, and "all".
//
// A container given a node opens it with ENXIO: the device cgroup allows
// it but no driver answers. mknod needs root (CAP_MKNOD); without it the
// error wraps gpu.ErrPermission. Do not point dir at the host's real
// specs: a second spec of kind nvidia.com/gpu with the same device names
// in the same directory is a conflict and CDI drops those devices. On
// error it removes the nodes and directories it made.
func WriteSimulatedCDI(dir string, devices []gpu.Device) (SimulatedCDI, error) {
	var errs []error
	minors, indexes := map[int]bool{}, map[int]bool{}
	for i, d := range devices {
		if indexes[d.Index] {
			errs = append(errs, fmt.Errorf("%w: devices[%d] repeats index %d", isolation.ErrInvalid, i, d.Index))
		}
		indexes[d.Index] = true
		if d.Minor < 0 || d.Minor >= nvidiactlMinor {
			errs = append(errs, fmt.Errorf("%w: devices[%d] (index %d) has minor %d: want 0 to 254", isolation.ErrInvalid, i, d.Index, d.Minor))
		} else if minors[d.Minor] {
			errs = append(errs, fmt.Errorf("%w: devices[%d] (index %d) repeats minor %d", isolation.ErrInvalid, i, d.Index, d.Minor))
		}
		minors[d.Minor] = true
	}
	if !filepath.IsAbs(dir) {
		errs = append(errs, fmt.Errorf("%w: CDI dir %q is not absolute", isolation.ErrInvalid, dir))
	}
	if err := errors.Join(errs...); err != nil {
		return SimulatedCDI{}, err
	}
	out := SimulatedCDI{
		SpecDir:  dir,
		SpecPath: filepath.Join(dir, SimulatedSpecFile),
		DevDir:   filepath.Join(dir, "dev"),
		Names:    map[int][]string{},
	}
	var made madePaths
	out, err := writeSimulatedCDI(out, devices, &made)
	if err != nil {
		made.remove()
		return SimulatedCDI{}, err
	}
	return out, nil
}

// madePaths are the files and directories WriteSimulatedCDI made, in
// order, so a failure can take them back.
type madePaths []string

// mkdirAll is os.MkdirAll that remembers the directories it made.
func (m *madePaths) mkdirAll(dir string, perm os.FileMode) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		*m = append(*m, missing[i])
	}
	return nil
}

// remove deletes what was made, newest first. A directory that something
// else has filled meanwhile stays.
func (m madePaths) remove() {
	for i := len(m) - 1; i >= 0; i-- {
		_ = os.Remove(m[i])
	}
}

func writeSimulatedCDI(out SimulatedCDI, devices []gpu.Device, made *madePaths) (SimulatedCDI, error) {
	if err := made.mkdirAll(out.DevDir, 0o755); err != nil {
		return SimulatedCDI{}, fmt.Errorf("isolation: simulated CDI dir: %w", err)
	}
	mode := os.FileMode(0o666)
	node := func(minor int) (*cdispec.DeviceNode, error) {
		name := "nvidia" + strconv.Itoa(minor)
		if minor == nvidiactlMinor {
			name = "nvidiactl"
		}
		host := filepath.Join(out.DevDir, name)
		_ = os.Remove(host)
		if err := unix.Mknod(host, unix.S_IFCHR|0o666, int(unix.Mkdev(nvidiaMajor, uint32(minor)))); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, fmt.Errorf("%w: mknod %s needs root (CAP_MKNOD): %w", isolation.ErrPermission, host, err)
			}
			return nil, fmt.Errorf("%w: mknod %s: %w", isolation.ErrUnavailable, host, err)
		}
		*made = append(*made, host)
		if err := os.Chmod(host, 0o666); err != nil { // mknod's mode passes through the umask
			return nil, fmt.Errorf("isolation: chmod %s: %w", host, err)
		}
		return &cdispec.DeviceNode{
			Path: "/dev/" + name, HostPath: host, Type: "c",
			Major: nvidiaMajor, Minor: int64(minor), FileMode: &mode, Permissions: "rw",
		}, nil
	}
	ctl, err := node(nvidiactlMinor)
	if err != nil {
		return SimulatedCDI{}, err
	}
	spec := cdispec.Spec{
		Version:        "0.5.0", // hostPath needs 0.5.0
		Kind:           "nvidia.com/gpu",
		ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{ctl}},
	}
	var all []*cdispec.DeviceNode
	for _, d := range devices {
		n, err := node(d.Minor)
		if err != nil {
			return SimulatedCDI{}, err
		}
		all = append(all, n)
		names := []string{strconv.Itoa(d.Index)}
		if d.UUID != "" {
			names = append(names, d.UUID)
		}
		for _, name := range names {
			spec.Devices = append(spec.Devices, cdispec.Device{
				Name:           name,
				ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{n}},
			})
			out.Names[d.Index] = append(out.Names[d.Index], "nvidia.com/gpu="+name)
		}
	}
	if len(devices) > 0 {
		spec.Devices = append(spec.Devices, cdispec.Device{Name: "all", ContainerEdits: cdispec.ContainerEdits{DeviceNodes: all}})
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return SimulatedCDI{}, fmt.Errorf("isolation: encode CDI spec: %w", err)
	}
	tmp := out.SpecPath + ".tmp" // renamed into place so a concurrent scan never reads half a spec; .tmp is not scanned
	if st, err := os.Lstat(tmp); err != nil || st.Mode().IsRegular() {
		*made = append(*made, tmp) // ours to remove, even half written
	}
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return SimulatedCDI{}, fmt.Errorf("isolation: write CDI spec: %w", err)
	}
	if err := os.Rename(tmp, out.SpecPath); err != nil {
		return SimulatedCDI{}, fmt.Errorf("isolation: write CDI spec: %w", err)
	}
	return out, nil
}
