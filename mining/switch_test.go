package mining

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

func est(miner, algo string, profit float64) Estimate {
	return Estimate{Miner: miner, Algorithm: algo, Coin: "X", ProfitPerHour: profit}
}

// A switch needs a gain of at least X % held for N ticks by the same
// challenger; a dip resets the count.
func TestSwitcherHysteresis(t *testing.T) {
	s, err := NewSwitcher(10, 3)
	require.NoError(t, err)
	cur := est("trex", "ethash", 1.00)
	steps := []struct {
		best Estimate
		want bool
	}{
		{est("trex", "kawpow", 1.05), false},   // 5 %: below the gain
		{est("trex", "kawpow", 1.20), false},   // 1 of 3
		{est("trex", "kawpow", 1.20), false},   // 2 of 3
		{est("trex", "kawpow", 1.02), false},   // dips: reset
		{est("trex", "kawpow", 1.20), false},   // 1 of 3
		{est("gminer", "kawpow", 1.30), false}, // another challenger: 1 of 3
		{est("gminer", "kawpow", 1.30), false},
		{est("gminer", "kawpow", 1.30), true},
	}
	for i, st := range steps {
		sw, why := s.Decide("GPU-1", cur, st.best)
		assert.Equal(t, st.want, sw, "step %d: %s", i, why)
		assert.NotEmpty(t, why)
	}
	sw, why := s.Decide("GPU-1", cur, cur)
	assert.False(t, sw)
	assert.Contains(t, why, "already")

	// A losing current configuration is left at the first better one
	// held for the ticks.
	s, _ = NewSwitcher(10, 1)
	sw, _ = s.Decide("GPU-2", est("trex", "ethash", -0.2), est("trex", "kawpow", 0.01))
	assert.True(t, sw)

	_, err = NewSwitcher(-1, 1)
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = NewSwitcher(5, 0)
	assert.ErrorIs(t, err, ErrInvalid)
}

// The economic policy rents a mining GPU only when the offer beats its
// mining profit by the margin, and says why not.
func TestPolicyMargin(t *testing.T) {
	profits := map[string]Estimate{"GPU-a": est("trex", "ethash", 0.40), "GPU-b": est("trex", "ethash", 0.10)}
	p, err := NewPolicy(func(u string) (Estimate, bool) { e, ok := profits[u]; return e, ok }, 10)
	require.NoError(t, err)
	a := gpu.Device{Index: 0, UUID: "GPU-a", Name: "NVIDIA A40"}
	b := gpu.Device{Index: 1, UUID: "GPU-b", Name: "NVIDIA A40"}
	c := gpu.Device{Index: 2, UUID: "GPU-c", Name: "NVIDIA A40"}

	ok, why := p.Displace(workload.Spec{PricePerGPUHour: 0.43}, []gpu.Device{a})
	assert.False(t, ok, "0.43 < 0.40 x 1.1")
	assert.Contains(t, why, "does not beat mining on GPU 0 (NVIDIA A40)")
	assert.Contains(t, why, "0.4400")
	ok, _ = p.Displace(workload.Spec{PricePerGPUHour: 0.45}, []gpu.Device{a, b})
	assert.True(t, ok)
	ok, why = p.Displace(workload.Spec{PricePerGPUHour: 0.20}, []gpu.Device{b, a})
	assert.False(t, ok, "every GPU it takes must be beaten")
	assert.Contains(t, why, "GPU 0")
	ok, _ = p.Displace(workload.Spec{PricePerGPUHour: 0.01}, []gpu.Device{c})
	assert.True(t, ok, "no estimate for the GPU: rent it")

	_, err = NewPolicy(nil, 10)
	assert.ErrorIs(t, err, ErrInvalid)
}
