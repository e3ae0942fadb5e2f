package accounting

import (
	"context"
	"iter"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/workload"
)

// Ledger keeps records durably and in order. The bbolt file of package
// workload/accounting/bolt is the one for a node; NewMemoryLedger keeps
// them in memory for tests and demos; a control plane can supply its own.
// Package ledgertest is the conformance suite every Ledger passes.
//
// Implementations are safe for concurrent use.
type Ledger interface {
	// Append stores recs, atomically: all or none. Each GPU's records
	// must follow on from its last one (Start equal to the previous End;
	// the first of a GPU may start anywhere). A record the ledger already
	// holds (same GPU and Start, Equal content) is skipped, so delivering
	// again after a crash or a failed call is safe; one that differs, or
	// that would leave a hole, fails the call with ErrConflict. Records
	// that fail Validate, or carry a Seq, fail it with ErrInvalid. When
	// Append returns nil the records are durable and have sequence
	// numbers one above the last, in the order given.
	Append(ctx context.Context, recs []Record) error
	// Tails returns the newest record of each GPU, by UUID.
	Tails(ctx context.Context) (map[string]Record, error)
	// Query yields the records that match q in sequence order. It reads in
	// pages, so a slow reader does not hold up writers.
	Query(ctx context.Context, q Query) iter.Seq2[Record, error]
	// Pending returns up to limit records not yet acknowledged with Ack,
	// oldest first: the outbox a control plane drains.
	Pending(ctx context.Context, limit int) ([]Record, error)
	// Ack acknowledges every record up to and including seq. Acknowledging
	// again, or less than before, does nothing; beyond the last record it
	// fails with ErrInvalid.
	Ack(ctx context.Context, seq uint64) error
	// Close releases the ledger; it is idempotent. Later calls fail with
	// ErrClosed.
	Close() error
}

// Query selects records; zero fields select everything.
type Query struct {
	// From and To select records that overlap [From, To).
	From, To time.Time
	GPU      string
	Workload string
	Tenant   string
	Kind     workload.Kind
	// AfterSeq selects records with a larger sequence number.
	AfterSeq uint64
}

// Match reports whether r is selected by q.
func (q Query) Match(r Record) bool {
	return (q.From.IsZero() || r.End.After(q.From)) && (q.To.IsZero() || r.Start.Before(q.To)) &&
		(q.GPU == "" || r.GPU == q.GPU) && (q.Workload == "" || r.Workload == q.Workload) &&
		(q.Tenant == "" || r.Tenant == q.Tenant) && (q.Kind == "" || r.Kind == q.Kind) && r.Seq > q.AfterSeq
}

// Collect gathers what a Query yields.
func Collect(seq iter.Seq2[Record, error]) ([]Record, error) {
	var out []Record
	for r, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// CheckAppend applies Append's rules to recs against the GPUs' newest
// records, which it updates: it returns the records to store (re-delivered
// ones left out; recs itself, not a copy, when none is) or the error
// Append must return. lookup finds a stored
// record of a GPU by its start. Ledger implementations call it.
func CheckAppend(recs []Record, tails map[string]Record, lookup func(gpu string, start time.Time) (Record, bool, error)) ([]Record, error) {
	fresh := recs[:0:0] // recs itself while nothing is skipped
	skipped := false
	for i, r := range recs {
		if r.Seq != 0 {
			return nil, Errorf(ErrInvalid, "record of GPU %s from %s carries sequence number %d: the ledger assigns them", r.GPU, r.Start.Format(time.RFC3339Nano), r.Seq)
		}
		if err := r.Validate(); err != nil {
			return nil, err
		}
		tail, ok := tails[r.GPU]
		switch {
		case !ok || r.Start.Equal(tail.End):
			if skipped {
				fresh = append(fresh, r)
			} else {
				fresh = recs[:i+1]
			}
			tails[r.GPU] = r
		case r.Start.Before(tail.End):
			old, found, err := lookup(r.GPU, r.Start)
			if err != nil {
				return nil, err
			}
			if !found || !old.Equal(r) {
				return nil, Errorf(ErrConflict, "record of GPU %s from %s differs from the one the ledger holds for that time: a ledger takes a GPU's records once, and the same again only unchanged",
					r.GPU, r.Start.Format(time.RFC3339Nano))
			}
			if !skipped {
				fresh, skipped = append([]Record(nil), fresh...), true
			}
		default:
			return nil, Errorf(ErrConflict, "record of GPU %s from %s leaves a hole after the ledger's last one, which ends at %s: deliver the records in between first",
				r.GPU, r.Start.Format(time.RFC3339Nano), tail.End.Format(time.RFC3339Nano))
		}
	}
	return fresh, nil
}

// MemoryLedger is a Ledger in memory: nothing survives the process. Use it
// in tests and demos; a node keeps its ledger in a bbolt file.
type MemoryLedger struct {
	mu      sync.Mutex
	closed  bool
	recs    []Record // by Seq-1
	byStart map[string]map[int64]int
	tails   map[string]Record
	acked   uint64
}

var _ Ledger = (*MemoryLedger)(nil)

// NewMemoryLedger returns an empty ledger in memory.
func NewMemoryLedger() *MemoryLedger {
	return &MemoryLedger{byStart: map[string]map[int64]int{}, tails: map[string]Record{}}
}

func (l *MemoryLedger) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.closed {
		return Errorf(ErrClosed, "memory ledger is closed")
	}
	return nil
}

