package isolation

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// TenantPolicy is what one tenant's containers may ask for: host mounts,
// networks, workload kinds, identity and resource limits. The workload
// manager checks every spec against it where specs enter (Submit, the
// filler), before anything is displaced, and the runtimes check again at
// Create. The zero TenantPolicy allows no host mount, no network but
// loopback, any kind, and sets no limits: use DefaultTenancy for a node.
type TenantPolicy struct {
	// MountRoots are the host directories under which the tenant may
	// bind-mount paths; a source elsewhere (after symbolic links are
	// followed) is refused. None allows no host mount at all.
	MountRoots []string
	// WritableMounts lets the tenant's mounts be writable; without it
	// every mount must be ReadOnly.
	WritableMounts bool
	// Networks are the networks the tenant may ask for besides
	// NetworkNone, which is always allowed.
	Networks []Network
	// Kinds are the workload kinds (Spec.Kind) the tenant may run; empty
	// allows any. A spec without a Kind is not checked against it.
	Kinds []string
	// Root lets the tenant's containers run as uid 0. Their user
	// namespace still maps it to an unprivileged host uid.
	Root bool
	// DefaultLimits fill the limits a spec leaves at zero.
	DefaultLimits Limits
	// MaxLimits bound what a spec may ask; a zero field bounds nothing.
	MaxLimits Limits
}

// Tenancy is the policy of every tenant of a node: Tenants by name, and
// Default for the others.
type Tenancy struct {
	Default TenantPolicy
	Tenants map[string]TenantPolicy
}

// DefaultMiningTenant is the operator's mining tenant in the default
// tenancies of the runtimes and the workload manager.
const DefaultMiningTenant = "mining"

// Default limits of DefaultTenancy: enough for one training job, small
// enough that a fork bomb or a leak in one tenant leaves the node, the
// agent and the other tenants running.
const (
	DefaultPids        = 4096
	DefaultMemoryBytes = 32 << 30
	DefaultCPUShares   = 1024
	// MaxPids and MaxCPUShares are the default policy's maximums: a spec
	// cannot lift the fork-bomb guard away, and 262144 is the kernel's
	// largest share. Memory has no default maximum, since it depends on
	// the node: set MaxLimits.MemoryBytes to what the node can give one
	// container and keep for the agent and containerd.
	MaxPids      = 32768
	MaxCPUShares = 262144
)

// DefaultTenancy is the policy a node starts from: paid tenants get no
// host mount and no host network (their containers get NetworkNone or the
// tenant network, NetworkBridge), run training, inference and batch work,
// and have pids, memory and CPU-share limits by default; only the
// operator's mining tenant gets the host network, which miners need to
// reach their pools, and runs only miners.
func DefaultTenancy(miningTenant string) Tenancy {
	limits := Limits{Pids: DefaultPids, MemoryBytes: DefaultMemoryBytes, CPUShares: DefaultCPUShares}
	return Tenancy{
		Default: TenantPolicy{
			Networks:      []Network{NetworkBridge},
			Kinds:         []string{"training", "inference", "batch"},
			DefaultLimits: limits,
			MaxLimits:     Limits{Pids: MaxPids, CPUShares: MaxCPUShares},
		},
		Tenants: map[string]TenantPolicy{
			miningTenant: {
				Networks:      []Network{NetworkHost},
				Kinds:         []string{"mining"},
				DefaultLimits: Limits{Pids: 1024, MemoryBytes: 8 << 30, CPUShares: DefaultCPUShares},
				MaxLimits:     Limits{Pids: MaxPids, CPUShares: MaxCPUShares},
			},
		},
	}
}

// For returns the policy of a tenant.
func (t Tenancy) For(tenant string) TenantPolicy {
	if p, ok := t.Tenants[tenant]; ok {
		return p
	}
	return t.Default
}

