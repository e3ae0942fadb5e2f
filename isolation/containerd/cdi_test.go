package containerd_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// fixtures are nvidia-ctk specs; provenance in testdata/cdi/SOURCES.txt.
const fixtures = "testdata/cdi"

// specDir copies one nvidia-ctk fixture into a spec dir of its own (two
// specs of one kind naming the same devices in one dir conflict). The
// abridged fixture has literal "..." lines, YAML's end-of-document marker,
// where its source elided text; a strict parser stops at the first, so
// they are dropped.
func specDir(t *testing.T, fixture string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, fixture))
	require.NoError(t, err)
	var kept []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) != "..." {
			kept = append(kept, line)
		}
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(strings.Join(kept, "\n")), 0o644))
	return dir
}

func TestCDIRegistryResolvesNvidiaCtkSpecs(t *testing.T) {
	cases := []struct {
		fixture string
		known   []string
		unknown []string
	}{
		{
			fixture: "tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml",
			known:   []string{"nvidia.com/gpu=0", "nvidia.com/gpu=GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256", "nvidia.com/gpu=all"},
			unknown: []string{"nvidia.com/gpu=1"},
		},
		{
			fixture: "tesla-t4_single-gpu_driver570.133.20_aws-g4dn.xlarge_etc-cdi-nvidia.yaml",
			known:   []string{"nvidia.com/gpu=0", "nvidia.com/gpu=GPU-6cf00fa7-59ac-16f2-3e83-d24ccdc56f84", "nvidia.com/gpu=all"},
			unknown: []string{"nvidia.com/gpu=GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256"},
		},
		{
			fixture: "multi-gpu_4x_driver580.126.09_etc-cdi-nvidia_ABRIDGED-by-source.yaml",
			known: []string{"nvidia.com/gpu=0", "nvidia.com/gpu=3", "nvidia.com/gpu=GPU-3e953d37-558d-fb20-8eca-25de8b98f5a7",
				"nvidia.com/gpu=GPU-8a73f553-110d-eaae-45ef-751617ac723c"},
			// The source elided the "all" device.
			unknown: []string{"nvidia.com/gpu=all", "nvidia.com/gpu=4"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			r, err := containerd.NewCDIRegistry(specDir(t, tc.fixture))
			require.NoError(t, err)
			require.NoError(t, r.Refresh(), "the spec loads")
			require.NoError(t, r.Resolve(tc.known...))
			for _, name := range tc.known {
				assert.Contains(t, r.Devices(), name)
			}
			err = r.Resolve(append(tc.unknown, "gpu0")...)
			require.Error(t, err)
			assert.ErrorIs(t, err, isolation.ErrNotFound)
			assert.ErrorIs(t, err, isolation.ErrInvalid, "a malformed name is reported with the unknown ones")
			for _, name := range tc.unknown {
				assert.Contains(t, err.Error(), name)
			}
		})
	}

	t.Run("later dir wins for the same device", func(t *testing.T) {
		r, err := containerd.NewCDIRegistry(
			specDir(t, "tesla-t4_single-gpu_driver570.133.20_aws-g4dn.xlarge_etc-cdi-nvidia.yaml"),
			specDir(t, "tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml"))
		require.NoError(t, err)
		require.NoError(t, r.Refresh())
		require.NoError(t, r.Resolve("nvidia.com/gpu=0", "nvidia.com/gpu=GPU-6cf00fa7-59ac-16f2-3e83-d24ccdc56f84"))
	})

	t.Run("missing dirs are no error", func(t *testing.T) {
		r, err := containerd.NewCDIRegistry(filepath.Join(t.TempDir(), "none"))
		require.NoError(t, err)
		require.NoError(t, r.Refresh())
		assert.Empty(t, r.Devices())
	})

	t.Run("a broken spec is reported", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [{name: \"\"}]\n"), 0o644))
		r, err := containerd.NewCDIRegistry(dir)
		require.NoError(t, err)
		assert.Error(t, r.Refresh())
	})
}

// A GPU named by index gets the UUID the same spec gives its device nodes;
// "all" stands for every GPU of the spec.
func TestCDIRegistryResolvesNamesToUUIDs(t *testing.T) {
	cases := []struct {
		fixture string
		name    string
		uuid    string // comma-separated; "" when no GPU stands behind the name
	}{
		{"tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml", "nvidia.com/gpu=0", "GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256"},
		{"tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml", "nvidia.com/gpu=GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256", "GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256"},
		// On a one-GPU host "all" is that GPU.
		{"tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml", "nvidia.com/gpu=all", "GPU-8f1f4d06-07fd-27a7-52d5-e58aa060d256"},
		{"tesla-t4_single-gpu_driver615.71.09_ctk1.20.0_var-run-cdi-nvidia.yaml", "nvidia.com/gpu=1", ""},
		{"tesla-t4_single-gpu_driver570.133.20_aws-g4dn.xlarge_etc-cdi-nvidia.yaml", "nvidia.com/gpu=0", "GPU-6cf00fa7-59ac-16f2-3e83-d24ccdc56f84"},
		// UUID order differs from index order in this spec.
		{"multi-gpu_4x_driver580.126.09_etc-cdi-nvidia_ABRIDGED-by-source.yaml", "nvidia.com/gpu=1", "GPU-78744930-b3ce-0ddd-4a63-f730116fc653"},
		{"multi-gpu_4x_driver580.126.09_etc-cdi-nvidia_ABRIDGED-by-source.yaml", "nvidia.com/gpu=2", "GPU-8a73f553-110d-eaae-45ef-751617ac723c"},
		{"multi-gpu_4x_driver580.126.09_etc-cdi-nvidia_ABRIDGED-by-source.yaml", "nvidia.com/gpu=3", "GPU-7c33d7b8-8cc2-676e-7678-b9a86d12cd93"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" in "+tc.fixture, func(t *testing.T) {
			r, err := containerd.NewCDIRegistry(specDir(t, tc.fixture))
			require.NoError(t, err)
			require.NoError(t, r.Refresh())
			assert.Equal(t, tc.uuid, strings.Join(containerd.UUIDsOf(r, tc.name), ","))
		})
	}
}

