package accounting_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

// TestSummarizeARange: margins over a range of time, per workload and per
// kind, with the margin per GPU-hour.
func TestSummarizeARange(t *testing.T) {
	ctx := context.Background()
	l := accounting.NewMemoryLedger()
	require.NoError(t, l.Append(ctx, ledgertest.Stream("GPU-a", 0, 120)))
	require.NoError(t, l.Append(ctx, ledgertest.Stream("GPU-b", 0, 120)))
	// The second hour only: 60 minutes of each GPU, a third of each kind.
	q := accounting.Query{From: ledgertest.T0.Add(time.Hour), To: ledgertest.T0.Add(2 * time.Hour)}
	rows, err := accounting.Summarize(l.Query(ctx, q), accounting.ByKind)
	require.NoError(t, err)
	require.Len(t, rows, 3)
	for _, r := range rows {
		assert.Equal(t, 40, r.Records, r.Key)
		assert.InDelta(t, 40.0/60, r.GPUHours, 1e-9, r.Key)
	}
	train := rows[2]
	require.Equal(t, "training", train.Key)
	assert.Equal(t, accounting.Amount(40*20_000), train.Revenue)
	assert.InDelta(t, (train.Revenue-train.Cost).Float()/train.GPUHours, train.MarginPerGPUHour(), 1e-9)

	rows, err = accounting.Summarize(l.Query(ctx, q), accounting.ByWorkload)
	require.NoError(t, err)
	keys := []string{}
	for _, r := range rows {
		keys = append(keys, r.Key)
	}
	assert.Equal(t, []string{"(idle)", "mine-GPU-a", "mine-GPU-b", "train"}, keys)
	rows, err = accounting.Summarize(l.Query(ctx, q), accounting.ByTenant)
	require.NoError(t, err)
	assert.Equal(t, "(idle)", rows[0].Key)
	assert.Equal(t, "acme", rows[1].Key)
}

func TestWallFactor(t *testing.T) {
	f, err := accounting.WallFactor(1.12, 3_600_000_000)
	require.NoError(t, err)
	assert.InDelta(t, 1.12, f, 1e-12, "1.12 kWh at the wall for 1 kWh the GPUs reported")
	_, err = accounting.WallFactor(0, 1)
	assert.ErrorIs(t, err, accounting.ErrInvalid)
}
