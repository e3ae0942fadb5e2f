package isolation_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
)

func TestSpecValidate(t *testing.T) {
	dir := t.TempDir()
	ok := isolation.Spec{ID: "job-1", Tenant: "acme", Image: "registry.example/train:1"}
	cases := []struct {
		name   string
		mutate func(*isolation.Spec)
		says   []string // one problem per entry, all reported
	}{
		{"minimal spec is valid", func(*isolation.Spec) {}, nil},
		{"full spec is valid", func(s *isolation.Spec) {
			s.Args = []string{"--epochs", "3"}
			s.Env = []string{"A=1", "EMPTY="}
			s.WorkingDir = "/work"
			s.User = "1000:1000"
			s.GPUs = []isolation.GPU{{Device: "nvidia.com/gpu=0", UUID: "GPU-1"}, {Device: "nvidia.com/gpu=1", UUID: "GPU-2"}}
			s.Limits = isolation.Limits{CPUMillis: 1500, MemoryBytes: 1 << 30, Pids: 512}
			s.Mounts = []isolation.Mount{{Source: dir, Target: "/data", ReadOnly: true}, {Source: dir, Target: "/ckpt"}}
			s.Network = isolation.NetworkHost
			s.Labels = map[string]string{"team": "ml"}
			s.StopSignal = syscall.SIGINT
			s.StopGrace = time.Minute
		}, nil},
		{"root on request is valid", func(s *isolation.Spec) { s.User = "0" }, nil},
		{"empty", func(s *isolation.Spec) { *s = isolation.Spec{} }, []string{"spec.ID is empty", "spec.Tenant is empty", "spec.Image is empty"}},
		{"bad names", func(s *isolation.Spec) { s.ID = "a b"; s.Tenant = "x/y" }, []string{`spec.ID "a b"`, `tenant "x/y"`}},
		{"negative limits", func(s *isolation.Spec) {
			s.Limits = isolation.Limits{CPUMillis: -1, MemoryBytes: -1, Pids: -1}
			s.StopGrace = -time.Second
			s.TmpBytes = -1
		}, []string{"CPUMillis is -1", "MemoryBytes is -1", "Pids is -1", "StopGrace -1s", "TmpBytes is -1"}},
		{"CPU below the kernel's quota", func(s *isolation.Spec) { s.Limits.CPUMillis = 5 }, []string{"CPUMillis is 5"}},
		{"CDI names", func(s *isolation.Spec) {
			s.GPUs = []isolation.GPU{{Device: "0", UUID: "GPU-0"}, {Device: "nvidia.com/gpu", UUID: "GPU-1"},
				{Device: "nvidia.com/gpu=0", UUID: "GPU-0"}, {Device: "nvidia.com/gpu=0", UUID: "GPU-0"}}
		}, []string{`"0" is not a CDI device name`, `"nvidia.com/gpu" is not a CDI device name`, "given twice"}},
		{"GPU UUIDs", func(s *isolation.Spec) {
			s.GPUs = []isolation.GPU{{Device: "nvidia.com/gpu=0"}, {Device: "nvidia.com/gpu=1", UUID: "GPU-1,GPU-2"}}
		}, []string{`GPUs[0].UUID is empty: give the UUID of the GPU behind "nvidia.com/gpu=0"`, `GPUs[1].UUID "GPU-1,GPU-2" contains a comma`}},
		{"mounts", func(s *isolation.Spec) {
			s.Mounts = []isolation.Mount{
				{Source: "/does/not/exist", Target: "/data"},
				{Source: "relative", Target: "/x"},
				{Source: dir, Target: "data"},
				{Source: dir, Target: "/proc/x"},
				{Source: dir, Target: "/y"}, {Source: dir, Target: "/y/"},
			}
		}, []string{`"/does/not/exist"`, `Source "relative"`, `Target "data"`, `"/proc/x" would cover`, `"/y/" is mounted twice`}},
		{"user, env, workdir, network, labels, signal", func(s *isolation.Spec) {
			s.User = "nobody"
			s.Env = []string{"NOEQUALS", "=v"}
			s.WorkingDir = "rel"
			s.Network = "wifi"
			s.Labels = map[string]string{isolation.LabelTenant: "other"}
			s.StopSignal = 99
		}, []string{`User "nobody"`, `Env[0] "NOEQUALS"`, `Env[1] "=v"`, `WorkingDir "rel"`, `Network "wifi"`, "reserved", "StopSignal 99"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.mutate(&s)
			err := s.Validate()
			if len(tc.says) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, isolation.ErrInvalid)
			assert.ErrorIs(t, err, gpu.ErrInvalid, "the gpu category matches too")
			var joined interface{ Unwrap() []error }
			require.True(t, errors.As(err, &joined))
			assert.Len(t, joined.Unwrap(), len(tc.says), "one error per problem: %v", err)
			for _, want := range tc.says {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestGPUFor(t *testing.T) {
	g := isolation.GPUFor(gpu.Device{Index: 3, UUID: "GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256"})
	assert.Equal(t, isolation.GPU{Device: "nvidia.com/gpu=GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256", UUID: "GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256"}, g)
	assert.Equal(t, "nvidia.com/gpu=3", isolation.GPUFor(gpu.Device{Index: 3}).Device, "by index without a UUID")
}

func TestNamespacePerTenant(t *testing.T) {
	assert.Equal(t, "gpufarm-acme", isolation.Namespace("acme"))
	require.NoError(t, isolation.ValidateTenant("acme-2.eu_west"))
	for _, bad := range []string{"", "a/b", "-x", "x--y", strings.Repeat("a", 70)} {
		assert.ErrorIs(t, isolation.ValidateTenant(bad), isolation.ErrInvalid, bad)
	}
}