// requireRoot skips without root (mknod needs it), and fails in CI.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if containerdtest.InCI() {
			t.Fatal("CI=true and not root: mknod needs root")
		}
		t.Skip("mknod needs root")
	}
}

func TestWriteSimulatedCDI(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	sim, err := containerd.WriteSimulatedCDI(dir, simulatedGPUs)
	require.NoError(t, err)
	for name, minor := range map[string]uint32{"nvidia0": 0, "nvidia1": 1, "nvidiactl": 255} {
		var st unix.Stat_t
		require.NoError(t, unix.Stat(filepath.Join(sim.DevDir, name), &st))
		assert.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT, "%s is a character device", name)
		assert.Equal(t, uint32(195), unix.Major(uint64(st.Rdev)))
		assert.Equal(t, minor, unix.Minor(uint64(st.Rdev)))
	}
	assert.Equal(t, []string{"nvidia.com/gpu=0", "nvidia.com/gpu=" + simulatedGPUs[0].UUID}, sim.Names[0])

	r, err := containerd.NewCDIRegistry(sim.SpecDir)
	require.NoError(t, err)
	require.NoError(t, r.Refresh())
	assert.Equal(t, []string{
		"nvidia.com/gpu=0", "nvidia.com/gpu=1",
		"nvidia.com/gpu=" + simulatedGPUs[0].UUID, "nvidia.com/gpu=" + simulatedGPUs[1].UUID,
		"nvidia.com/gpu=all",
	}, r.Devices())
	assert.Equal(t, []string{simulatedGPUs[1].UUID}, containerd.UUIDsOf(r, "nvidia.com/gpu=1"), "index names resolve to UUIDs as with nvidia-ctk")
	assert.ElementsMatch(t, []string{simulatedGPUs[0].UUID, simulatedGPUs[1].UUID}, containerd.UUIDsOf(r, "nvidia.com/gpu=all"), "all is both GPUs")

	cases := []struct {
		device string
		nodes  []string
	}{
		{"nvidia.com/gpu=1", []string{"/dev/nvidiactl", "/dev/nvidia1"}},
		{"nvidia.com/gpu=" + simulatedGPUs[0].UUID, []string{"/dev/nvidiactl", "/dev/nvidia0"}},
		{"nvidia.com/gpu=all", []string{"/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1"}},
	}
	for _, tc := range cases {
		t.Run(tc.device, func(t *testing.T) {
			s := &oci.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
			require.NoError(t, r.Inject(s, tc.device))
			var nodes, allowed []string
			for _, d := range s.Linux.Devices {
				nodes = append(nodes, d.Path)
				assert.Equal(t, "c", d.Type)
				assert.Equal(t, int64(195), d.Major)
			}
			for _, rule := range s.Linux.Resources.Devices {
				if rule.Allow {
					allowed = append(allowed, rule.Type+" "+itoa(*rule.Major)+":"+itoa(*rule.Minor)+" "+rule.Access)
				}
			}
			assert.ElementsMatch(t, tc.nodes, nodes)
			assert.Len(t, allowed, len(tc.nodes), "device cgroup allows exactly its nodes: %v", allowed)
		})
	}

	t.Run("bad devices", func(t *testing.T) {
		_, err := containerd.WriteSimulatedCDI(t.TempDir(), append(simulatedGPUs, simulatedGPUs[0]))
		assert.ErrorIs(t, err, isolation.ErrInvalid)
		_, err = containerd.WriteSimulatedCDI("relative", simulatedGPUs)
		assert.ErrorIs(t, err, isolation.ErrInvalid)
	})
}

// A failure after the first device node leaves the directory as it was.
func TestWriteSimulatedCDIFailureLeavesNothing(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name string
		// block makes a later step fail with something that is not the
		// function's to remove.
		block string
		says  string
	}{
		{"a GPU's node cannot be made", "dev/nvidia1/keep", "mknod"},
		{"the spec cannot be written", containerd.SimulatedSpecFile + ".tmp/keep", "write CDI spec"},
		{"the spec cannot be put in place", containerd.SimulatedSpecFile + "/keep", "write CDI spec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			block := filepath.Join(dir, tc.block)
			require.NoError(t, os.MkdirAll(filepath.Dir(block), 0o755))
			require.NoError(t, os.WriteFile(block, nil, 0o644))
			before := tree(t, dir)
			_, err := containerd.WriteSimulatedCDI(dir, simulatedGPUs)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.Contains(t, err.Error(), tc.says)
			assert.Equal(t, before, tree(t, dir), "nothing made is left")
		})
	}
}

// tree lists the paths below dir.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		out = append(out, p)
		return err
	}))
	return out
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
