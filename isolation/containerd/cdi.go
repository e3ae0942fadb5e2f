package containerd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/gpufarm/gpufarm/isolation"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// DefaultCDISpecDirs are where nvidia-ctk writes its specs: /etc/cdi and
// /var/run/cdi, the later taking precedence for the same device.
func DefaultCDISpecDirs() []string { return []string{cdi.DefaultStaticDir, cdi.DefaultDynamicDir} }

// CDIRegistry resolves and injects CDI devices from explicit spec
// directories. It rescans them on Refresh (Create calls it), never in the
// background, and never touches CDI's process-wide default cache.
type CDIRegistry struct {
	mu    sync.Mutex // serialises Refresh against reads
	cache *cdi.Cache
	dirs  []string
}

// NewCDIRegistry reads the specs in dirs, later dirs taking precedence. A
// missing dir is not an error (a host without GPUs has none); a spec that
// does not parse is reported by Refresh and its devices are absent.
func NewCDIRegistry(dirs ...string) (*CDIRegistry, error) {
	dirs = append([]string(nil), dirs...)
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("isolation: CDI cache: %w", err)
	}
	return &CDIRegistry{cache: cache, dirs: dirs}, nil
}

// Dirs are the spec directories, in precedence order (last wins).
func (r *CDIRegistry) Dirs() []string { return append([]string(nil), r.dirs...) }

// Refresh rescans the spec directories and returns the problems of specs
// that failed to load (their devices are absent; other specs still work).
func (r *CDIRegistry) Refresh() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cache.Refresh(); err != nil {
		return fmt.Errorf("isolation: CDI specs in %s: %w", strings.Join(r.dirs, ", "), err)
	}
	return nil
}

// Devices lists the fully qualified names of all known devices, sorted.
func (r *CDIRegistry) Devices() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.cache.ListDevices()
	sort.Strings(d)
	return d
}

// Resolve checks every name at once: malformed names wrap isolation.ErrInvalid,
// names no spec defines wrap isolation.ErrNotFound.
func (r *CDIRegistry) Resolve(names ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, n := range names {
		if _, _, _, err := parser.ParseQualifiedName(n); err != nil {
			errs = append(errs, fmt.Errorf("%w: CDI device %q: %v", isolation.ErrInvalid, n, err))
			continue
		}
		if r.cache.GetDevice(n) == nil {
			errs = append(errs, fmt.Errorf("%w: CDI device %q is in no spec under %s (known: %s)",
				isolation.ErrNotFound, n, strings.Join(r.dirs, ", "), strings.Join(r.known(n), ", ")))
		}
	}
	return errors.Join(errs...)
}

// known lists the devices of the same kind as name, for error messages.
func (r *CDIRegistry) known(name string) []string {
	kind, _, _ := strings.Cut(name, "=")
	var out []string
	for _, d := range r.cache.ListDevices() {
		if strings.HasPrefix(d, kind+"=") {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return []string{"none of kind " + kind}
	}
	return out
}

// uuidsOf resolves a device name to the UUIDs of the GPUs it gives a
// container: the name itself when it is a UUID ("GPU-..." or "MIG-..."),
// else every UUID-named device of the same spec whose GPU nodes
// (/dev/nvidiaN) the named device includes: nvidia-ctk names each GPU by
// index and by UUID, and "all" includes every GPU's node. It returns none
// for a name that includes no GPU node a UUID-named device has.
func (r *CDIRegistry) uuidsOf(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	dev := r.cache.GetDevice(name)
	if dev == nil {
		return nil
	}
	if isUUID(dev.Name) {
		return []string{dev.Name}
	}
	have := gpuNodes(dev.ContainerEdits.DeviceNodes)
	var out []string
	for _, d := range dev.GetSpec().Devices {
		if d.Name == dev.Name || !isUUID(d.Name) {
			continue
		}
		nodes := gpuNodes(d.ContainerEdits.DeviceNodes)
		if len(nodes) > 0 && !slices.ContainsFunc(nodes, func(n string) bool { return !slices.Contains(have, n) }) {
			out = append(out, d.Name)
		}
	}
	sort.Strings(out)
	return out
}

// gpuNodes lists the per-GPU device nodes (/dev/nvidiaN) among nodes, by
// host path: the control nodes every GPU device shares say nothing of
// which GPU it is.
func gpuNodes(nodes []*cdispec.DeviceNode) []string {
	var out []string
	for _, n := range nodes {
		p := cmp.Or(n.HostPath, n.Path)
		if rest, ok := strings.CutPrefix(path.Base(p), "nvidia"); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			out = append(out, p)
		}
	}
	return out
}

func isUUID(name string) bool {
	return strings.HasPrefix(name, "GPU-") || strings.HasPrefix(name, "MIG-")
}

// Inject applies the devices' container edits (device nodes, device cgroup
// rules, mounts, hooks, env) to spec.
func (r *CDIRegistry) Inject(spec *oci.Spec, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	unresolved, err := r.cache.InjectDevices(spec, names...)
	if len(unresolved) > 0 {
		return fmt.Errorf("%w: CDI devices %s: %w", isolation.ErrNotFound, strings.Join(unresolved, ", "), err)
	}
	if err != nil {
		return fmt.Errorf("isolation: inject CDI devices: %w", err)
	}
	return nil
}

// WithDevices is the oci.SpecOpts form of Inject. containerd's
// pkg/cdi.WithCDIDevices works only on CDI's global cache, so this is its
// equivalent over this registry. Apply it after every option that sets
// env, mounts or hooks, since those may reset what CDI added.
func (r *CDIRegistry) WithDevices(names ...string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		return r.Inject(s, names...)
	}
}

// hostPaths maps the container path of every device node the named
// devices inject to the node on the host, for a user namespace, where
// the nodes are bound from the host rather than made.
func (r *CDIRegistry) hostPaths(names ...string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	add := func(nodes []*cdispec.DeviceNode) {
		for _, n := range nodes {
			out[n.Path] = cmp.Or(n.HostPath, n.Path)
		}
	}
	for _, name := range names {
		if dev := r.cache.GetDevice(name); dev != nil {
			add(dev.ContainerEdits.DeviceNodes)
			add(dev.GetSpec().ContainerEdits.DeviceNodes)
		}
	}
	return out
}
