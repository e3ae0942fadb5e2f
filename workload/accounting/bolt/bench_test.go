package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

// appendAll appends each stream's records, batch records per call, a
// goroutine per stream, and returns how long it took.
func appendAll(b *testing.B, l *bolt.Ledger, streams [][]accounting.Record, batch int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(s); i += batch {
				if err := l.Append(ctx, s[i:min(i+batch, len(s))]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

func streams(n, perStream int) [][]accounting.Record {
	out := make([][]accounting.Record, n)
	for g := range out {
		out[g] = ledgertest.Stream(fmt.Sprintf("GPU-%04d", g), 0, perStream)
	}
	return out
}

// BenchmarkAppend appends records durably with group commit and, in the
// same run, with one bbolt transaction per record, and reports both rates
// and their ratio. Writers are concurrent streams (one per GPU, as each
// GPU's records go in order); "single" appends one record per call, so
// only group commit joins them, "window" appends 8 per call, as a meter
// does at the end of each record window.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct {
		name           string
		writers, batch int
	}{{"single", 2048, 1}, {"window", 256, 8}} {
		b.Run(c.name, func(b *testing.B) {
			open := func(gc bool) *bolt.Ledger {
				l, err := bolt.Open(filepath.Join(b.TempDir(), "ledger.db"), bolt.WithGroupCommit(gc))
				require.NoError(b, err)
				b.Cleanup(func() { _ = l.Close() })
				return l
			}
			per := max(c.batch, b.N/c.writers)
			grouped := float64(c.writers*per) / appendAll(b, open(true), streams(c.writers, per), c.batch).Seconds()
			// The baseline is slower by far: a smaller run measures its rate.
			perTx := max(1, per/40)
			single := float64(c.writers*perTx) / appendAll(b, open(false), streams(c.writers, perTx), 1).Seconds()
			b.ReportMetric(grouped, "records/s")
			b.ReportMetric(single, "tx-per-record-records/s")
			b.ReportMetric(grouped/single, "x-faster")
		})
	}
}