// Append stores recs; see Ledger.
func (l *MemoryLedger) Append(ctx context.Context, recs []Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(ctx); err != nil {
		return err
	}
	tails := make(map[string]Record, len(recs))
	for _, r := range recs {
		if t, ok := l.tails[r.GPU]; ok {
			tails[r.GPU] = t
		}
	}
	fresh, err := CheckAppend(recs, tails, func(gpu string, start time.Time) (Record, bool, error) {
		i, ok := l.byStart[gpu][start.UnixNano()]
		if !ok {
			return Record{}, false, nil
		}
		return l.recs[i], true, nil
	})
	if err != nil {
		return err
	}
	for _, r := range fresh {
		r.Seq = uint64(len(l.recs)) + 1
		if l.byStart[r.GPU] == nil {
			l.byStart[r.GPU] = map[int64]int{}
		}
		l.byStart[r.GPU][r.Start.UnixNano()] = len(l.recs)
		l.recs = append(l.recs, r)
		l.tails[r.GPU] = r
	}
	return nil
}

// Tails returns each GPU's newest record.
func (l *MemoryLedger) Tails(ctx context.Context) (map[string]Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]Record, len(l.tails))
	for k, v := range l.tails {
		out[k] = v
	}
	return out, nil
}

// Query yields the matching records in sequence order.
func (l *MemoryLedger) Query(ctx context.Context, q Query) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		l.mu.Lock()
		if err := l.usable(ctx); err != nil {
			l.mu.Unlock()
			yield(Record{}, err)
			return
		}
		var out []Record
		for _, r := range l.recs[min(q.AfterSeq, uint64(len(l.recs))):] {
			if q.Match(r) {
				out = append(out, r)
			}
		}
		l.mu.Unlock()
		for _, r := range out {
			if !yield(r, nil) {
				return
			}
		}
	}
}

// Pending returns up to limit unacknowledged records.
func (l *MemoryLedger) Pending(ctx context.Context, limit int) ([]Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, Errorf(ErrInvalid, "pending: limit %d: want at least 1", limit)
	}
	rest := l.recs[l.acked:]
	return append([]Record(nil), rest[:min(limit, len(rest))]...), nil
}

// Ack acknowledges records up to seq.
func (l *MemoryLedger) Ack(ctx context.Context, seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(ctx); err != nil {
		return err
	}
	if seq > uint64(len(l.recs)) {
		return Errorf(ErrInvalid, "ack %d: the ledger's last record is %d", seq, len(l.recs))
	}
	l.acked = max(l.acked, seq)
	return nil
}

// Close empties nothing and refuses later calls.
func (l *MemoryLedger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	return nil
}
