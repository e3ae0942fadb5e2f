package mining

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu/sim"
)

func wtm(t *testing.T, name string) Market {
	t.Helper()
	m, err := ParseWhatToMine(readFixture(t, filepath.Join("whattomine", name)))
	require.NoError(t, err)
	return m
}

// The revenue formula against WhatToMine's own numbers: its 2020 Ethash
// query was for 88.5 MH/s, and its estimated rewards and BTC revenue are
// what the formula gives for that rate.
func TestRevenueMatchesWhatToMine(t *testing.T) {
	m := wtm(t, "coins.json_2020-02_ethash-fragment_3coins.json")
	require.Len(t, m.Coins, 3)
	eth, ok := m.Coin("ETH")
	require.True(t, ok)
	assert.Equal(t, "Ethereum", eth.Name)
	assert.Equal(t, "Ethash", eth.Algorithm)
	assert.Equal(t, 2.0, eth.BlockReward)
	assert.Equal(t, 2.27050237419557e15, eth.Difficulty)
	assert.Equal(t, 13.2861, eth.BlockTimeS.Value, "block_time arrives as a string")
	assert.Equal(t, 0.02755656, eth.PriceBTC)
	assert.Equal(t, time.Unix(1582085653, 0).UTC(), eth.Time)
	assert.InDelta(t, 0.00674, eth.CoinsPerDay(88.5e6), 0.000005, "estimated_rewards")
	assert.InDelta(t, 0.00018561, eth.RevenuePerDay(88.5e6, 0), 0.0000001, "btc_revenue")

	etc, ok := m.Coin("ETC")
	require.True(t, ok)
	assert.InDelta(t, 0.18164, etc.CoinsPerDay(88.5e6), 0.000005)
	assert.InDelta(t, 0.00017374, etc.RevenuePerDay(88.5e6, 0), 0.0000001)
	assert.InDelta(t, 0.00017374*0.99, etc.RevenuePerDay(88.5e6, 0.01), 0.0000001, "less a 1 % pool fee")

	_, ok = m.Coin("NICEHASH")
	assert.False(t, ok, "NiceHash's marketplace is not a coin")
	assert.Equal(t, time.Unix(1582085706, 0).UTC(), m.At)
	assert.False(t, m.BTCPrice.Valid, "coins.json has no Bitcoin")
}

// SHA-256 difficulty counts 2^32 hashes: 1 TH/s earns about 4.76e-7 BTC
// a day at the difficulty of the asic.json sample; WhatToMine prices
// Bitcoin itself in USD.
func TestRevenueSHA256(t *testing.T) {
	m := wtm(t, "asic.json_TRIMMED_sha256_6coins.json")
	btc, ok := m.Coin("BTC")
	require.True(t, ok)
	assert.Equal(t, 1.0, btc.PriceBTC)
	assert.Equal(t, 83886.68, m.BTCPrice.Value)
	want := 1e12 * 86400 * 3.13874343 / (132757073449487.5 * math.Pow(2, 32))
	assert.InEpsilon(t, want, btc.RevenuePerDay(1e12, 0), 1e-12)
	assert.InDelta(t, 4.756e-7, btc.RevenuePerDay(1e12, 0), 0.001e-7)
	xec, ok := m.Coin("XEC")
	require.True(t, ok)
	assert.True(t, xec.Lagging)
	assert.Equal(t, float64(1<<32), HashesPerDifficulty("Scrypt"))
	assert.Equal(t, 1.0, HashesPerDifficulty("KawPow"))
}

// A single coin (coins/<id>.json) and the 2018 coins.json entry: 84 MH/s
// was WhatToMine's default Ethash rate then.
func TestWhatToMineSingleCoin(t *testing.T) {
	for _, f := range []string{"coins-151.json_2018-05_ETH.json", "coins.json_2018-05_single-entry_ETH.json"} {
		m := wtm(t, f)
		eth, ok := m.Coin("eth")
		require.True(t, ok, f)
		assert.Equal(t, 2.91, eth.BlockReward)
		assert.InDelta(t, 0.0065, eth.CoinsPerDay(84.1e6), 0.00005, f)
	}
	m := wtm(t, "coins-151.json_2018-05_ETH.json")
	assert.Equal(t, "Ethereum", m.Coins[0].Name)
	assert.Equal(t, 0.07327, m.Coins[0].PriceBTC)
}

func TestWhatToMineBadInput(t *testing.T) {
	for name, body := range map[string]string{
		"html": "<html></html>", "array": readFixtureString(t, "whattomine/api-v1-calculate_response_OFFICIAL-DOC-EXAMPLE.json"),
		"NaN": `{"coins":{"X":{"tag":"X","difficulty":"NaN"}}}`, "negative": `{"coins":{"X":{"tag":"X","block_reward":-1}}}`,
		"no tag": `{"id":1}`,
	} {
		_, err := ParseWhatToMine([]byte(body))
		assert.ErrorIs(t, err, ErrMalformed, name)
	}
	_, err := NewWhatToMine("")
	assert.ErrorIs(t, err, ErrInvalid)
}

func readFixtureString(t *testing.T, f string) string { return string(readFixture(t, f)) }

// The source keeps a read market for its refresh interval and reads
// again after it; a failed read keeps the last market.
func TestWhatToMineRefresh(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "coins.json")
	require.NoError(t, os.WriteFile(path, readFixture(t, "whattomine/coins.json_2020-02_ethash-fragment_3coins.json"), 0o644))
	clk := sim.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	w, err := NewWhatToMine(path, WithRefresh(time.Minute), WithWhatToMineClock(clk))
	require.NoError(t, err)
	m, err := w.Market(context.Background())
	require.NoError(t, err)
	assert.Len(t, m.Coins, 3)
	require.NoError(t, os.WriteFile(path, readFixture(t, "whattomine/coins-151.json_2018-05_ETH.json"), 0o644))
	m, _ = w.Market(context.Background())
	assert.Len(t, m.Coins, 3, "kept within the refresh interval")
	clk.Advance(2 * time.Minute)
	m, err = w.Market(context.Background())
	require.NoError(t, err)
	assert.Len(t, m.Coins, 1, "read again after it")
	require.NoError(t, os.WriteFile(path, []byte("garbage"), 0o644))
	clk.Advance(2 * time.Minute)
	m, err = w.Market(context.Background())
	assert.ErrorIs(t, err, ErrMalformed)
	assert.Len(t, m.Coins, 1, "the last good market")
}
