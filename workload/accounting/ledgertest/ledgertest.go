package ledgertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// T0 is where the suite's records start.
var T0 = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// Stream returns n records of one GPU, a minute each from T0 plus offset
// minutes, alternating between a training job of tenant acme, a miner
// and idle.
func Stream(gpu string, offset, n int) []accounting.Record {
	out := make([]accounting.Record, n)
	for i := range out {
		k := offset + i
		r := accounting.Record{GPU: gpu, Start: T0.Add(time.Duration(k) * time.Minute), End: T0.Add(time.Duration(k+1) * time.Minute),
			EnergyMJ: int64(1000 + k), FacilityEnergyMJ: int64(1200 + k), Cost: accounting.Amount(10 * k), Flags: accounting.FlagCounter, EndCounterMJ: uint64(1000 * (k + 1))}
		switch k % 3 {
		case 0:
			r.Workload, r.Attempt, r.Tenant, r.Kind, r.Revenue = "train", 1, "acme", workload.KindTraining, accounting.Amount(20_000)
		case 1:
			r.Workload, r.Attempt, r.Tenant, r.Kind = "mine-"+gpu, 1, "mining", workload.KindMining
		default:
			r.Kind = accounting.KindIdle
		}
		out[i] = r
	}
	return out
}

// Test runs the suite; open returns an empty ledger, which the suite
// closes.
func Test(t *testing.T, open func(t *testing.T) accounting.Ledger) {
	ctx := context.Background()
	fresh := func(t *testing.T) accounting.Ledger {
		l := open(t)
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	all := func(t *testing.T, l accounting.Ledger, q accounting.Query) []accounting.Record {
		t.Helper()
		rs, err := accounting.Collect(l.Query(ctx, q))
		require.NoError(t, err)
		return rs
	}

	t.Run("AppendNumbersInOrder", func(t *testing.T) {
		l := fresh(t)
		a, b := Stream("GPU-a", 0, 3), Stream("GPU-b", 0, 2)
		require.NoError(t, l.Append(ctx, a))
		require.NoError(t, l.Append(ctx, b))
		rs := all(t, l, accounting.Query{})
		require.Len(t, rs, 5)
		for i, r := range rs {
			assert.Equal(t, uint64(i+1), r.Seq, "sequence numbers are dense from 1")
			want := append(append([]accounting.Record(nil), a...), b...)[i]
			assert.True(t, want.Equal(r), "record %d comes back as appended", i)
		}
	})

	t.Run("RedeliveryIsSkipped", func(t *testing.T) {
		l := fresh(t)
		s := Stream("GPU-a", 0, 10)
		require.NoError(t, l.Append(ctx, s[:6]))
		require.NoError(t, l.Append(ctx, s[3:]), "the overlap is delivered again: skipped, the rest stored")
		require.NoError(t, l.Append(ctx, s))
		rs := all(t, l, accounting.Query{})
		require.Len(t, rs, 10, "no duplicates")
		assert.Equal(t, uint64(10), rs[9].Seq, "skipped records take no numbers")
	})

	t.Run("ConflictsAndHolesAreRefusedWhole", func(t *testing.T) {
		l := fresh(t)
		s := Stream("GPU-a", 0, 4)
		require.NoError(t, l.Append(ctx, s[:2]))
		changed := s[1]
		changed.EnergyMJ++
		err := l.Append(ctx, []accounting.Record{changed, s[2]})
		require.ErrorIs(t, err, accounting.ErrConflict)
		assert.Contains(t, err.Error(), "differs")
		err = l.Append(ctx, append(Stream("GPU-b", 0, 1), s[3]))
		require.ErrorIs(t, err, accounting.ErrConflict)
		assert.Contains(t, err.Error(), "hole")
		assert.Len(t, all(t, l, accounting.Query{}), 2, "a refused call stores nothing, not even its good records")
	})

	t.Run("BadRecordsAreInvalid", func(t *testing.T) {
		l := fresh(t)
		for name, mod := range map[string]func(*accounting.Record){
			"seq":      func(r *accounting.Record) { r.Seq = 7 },
			"no gpu":   func(r *accounting.Record) { r.GPU = "" },
			"backward": func(r *accounting.Record) { r.End = r.Start },
			"negative": func(r *accounting.Record) { r.EnergyMJ = -1 },
			"idle job": func(r *accounting.Record) { r.Kind, r.Workload = accounting.KindIdle, "x" },
		} {
			r := Stream("GPU-a", 0, 1)[0]
			mod(&r)
			assert.ErrorIs(t, l.Append(ctx, []accounting.Record{r}), accounting.ErrInvalid, name)
		}
		assert.Empty(t, all(t, l, accounting.Query{}))
	})

	t.Run("Query", func(t *testing.T) {
		l := fresh(t)
		for _, g := range []string{"GPU-a", "GPU-b"} {
			require.NoError(t, l.Append(ctx, Stream(g, 0, 30)))
		}
		count := func(q accounting.Query) int { return len(all(t, l, q)) }
		assert.Equal(t, 30, count(accounting.Query{GPU: "GPU-a"}))
		assert.Equal(t, 20, count(accounting.Query{Workload: "train"}))
		assert.Equal(t, 20, count(accounting.Query{Tenant: "acme"}))
		assert.Equal(t, 10, count(accounting.Query{Workload: "mine-GPU-b"}))
		assert.Equal(t, 20, count(accounting.Query{Kind: accounting.KindIdle}))
		assert.Equal(t, 10, count(accounting.Query{From: T0.Add(10 * time.Minute), To: T0.Add(15 * time.Minute)}), "five minutes of two GPUs")
		assert.Equal(t, 2, count(accounting.Query{From: T0.Add(10*time.Minute + 30*time.Second), To: T0.Add(10*time.Minute + 40*time.Second)}),
			"records overlapping the range")
		assert.Equal(t, 4, count(accounting.Query{Workload: "train", From: T0, To: T0.Add(6 * time.Minute)}))
		assert.Equal(t, 50, count(accounting.Query{AfterSeq: 10}))
		rs := all(t, l, accounting.Query{From: T0.Add(time.Minute)})
		for i := 1; i < len(rs); i++ {
			assert.Less(t, rs[i-1].Seq, rs[i].Seq, "in sequence order")
		}
		n := 0
		for range l.Query(ctx, accounting.Query{}) {
			n++
			if n == 3 {
				break
			}
		}
		assert.Equal(t, 3, n, "a reader can stop early")
	})

	t.Run("QueryReadsPastAPage", func(t *testing.T) {
		l := fresh(t)
		s := Stream("GPU-a", 0, 2500)
		require.NoError(t, l.Append(ctx, s))
		assert.Len(t, all(t, l, accounting.Query{}), 2500)
		assert.Len(t, all(t, l, accounting.Query{Workload: "train"}), 834)
		assert.Len(t, all(t, l, accounting.Query{From: T0, To: T0.Add(2000 * time.Minute)}), 2000)
	})

	t.Run("Tails", func(t *testing.T) {
		l := fresh(t)
		tails, err := l.Tails(ctx)
		require.NoError(t, err)
		assert.Empty(t, tails)
		require.NoError(t, l.Append(ctx, Stream("GPU-a", 0, 5)))
		require.NoError(t, l.Append(ctx, Stream("GPU-b", 0, 2)))
		tails, err = l.Tails(ctx)
		require.NoError(t, err)
		require.Len(t, tails, 2)
		assert.True(t, tails["GPU-a"].End.Equal(T0.Add(5*time.Minute)))
		assert.Equal(t, uint64(5000), tails["GPU-a"].EndCounterMJ)
		assert.Equal(t, uint64(7), tails["GPU-b"].Seq)
	})

	t.Run("Outbox", func(t *testing.T) {
		l := fresh(t)
		require.NoError(t, l.Append(ctx, Stream("GPU-a", 0, 7)))
		p, err := l.Pending(ctx, 5)
		require.NoError(t, err)
		require.Len(t, p, 5)
		assert.Equal(t, uint64(1), p[0].Seq)
		require.NoError(t, l.Ack(ctx, 5))
		require.NoError(t, l.Ack(ctx, 3), "acknowledging less again does nothing")
		p, err = l.Pending(ctx, 5)
		require.NoError(t, err)
		require.Len(t, p, 2)
		assert.Equal(t, uint64(6), p[0].Seq)
		assert.ErrorIs(t, l.Ack(ctx, 8), accounting.ErrInvalid, "nothing beyond the last record can be acknowledged")
		_, err = l.Pending(ctx, 0)
		assert.ErrorIs(t, err, accounting.ErrInvalid)
		require.NoError(t, l.Ack(ctx, 7))
		p, err = l.Pending(ctx, 5)
		require.NoError(t, err)
		assert.Empty(t, p)
	})

	t.Run("ConcurrentAppends", func(t *testing.T) {
		l := fresh(t)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := Stream(fmt.Sprintf("GPU-%d", g), 0, 200)
				for i := 0; i < len(s); i += 7 {
					assert.NoError(t, l.Append(ctx, s[i:min(i+7, len(s))]))
				}
			}()
		}
		wg.Wait()
		rs := all(t, l, accounting.Query{})
		require.Len(t, rs, 1600)
		end := map[string]time.Time{}
		for i, r := range rs {
			assert.Equal(t, uint64(i+1), r.Seq)
			if e, ok := end[r.GPU]; ok {
				assert.True(t, r.Start.Equal(e), "each GPU's records follow on")
			}
			end[r.GPU] = r.End
		}
	})

	t.Run("Close", func(t *testing.T) {
		l := open(t)
		require.NoError(t, l.Close())
		require.NoError(t, l.Close(), "Close is idempotent")
		assert.ErrorIs(t, l.Append(ctx, Stream("GPU-a", 0, 1)), accounting.ErrClosed)
		_, err := l.Tails(ctx)
		assert.ErrorIs(t, err, accounting.ErrClosed)
		_, err = accounting.Collect(l.Query(ctx, accounting.Query{}))
		assert.ErrorIs(t, err, accounting.ErrClosed)
		assert.ErrorIs(t, l.Ack(ctx, 0), accounting.ErrClosed)
	})
}
