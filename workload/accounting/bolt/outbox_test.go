package bolt_test

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/ledgertest"
)

// central is a control plane's store: it keeps the records it took and,
// in the same write, the highest sequence number it took (as a database
// would in one transaction), so that a record delivered again is
// recognised.
type central struct {
	recs    map[uint64]accounting.Record
	applied uint64
	writes  map[uint64]int
}

func (c *central) take(rs []accounting.Record) {
	for _, r := range rs {
		if r.Seq <= c.applied {
			continue // delivered again after a crash before the ack
		}
		c.recs[r.Seq] = r
		c.writes[r.Seq]++
		c.applied = r.Seq
	}
}

// TestOutboxDeliversExactlyOnce drains the outbox into a central store
// while records keep coming, and crashes the node (the ledger closed and
// opened again) at random points: before the central store took a page,
// or after it took it but before the ack. Every record reaches the central
// store exactly once, and acknowledgements survive the restarts.
func TestOutboxDeliversExactlyOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	open := func() *bolt.Ledger {
		l, err := bolt.Open(path)
		require.NoError(t, err)
		return l
	}
	l := open()
	defer func() { _ = l.Close() }()
	rnd := rand.New(rand.NewPCG(7, 7))
	c := &central{recs: map[uint64]accounting.Record{}, writes: map[uint64]int{}}
	stream := ledgertest.Stream("GPU-a", 0, 2000)
	appended, crashes := 0, 0
	for appended < len(stream) || len(c.recs) < len(stream) {
		if appended < len(stream) {
			n := min(1+rnd.IntN(50), len(stream)-appended)
			require.NoError(t, l.Append(ctx, stream[appended:appended+n]))
			appended += n
		}
		page, err := l.Pending(ctx, 1+rnd.IntN(64))
		require.NoError(t, err)
		if len(page) == 0 {
			continue
		}
		switch rnd.IntN(5) {
		case 0: // crash before the central store took the page
			require.NoError(t, l.Close())
			l, crashes = open(), crashes+1
			continue
		case 1: // crash after it took the page, before the ack
			c.take(page)
			require.NoError(t, l.Close())
			l, crashes = open(), crashes+1
			continue
		}
		c.take(page)
		require.NoError(t, l.Ack(ctx, page[len(page)-1].Seq))
	}
	// What the central store took just before a crash is still pending:
	// it is delivered again, recognised, and acknowledged.
	page, err := l.Pending(ctx, len(stream))
	require.NoError(t, err)
	c.take(page)
	require.NoError(t, l.Ack(ctx, c.applied))

	t.Logf("%d records through %d crashes", len(c.recs), crashes)
	assert.Positive(t, crashes)
	require.Len(t, c.recs, len(stream))
	for seq, n := range c.writes {
		require.Equal(t, 1, n, "record %d written once", seq)
		require.True(t, stream[seq-1].Equal(c.recs[seq]))
	}
	require.NoError(t, l.Close())
	l = open()
	page, err = l.Pending(ctx, 10)
	require.NoError(t, err)
	assert.Empty(t, page, "acknowledgements are durable")
}
