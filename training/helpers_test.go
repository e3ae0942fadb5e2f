package training_test

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// devices is the inventory of a simulated rig, as gpu.Manager reports it.
func devices(t testing.TB, preset string) []gpu.Device {
	t.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(t, err)
	rig, err := sim.New(p)
	require.NoError(t, err)
	m, err := gpu.New(context.Background(), rig)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return m.Devices()
}

// ckptDir is a checkpoint folder the container's user (nobody) can write.
func ckptDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o777))
	return dir
}
