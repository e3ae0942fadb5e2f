package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/gpufarm/gpufarm/isolation"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func identifierOK(id string) bool { return id != "" && identifiers.Validate(id) == nil }

func withoutLabels(keys ...string) ctrd.UpdateContainerOpts {
	return func(_ context.Context, _ *ctrd.Client, c *containers.Container) error {
		for _, k := range keys {
			delete(c.Labels, k)
		}
		return nil
	}
}

// buildSpec makes the complete OCI runtime spec of a defaulted isolation.Spec. ctx
// carries the tenant's namespace.
func (r *Runtime) buildSpec(ctx context.Context, s isolation.Spec, cfg imagespec.ImageConfig, idBase uint32) (*oci.Spec, error) {
	opts := securityOpts(s, cfg)
	if s.Network == isolation.NetworkBridge {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{
			Type: specs.NetworkNamespace, Path: r.net.nsPath(isolation.Ref{Tenant: s.Tenant, ID: s.ID}),
		}), oci.WithHostResolvconf)
	}
	opts = append(opts,
		// CDI last but seccomp: its env, mounts and hooks must not be reset after it.
		r.cdi.WithDevices(s.DeviceNames()...),
	)
	if idBase > 0 {
		opts = append(opts, withUserNamespace(idBase, r.cdi.hostPaths(s.DeviceNames()...)))
	}
	opts = append(opts,
		// The default profile allows syscalls by the capabilities the spec
		// holds, so it comes after they are all dropped.
		seccomp.WithDefaultProfile(),
	)
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: s.ID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("isolation: build the OCI spec of %s/%s: %w", s.Tenant, s.ID, err)
	}
	return spec, nil
}

// imageConfig reads the image's config without mounting its root
// filesystem (oci.WithImageConfig would, to read /etc/group).
func imageConfig(ctx context.Context, img ctrd.Image) (imagespec.ImageConfig, digest.Digest, error) {
	desc, err := img.Config(ctx)
	if err != nil {
		return imagespec.ImageConfig{}, "", err
	}
	b, err := content.ReadBlob(ctx, img.ContentStore(), desc)
	if err != nil {
		return imagespec.ImageConfig{}, "", err
	}
	var i imagespec.Image
	if err := json.Unmarshal(b, &i); err != nil {
		return imagespec.ImageConfig{}, "", fmt.Errorf("decode image config: %w", err)
	}
	return i.Config, desc.Digest, nil
}

// securityOpts are the spec options of everything but CDI and seccomp,
// shared by the containerd runtime and its tests.
func securityOpts(s isolation.Spec, cfg imagespec.ImageConfig) []oci.SpecOpts {
	uid, gid, _ := isolation.ParseUser(s.User)
	args := cfg.Cmd
	if len(s.Args) > 0 {
		args = s.Args
	}
	env := cfg.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cwd := cfg.WorkingDir
	if s.WorkingDir != "" {
		cwd = s.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	opts := []oci.SpecOpts{
		oci.WithProcessArgs(append(append([]string(nil), cfg.Entrypoint...), args...)...),
		oci.WithEnv(env),
		oci.WithEnv(s.Env),
		oci.WithProcessCwd(cwd),
		oci.WithUIDGID(uid, gid),
		withGroups(gid),
		oci.WithNoNewPrivileges,
		withNoCapabilities,
		oci.WithRootFSReadonly(),
		oci.WithMounts(mounts(s)),
	}
	if s.Network == isolation.NetworkHost {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf)
	}
	if s.Limits.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(s.Limits.MemoryBytes)))
	}
	if s.Limits.CPUMillis > 0 {
		const period = 100_000 // µs
		opts = append(opts, oci.WithCPUCFS(s.Limits.CPUMillis*period/1000, period))
	}
	if s.Limits.Pids > 0 {
		opts = append(opts, oci.WithPidsLimit(s.Limits.Pids))
	}
	if s.Limits.CPUShares > 0 {
		opts = append(opts, oci.WithCPUShares(uint64(s.Limits.CPUShares)))
	}
	return opts
}

// withGroups makes the primary group the only supplementary one (CDI may
// add its device groups later).
func withGroups(gid uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User.AdditionalGids = []uint32{gid}
		return nil
	}
}

// withNoCapabilities empties all five capability sets. oci.WithCapabilities(nil)
// leaves the ambient set alone.
func withNoCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: []string{}, Effective: []string{}, Permitted: []string{}, Inheritable: []string{}, Ambient: []string{},
	}
	return nil
}

// mounts are the writable /tmp and the spec's bind mounts. Bind mounts are
// nosuid but not nodev: device access is the device cgroup's job, and a
// device node smuggled in through a mount is refused by it (EPERM).
func mounts(s isolation.Spec) []specs.Mount {
	out := []specs.Mount{{
		Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
		Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(s.TmpBytes, 10)},
	}}
	for _, m := range s.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{
			Destination: filepath.Clean(m.Target), Type: "bind", Source: m.Source,
			Options: []string{"rbind", "rprivate", "nosuid", mode},
		})
	}
	return out
}
