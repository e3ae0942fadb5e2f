package isolation_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

func TestDefaultTenancy(t *testing.T) {
	ten := isolation.DefaultTenancy("mining")
	require.NoError(t, ten.Validate())
	paid, miner := ten.For("acme"), ten.For("mining")
	spec := func(kind string, net isolation.Network, mounts ...isolation.Mount) isolation.Spec {
		return isolation.Spec{ID: "c", Tenant: "acme", Image: "x", Kind: kind, Network: net, Mounts: mounts}
	}
	root := t.TempDir()
	cases := []struct {
		name   string
		p      isolation.TenantPolicy
		s      isolation.Spec
		denied []string // one entry per problem; none: allowed
	}{
		{"paid training on the tenant network", paid, spec("training", isolation.NetworkBridge), nil},
		{"paid asks the host network", paid, spec("training", isolation.NetworkHost), []string{`spec.Network "host": the tenant may use none, bridge`}},
		{"paid mounts the host's root", paid, spec("batch", "", isolation.Mount{Source: "/", Target: "/host"}),
			[]string{`spec.Mounts[0].Source "/": the tenant may not mount host paths`}},
		{"paid submits a miner", paid, spec("mining", ""), []string{`spec.Kind "mining": the tenant may run training, inference, batch`}},
		{"paid as root", paid, isolation.Spec{ID: "c", Tenant: "acme", Image: "x", User: "0:0"}, []string{`spec.User "0:0": the tenant may not run as root`}},
		{"everything at once", paid, spec("mining", isolation.NetworkHost, isolation.Mount{Source: root, Target: "/d"}),
			[]string{"spec.Mounts[0]", "spec.Network", "spec.Kind"}},
		{"paid lifts the pids limit", paid, isolation.Spec{ID: "c", Tenant: "acme", Image: "x", Limits: isolation.Limits{Pids: 1 << 20}},
			[]string{"spec.Limits.Pids 1048576"}},
		{"the miner on the host network", miner, spec("mining", isolation.NetworkHost), nil},
		{"the miner runs training", miner, spec("training", ""), []string{`spec.Kind "training"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Check(tc.p.Apply(tc.s))
			if tc.denied == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, isolation.ErrDenied)
			require.ErrorIs(t, err, gpu.ErrPermission)
			for _, want := range tc.denied {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
	applied := paid.Apply(spec("training", ""))
	assert.Equal(t, isolation.Limits{Pids: isolation.DefaultPids, MemoryBytes: isolation.DefaultMemoryBytes, CPUShares: isolation.DefaultCPUShares},
		applied.Limits, "every container gets limits")
}

func TestTenantPolicyMounts(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	require.NoError(t, os.Mkdir(data, 0o755))
	outside := t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "escape")))
	p := isolation.TenantPolicy{MountRoots: []string{root}}
	mount := func(src string, ro bool) isolation.Spec {
		return isolation.Spec{ID: "c", Tenant: "acme", Image: "x", Mounts: []isolation.Mount{{Source: src, Target: "/d", ReadOnly: ro}}}
	}
	require.NoError(t, p.Check(mount(data, true)), "read-only under a root")
	err := p.Check(mount(data, false))
	require.ErrorIs(t, err, isolation.ErrDenied)
	assert.Contains(t, err.Error(), "must be ReadOnly")
	err = p.Check(mount(filepath.Join(root, "escape"), true))
	require.ErrorIs(t, err, isolation.ErrDenied, "a link inside a root that points outside it")
	assert.Contains(t, err.Error(), "not under the tenant's mount roots")
	err = p.Check(mount(root+"/../"+filepath.Base(outside), true))
	require.ErrorIs(t, err, isolation.ErrDenied, "dot-dot out of the root")
	p.WritableMounts = true
	require.NoError(t, p.Check(mount(data, false)))
}

func TestTenancyValidate(t *testing.T) {
	bad := isolation.Tenancy{
		Default: isolation.TenantPolicy{
			MountRoots:    []string{"relative", "/"},
			Networks:      []isolation.Network{"wifi"},
			DefaultLimits: isolation.Limits{Pids: 100000},
			MaxLimits:     isolation.Limits{Pids: 4096, MemoryBytes: 1 << 30},
		},
		Tenants: map[string]isolation.TenantPolicy{"Bad/Name": {}},
	}
	err := bad.Validate()
	require.ErrorIs(t, err, isolation.ErrInvalid)
	for _, want := range []string{`MountRoots[0] "relative"`, `MountRoots[1] "/"`, `Networks[0] "wifi"`,
		"DefaultLimits.Pids 100000 is above MaxLimits.Pids 4096", "MaxLimits.MemoryBytes 1073741824 has no DefaultLimits.MemoryBytes",
		`Tenants["Bad/Name"]`} {
		assert.Contains(t, err.Error(), want)
	}
	// A spec over the maximum is denied, naming the limit.
	p := isolation.TenantPolicy{DefaultLimits: isolation.Limits{Pids: 100}, MaxLimits: isolation.Limits{Pids: 200}}
	err = p.Check(p.Apply(isolation.Spec{ID: "c", Tenant: "acme", Image: "x", Limits: isolation.Limits{Pids: 500}}))
	require.ErrorIs(t, err, isolation.ErrDenied)
	assert.Contains(t, err.Error(), "spec.Limits.Pids 500: the tenant's maximum is 200")
}