// Validate reports every contradiction of the policies at once, wrapping
// ErrInvalid: a default limit above its maximum, a mount root that is not
// absolute, an unknown network.
func (t Tenancy) Validate() error {
	var errs []error
	names := make([]string, 0, len(t.Tenants))
	for name := range t.Tenants {
		names = append(names, name)
	}
	slices.Sort(names)
	errs = append(errs, t.Default.problems("Default")...)
	for _, name := range names {
		if err := ValidateTenant(name); err != nil {
			errs = append(errs, fmt.Errorf("Tenants[%q]: %w", name, err))
		}
		errs = append(errs, t.Tenants[name].problems(fmt.Sprintf("Tenants[%q]", name))...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: tenancy: %w", ErrInvalid, err)
	}
	return nil
}

func (p TenantPolicy) problems(where string) []error {
	var errs []error
	for i, r := range p.MountRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) == "/" {
			errs = append(errs, fmt.Errorf("%s.MountRoots[%d] %q: give an absolute directory other than /", where, i, r))
		}
	}
	for i, n := range p.Networks {
		if n != NetworkBridge && n != NetworkHost && n != NetworkNone {
			errs = append(errs, fmt.Errorf("%s.Networks[%d] %q: want %q or %q", where, i, n, NetworkBridge, NetworkHost))
		}
	}
	def, most := p.DefaultLimits.named(), p.MaxLimits.named()
	for i := range def {
		switch {
		case def[i].v < 0 || most[i].v < 0:
			errs = append(errs, fmt.Errorf("%s: limit %s is negative", where, def[i].name))
		case most[i].v > 0 && def[i].v > most[i].v:
			errs = append(errs, fmt.Errorf("%s: DefaultLimits.%s %d is above MaxLimits.%s %d", where, def[i].name, def[i].v, def[i].name, most[i].v))
		case most[i].v > 0 && def[i].v == 0:
			// A bound with no default lets a spec that sets nothing run
			// unbounded: refuse the contradiction.
			errs = append(errs, fmt.Errorf("%s: MaxLimits.%s %d has no DefaultLimits.%s: give one", where, def[i].name, most[i].v, def[i].name))
		}
	}
	return errs
}

// Apply fills the limits a spec leaves at zero with the policy's defaults.
func (p TenantPolicy) Apply(s Spec) Spec {
	fill := func(v *int64, def int64) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&s.Limits.CPUMillis, p.DefaultLimits.CPUMillis)
	fill(&s.Limits.MemoryBytes, p.DefaultLimits.MemoryBytes)
	fill(&s.Limits.Pids, p.DefaultLimits.Pids)
	fill(&s.Limits.CPUShares, p.DefaultLimits.CPUShares)
	return s
}

// Check reports every way a spec (with the defaults applied) breaks the
// policy, at once, each naming the field and the rule; the error wraps
// ErrDenied.
func (p TenantPolicy) Check(s Spec) error {
	var errs []error
	deny := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for i, m := range s.Mounts {
		switch root, ok := p.mountRoot(m.Source); {
		case !ok && len(p.MountRoots) == 0:
			deny("spec.Mounts[%d].Source %q: the tenant may not mount host paths", i, m.Source)
		case !ok:
			deny("spec.Mounts[%d].Source %q: not under the tenant's mount roots %s", i, m.Source, strings.Join(p.MountRoots, ", "))
		case !m.ReadOnly && !p.WritableMounts:
			deny("spec.Mounts[%d] %q (under %s): the tenant's mounts must be ReadOnly", i, m.Source, root)
		}
	}
	if s.Network != "" && s.Network != NetworkNone && !slices.Contains(p.Networks, s.Network) {
		deny("spec.Network %q: the tenant may use %s", s.Network, strings.Join(append([]string{string(NetworkNone)}, netNames(p.Networks)...), ", "))
	}
	// A spec without a kind comes from a runtime used on its own: kinds
	// are the workload manager's.
	if len(p.Kinds) > 0 && s.Kind != "" && !slices.Contains(p.Kinds, s.Kind) {
		deny("spec.Kind %q: the tenant may run %s", s.Kind, strings.Join(p.Kinds, ", "))
	}
	if s.User != "" && !p.Root {
		if uid, _, err := ParseUser(s.User); err == nil && uid == 0 {
			deny("spec.User %q: the tenant may not run as root", s.User)
		}
	}
	have, most := s.Limits.named(), p.MaxLimits.named()
	for i := range have {
		if most[i].v > 0 && (have[i].v == 0 || have[i].v > most[i].v) {
			deny("spec.Limits.%s %d: the tenant's maximum is %d", have[i].name, have[i].v, most[i].v)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: tenant %q: %w", ErrDenied, s.Tenant, err)
	}
	return nil
}

// mountRoot finds the root a host path lies under, following symbolic
// links, so that a link inside a root cannot point outside it.
func (p TenantPolicy) mountRoot(source string) (string, bool) {
	src, err := filepath.EvalSymlinks(source)
	if err != nil {
		src = filepath.Clean(source) // a missing source fails Spec.Validate
	}
	for _, r := range p.MountRoots {
		root, err := filepath.EvalSymlinks(r)
		if err != nil {
			root = filepath.Clean(r)
		}
		if rel, err := filepath.Rel(root, src); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return r, true
		}
	}
	return "", false
}

func netNames(ns []Network) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = string(n)
	}
	return out
}
