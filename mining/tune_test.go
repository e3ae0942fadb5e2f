package mining

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

// simGPUs is a gpu.Manager over a simulated rig, closed when tb ends.
func simGPUs(tb testing.TB, preset string, n int) (*gpu.Manager, *sim.Rig) {
	tb.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(tb, err)
	if n > 0 {
		p.Cards = p.Cards[:n]
	}
	rig, err := sim.New(p)
	require.NoError(tb, err)
	gm, err := gpu.New(context.Background(), rig)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = gm.Close() })
	return gm, rig
}

// smClock is the SM clock the GPU runs at now.
func smClock(t *testing.T, gm *gpu.Manager, uuid string) int {
	t.Helper()
	s, err := gm.Sample(context.Background(), uuid)
	require.NoError(t, err)
	require.True(t, s.SMClockMHz.Valid)
	return s.SMClockMHz.Value
}

func powerLimit(t *testing.T, gm *gpu.Manager, uuid string) float64 {
	t.Helper()
	l, err := gm.PowerLimits(context.Background(), uuid)
	require.NoError(t, err)
	return l.CurrentW
}

// A profile tunes the GPU it matches (power limit and locked clocks, on
// the simulator) and Restore puts the defaults back.
func TestTunerOnSimulator(t *testing.T) {
	gm, rig := simGPUs(t, sim.PresetRTX3080Riser, 2)
	d := gm.Devices()[0]
	rig.SetGPULoad(d.UUID, 0.98, []int{4242})
	tu, err := NewTuner(gm, []Profile{
		{Model: "RTX 3080", Algorithm: "ethash", PowerLimitW: 220, MinClockMHz: 1100, MaxClockMHz: 1200},
		{Model: "GeForce RTX 3080", PowerLimitW: 250},
	}, nil)
	require.NoError(t, err)
	ctx := context.Background()
	before := smClock(t, gm, d.UUID)

	p, applied, err := tu.Apply(ctx, d, "ethash")
	require.NoError(t, err)
	require.True(t, applied)
	assert.Equal(t, 220.0, p.PowerLimitW)
	assert.Equal(t, 220.0, powerLimit(t, gm, d.UUID))
	assert.LessOrEqual(t, smClock(t, gm, d.UUID), 1200, "clocks locked")
	assert.Less(t, smClock(t, gm, d.UUID), before)

	require.NoError(t, tu.Restore(ctx, d.UUID))
	assert.Equal(t, 320.0, powerLimit(t, gm, d.UUID), "the default limit is back")
	assert.Equal(t, before, smClock(t, gm, d.UUID), "clocks unlocked")

	p, applied, err = tu.Apply(ctx, d, "kawpow")
	require.NoError(t, err)
	assert.True(t, applied, "the any-algorithm profile")
	assert.Equal(t, 250.0, powerLimit(t, gm, d.UUID))
	assert.Equal(t, "", p.Algorithm)

	_, applied, err = NewTunerMust(t, gm).Apply(ctx, d, "ethash")
	require.NoError(t, err)
	assert.False(t, applied, "no profile for the model")
}

func NewTunerMust(t *testing.T, gm *gpu.Manager) *Tuner {
	tu, err := NewTuner(gm, []Profile{{Model: "A40", PowerLimitW: 200}}, nil)
	require.NoError(t, err)
	return tu
}

// Bad profiles are refused at construction, naming the field: a power
// limit outside the GPU's range, a half-set clock range, no model.
func TestTunerBadProfiles(t *testing.T) {
	gm, _ := simGPUs(t, sim.PresetRTX3080Riser, 1)
	for _, tc := range []struct {
		p    Profile
		want string
	}{
		{Profile{Model: "RTX 3080", PowerLimitW: 400}, "Profiles[0].PowerLimitW: 400 W is outside 100-336 W"},
		{Profile{Model: "RTX 3080", PowerLimitW: 50}, "Profiles[0].PowerLimitW"},
		{Profile{Model: "RTX 3080", MinClockMHz: 1100}, "Profiles[0].MinClockMHz"},
		{Profile{Model: "RTX 3080", MinClockMHz: 1500, MaxClockMHz: 1100}, "Profiles[0].MinClockMHz"},
		{Profile{PowerLimitW: 200}, "Profiles[0].Model"},
	} {
		_, err := NewTuner(gm, []Profile{tc.p}, nil)
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err := NewTuner(gm, []Profile{{Model: "A40", PowerLimitW: 9999}}, nil)
	assert.NoError(t, err, "no GPU of the model here to check it against")
}

// The CMP 170HX's power limit is locked: a profile with another limit is
// refused; the simulator's clock lock works.
func TestTunerLockedPowerLimit(t *testing.T) {
	gm, _ := simGPUs(t, sim.PresetCMP170HX, 1)
	_, err := NewTuner(gm, []Profile{{Model: "CMP 170HX", PowerLimitW: 200}}, nil)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "250-250 W")
}
