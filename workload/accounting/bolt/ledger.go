package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// SchemaVersion is the layout of the file this package writes.
const SchemaVersion = "1"

var (
	bucketMeta     = []byte("meta")
	bucketRecords  = []byte("records")  // seq -> record (JSON)
	bucketByGPU    = []byte("gpu")      // start gpu -> seq
	bucketTails    = []byte("tails")    // gpu -> seq of its newest record
	bucketByEnd    = []byte("end")      // end seq -> nothing
	bucketWorkload = []byte("workload") // workload \0 seq -> nothing

	keySchema = []byte("schema")
	keySeq    = []byte("seq")    // the last sequence number given
	keyAcked  = []byte("acked")  // the outbox's acknowledged sequence number
	keyMaxDur = []byte("maxdur") // the longest record, in ns, for time range scans
)

// Ledger is an accounting.Ledger in a bbolt file. It is safe for
// concurrent use; the file is locked, so one Ledger at a time may have it
// open.
type Ledger struct {
	path string
	log  *slog.Logger
	o    options
	db   *bbolt.DB

	reqs chan *appendReq // to the committer
	pool sync.Pool       // of *appendReq
	stop chan struct{}   // closed by Close
	done chan struct{}   // closed when the committer has returned

	commitMu sync.Mutex                   // one commit at a time (without group commit, Appends race)
	tails    map[string]accounting.Record // each GPU's newest record as committed; nil after a failed commit

	mu        sync.RWMutex // Close waits for calls in flight
	closed    bool
	closeOnce sync.Once
	closeErr  error
}

var _ accounting.Ledger = (*Ledger)(nil)

type appendReq struct {
	recs []accounting.Record
	err  chan error // buffered 1
}

// Option configures Open.
type Option func(*options) error

type options struct {
	timeout     time.Duration
	log         *slog.Logger
	groupCommit bool
	maxBatch    int
	page        int
}

// WithTimeout sets how long Open waits for the file lock that another
// Ledger (in this or another process) holds; default 1 s.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithTimeout(%v): want a positive lock wait", d)
		}
		o.timeout = d
		return nil
	}
}

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("WithLogger(nil): pass a logger, or leave the option out to log nothing")
		}
		o.log = l
		return nil
	}
}

// WithGroupCommit turns group commit on (the default) or off. On, every
// Append waiting while a transaction commits joins the next one: many
// appends share one fsync. Off, each Append is its own transaction (the
// baseline of BenchmarkAppend).
func WithGroupCommit(on bool) Option {
	return func(o *options) error { o.groupCommit = on; return nil }
}

// WithMaxBatch bounds how many records one group commit writes (default
// 50,000).
func WithMaxBatch(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("WithMaxBatch(%d): want at least 1", n)
		}
		o.maxBatch = n
		return nil
	}
}

// Open opens the ledger at path, creating the file (mode 0600) if it does
// not exist, and starts its committer; Close stops it. The parent folder
// must exist. A file of another schema version is refused, not rewritten.
func Open(path string, opts ...Option) (*Ledger, error) {
	o := options{timeout: time.Second, log: slog.New(slog.DiscardHandler), groupCommit: true, maxBatch: 50_000, page: 1024}
	var bad []error
	if path == "" {
		bad = append(bad, errors.New("path is empty: name the ledger's file"))
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			bad = append(bad, err)
		}
	}
	if err := errors.Join(bad...); err != nil {
		return nil, accounting.Errorf(accounting.ErrInvalid, "open ledger %q: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: o.timeout, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open ledger %s: another process (or another Ledger in this one) holds the file's lock, still after %v: close that ledger or use another file: %w: %w",
			path, o.timeout, gpu.ErrBusy, err)
	case err != nil:
		return nil, accounting.Errorf(accounting.ErrLedger, "open ledger %s: %w", path, err)
	}
	if err := initSchema(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", path, err)
	}
	l := &Ledger{path: path, log: o.log, o: o, db: db, reqs: make(chan *appendReq, 1024), stop: make(chan struct{}), done: make(chan struct{})}
	if o.groupCommit {
		go l.committer() // ends when Close closes stop
	} else {
		close(l.done)
	}
	return l, nil
}

func initSchema(db *bbolt.DB) error {
	return db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if tx.Bucket(bucketRecords) != nil || tx.Bucket([]byte("workloads")) != nil {
				return accounting.Errorf(accounting.ErrInvalid, "the file is a bbolt file of something else, not a ledger: give the ledger its own file")
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if err := meta.Put(keySchema, []byte(SchemaVersion)); err != nil {
				return err
			}
		}
		if v := string(meta.Get(keySchema)); v != SchemaVersion {
			return accounting.Errorf(accounting.ErrInvalid, "ledger schema %q, this code reads %q: use the gpufarm version that wrote it", v, SchemaVersion)
		}
		for _, b := range [][]byte{bucketRecords, bucketByGPU, bucketTails, bucketByEnd, bucketWorkload} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Path is the ledger's file.
func (l *Ledger) Path() string { return l.path }

// enter starts a call; the caller must call l.mu.RUnlock when done.
func (l *Ledger) enter(ctx context.Context) error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return accounting.Errorf(accounting.ErrClosed, "ledger %s is closed", l.path)
	}
	if err := ctx.Err(); err != nil {
		l.mu.RUnlock()
		return err
	}
	return nil
}

// Append stores recs, durably, when it returns nil; see accounting.Ledger.
// With group commit it waits for the next commit, which it shares with the
// other appends waiting. If ctx ends first it returns ctx's error and the
// records may or may not be stored: deliver them again, which is safe.
func (l *Ledger) Append(ctx context.Context, recs []accounting.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := l.enter(ctx); err != nil {
		return err
	}
	defer l.mu.RUnlock()
	if !l.o.groupCommit {
		req := &appendReq{recs: recs, err: make(chan error, 1)}
		l.commit([]*appendReq{req})
		return <-req.err
	}
	req, _ := l.pool.Get().(*appendReq)
	if req == nil {
		req = &appendReq{err: make(chan error, 1)}
	}
	req.recs = recs
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.err:
		req.recs = nil
		l.pool.Put(req) // answered: the committer is done with it
		return err
	case <-ctx.Done():
		return ctx.Err() // the committer still holds req; it is not reused
	}
}

// committer writes what is waiting in one transaction, then again, until
// Close. It owns nothing else.
func (l *Ledger) committer() {
	defer close(l.done)
	for {
		var first *appendReq
		select {
		case first = <-l.reqs:
		case <-l.stop:
			return
		}
		batch := []*appendReq{first}
		n := len(first.recs)
	more:
		for n < l.o.maxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
				n += len(r.recs)
			default:
				break more
			}
		}
		l.commit(batch)
	}
}

// commit writes batch in one transaction. A request whose records break
// the ledger's rules fails alone; if the transaction fails, every other
// request fails with it.
func (l *Ledger) commit(batch []*appendReq) {
	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	errs := make([]error, len(batch))
	w := writer{cache: l.tails, overlay: map[string]accounting.Record{}}
	err := l.db.Update(func(tx *bbolt.Tx) error {
		w.meta, w.recs, w.byGPU = tx.Bucket(bucketMeta), tx.Bucket(bucketRecords), tx.Bucket(bucketByGPU)
		w.tails, w.byEnd, w.byWL = tx.Bucket(bucketTails), tx.Bucket(bucketByEnd), tx.Bucket(bucketWorkload)
		w.seq = getUint(w.meta, keySeq)
		w.maxDur = getUint(w.meta, keyMaxDur)
		for i, req := range batch {
			errs[i] = w.add(req.recs)
		}
		for g, r := range w.overlay {
			if err := w.tails.Put([]byte(g), seqKey(r.Seq)); err != nil {
				return err
			}
		}
		if err := putUint(w.meta, keySeq, w.seq); err != nil {
			return err
		}
		return putUint(w.meta, keyMaxDur, w.maxDur)
	})
	if err != nil {
		l.tails = nil // what was cached may be ahead of the file now
	} else {
		if l.tails == nil {
			l.tails = map[string]accounting.Record{}
		}
		for g, r := range w.overlay {
			l.tails[g] = r
		}
	}
	for i, req := range batch {
		e := errs[i]
		if e == nil && err != nil {
			e = accounting.Errorf(accounting.ErrLedger, "ledger %s: commit: %w", l.path, err)
		}
		req.err <- e
	}
}

// writer writes records within one transaction.
type writer struct {
	tx                                    *bbolt.Tx
	meta, recs, byGPU, tails, byEnd, byWL *bbolt.Bucket
	seq, maxDur                           uint64
	overlay                               map[string]accounting.Record // tails written in this transaction
	cache                                 map[string]accounting.Record // tails as last committed, may be nil
	scratch                               map[string]accounting.Record // one request's tails
	arena                                 []byte
}

func (w *writer) tail(gpu string) (accounting.Record, bool, error) {
	if r, ok := w.overlay[gpu]; ok {
		return r, true, nil
	}
	if r, ok := w.cache[gpu]; ok {
		return r, true, nil
	}
	v := w.tails.Get([]byte(gpu))
	if v == nil {
		return accounting.Record{}, false, nil
	}
	return getRecord(w.recs, binary.BigEndian.Uint64(v))
}

// add checks and writes the records of one request, all or none.
func (w *writer) add(recs []accounting.Record) error {
	if w.scratch == nil {
		w.scratch = map[string]accounting.Record{}
	}
	tails := w.scratch
	clear(tails)
	for _, r := range recs {
		if _, ok := tails[r.GPU]; ok {
			continue
		}
		t, ok, err := w.tail(r.GPU)
		if err != nil {
			return err
		}
		if ok {
			tails[r.GPU] = t
		}
	}
	fresh, err := accounting.CheckAppend(recs, tails, func(g string, start time.Time) (accounting.Record, bool, error) {
		v := w.byGPU.Get(gpuKey(nil, g, start))
		if v == nil {
			return accounting.Record{}, false, nil
		}
		return getRecord(w.recs, binary.BigEndian.Uint64(v))
	})
	if err != nil {
		return err
	}
	for _, r := range fresh {
		w.seq++
		r.Seq = w.seq
		// bbolt keeps keys and values until the commit: they are carved
		// from one arena per transaction rather than allocated each.
		sk := w.carve(func(b []byte) []byte { return binary.BigEndian.AppendUint64(b, w.seq) })
		if err := w.recs.Put(sk, w.carve(func(b []byte) []byte { return encode(b, &r) })); err != nil {
			return err
		}
		if err := w.byGPU.Put(w.carve(func(b []byte) []byte { return gpuKey(b, r.GPU, r.Start) }), sk); err != nil {
			return err
		}
		if err := w.byEnd.Put(w.carve(func(b []byte) []byte { return append(appendTime(b, r.End), sk...) }), nil); err != nil {
			return err
		}
		if r.Workload != "" {
			if err := w.byWL.Put(w.carve(func(b []byte) []byte { return append(append(append(b, r.Workload...), 0), sk...) }), nil); err != nil {
				return err
			}
		}
		w.maxDur = max(w.maxDur, uint64(r.Duration()))
		w.overlay[r.GPU] = r
	}
	return nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// timeKey orders times as bytes: nanoseconds since 1970, offset so that
// earlier times sort first.
func timeKey(t time.Time) []byte { return appendTime(nil, t) }

func appendTime(buf []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(buf, uint64(t.UnixNano())^(1<<63))
}

// gpuKey appends start then GPU to buf: records arrive in about time
// order, so new keys land together at the end of the index, however many
// GPUs there are.
func gpuKey(buf []byte, gpu string, start time.Time) []byte {
	return append(appendTime(buf, start), gpu...)
}

// carve appends what fill writes to the transaction's arena and returns
// it, starting a new arena when the old one is full (what was carved from
// the old one stays valid).
func (w *writer) carve(fill func([]byte) []byte) []byte {
	if cap(w.arena)-len(w.arena) < 512 {
		w.arena = make([]byte, 0, 256<<10)
	}
	n := len(w.arena)
	w.arena = fill(w.arena)
	return w.arena[n:len(w.arena):len(w.arena)]
}

func getUint(b *bbolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putUint(b *bbolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v))
}

func getRecord(b *bbolt.Bucket, seq uint64) (accounting.Record, bool, error) {
	v := b.Get(seqKey(seq))
	if v == nil {
		return accounting.Record{}, false, nil
	}
	r, err := decode(v)
	if err != nil {
		return r, false, accounting.Errorf(accounting.ErrLedger, "record %d: %w", seq, err)
	}
	return r, true, nil
}

// view runs fn in a read transaction, as a call of the ledger.
func (l *Ledger) view(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := l.enter(ctx); err != nil {
		return err
	}
	defer l.mu.RUnlock()
	if err := l.db.View(fn); err != nil {
		if errors.Is(err, accounting.ErrLedger) || errors.Is(err, accounting.ErrInvalid) {
			return err
		}
		return accounting.Errorf(accounting.ErrLedger, "ledger %s: %w", l.path, err)
	}
	return nil
}

// Tails returns each GPU's newest record.
func (l *Ledger) Tails(ctx context.Context) (map[string]accounting.Record, error) {
	out := map[string]accounting.Record{}
	err := l.view(ctx, func(tx *bbolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		return tx.Bucket(bucketTails).ForEach(func(k, v []byte) error {
			r, ok, err := getRecord(recs, binary.BigEndian.Uint64(v))
			if err != nil || !ok {
				return errors.Join(err, fmt.Errorf("tail of GPU %s names a missing record", k))
			}
			out[string(k)] = r
			return nil
		})
	})
	return out, err
}

// Query yields the matching records in sequence order, reading a page at a
// time (each page its own read transaction): with Workload set through
// the workload index, with From or To through the index of end times,
// else through all records after AfterSeq.
func (l *Ledger) Query(ctx context.Context, q accounting.Query) iter.Seq2[accounting.Record, error] {
	return func(yield func(accounting.Record, error) bool) {
		switch {
		case q.Workload != "":
			prefix := append([]byte(q.Workload), 0)
			next := q.AfterSeq + 1
			l.pages(ctx, q, yield, func(tx *bbolt.Tx) ([]uint64, bool) {
				var seqs []uint64
				c := tx.Bucket(bucketWorkload).Cursor()
				for k, _ := c.Seek(append(slices.Clone(prefix), seqKey(next)...)); k != nil && bytes.HasPrefix(k, prefix) && len(seqs) < l.o.page; k, _ = c.Next() {
					seqs = append(seqs, binary.BigEndian.Uint64(k[len(prefix):]))
				}
				if len(seqs) == l.o.page {
					next = seqs[len(seqs)-1] + 1
					return seqs, true
				}
				return seqs, false
			})
		case !q.From.IsZero() || !q.To.IsZero():
			var seqs []uint64
			err := l.view(ctx, func(tx *bbolt.Tx) error {
				maxDur := time.Duration(getUint(tx.Bucket(bucketMeta), keyMaxDur))
				c := tx.Bucket(bucketByEnd).Cursor()
				var k []byte
				if q.From.IsZero() {
					k, _ = c.First()
				} else {
					k, _ = c.Seek(timeKey(q.From.Add(1)))
				}
				var stop []byte
				if !q.To.IsZero() {
					stop = timeKey(q.To.Add(maxDur))
				}
				for ; k != nil && (stop == nil || bytes.Compare(k[:8], stop) <= 0); k, _ = c.Next() {
					if s := binary.BigEndian.Uint64(k[8:]); s > q.AfterSeq {
						seqs = append(seqs, s)
					}
				}
				return nil
			})
			if err != nil {
				yield(accounting.Record{}, err)
				return
			}
			slices.Sort(seqs)
			for len(seqs) > 0 {
				page := seqs[:min(len(seqs), l.o.page)]
				seqs = seqs[len(page):]
				if !l.fetch(ctx, q, page, yield) {
					return
				}
			}
		default:
			next := q.AfterSeq + 1
			l.pages(ctx, q, yield, func(tx *bbolt.Tx) ([]uint64, bool) {
				var seqs []uint64
				c := tx.Bucket(bucketRecords).Cursor()
				for k, _ := c.Seek(seqKey(next)); k != nil && len(seqs) < l.o.page; k, _ = c.Next() {
					seqs = append(seqs, binary.BigEndian.Uint64(k))
				}
				if len(seqs) == l.o.page {
					next = seqs[len(seqs)-1] + 1
					return seqs, true
				}
				return seqs, false
			})
		}
	}
}

// pages yields records page by page: list gives the sequence numbers of
// the next page and whether more may follow.
func (l *Ledger) pages(ctx context.Context, q accounting.Query, yield func(accounting.Record, error) bool,
	list func(tx *bbolt.Tx) ([]uint64, bool)) {
	for {
		var seqs []uint64
		var more bool
		err := l.view(ctx, func(tx *bbolt.Tx) error {
			seqs, more = list(tx)
			return nil
		})
		if err != nil {
			yield(accounting.Record{}, err)
			return
		}
		if !l.fetch(ctx, q, seqs, yield) || !more {
			return
		}
	}
}

// fetch reads the records of seqs in one read transaction and yields those
// q matches. It reports whether to go on.
func (l *Ledger) fetch(ctx context.Context, q accounting.Query, seqs []uint64, yield func(accounting.Record, error) bool) bool {
	out := make([]accounting.Record, 0, len(seqs))
	err := l.view(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for _, s := range seqs {
			r, ok, err := getRecord(b, s)
			if err != nil {
				return err
			}
			if ok && q.Match(r) {
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		yield(accounting.Record{}, err)
		return false
	}
	for _, r := range out {
		if !yield(r, nil) {
			return false
		}
	}
	return true
}

// Pending returns up to limit records after the acknowledged one.
func (l *Ledger) Pending(ctx context.Context, limit int) ([]accounting.Record, error) {
	if limit <= 0 {
		return nil, accounting.Errorf(accounting.ErrInvalid, "pending: limit %d: want at least 1", limit)
	}
	var out []accounting.Record
	err := l.view(ctx, func(tx *bbolt.Tx) error {
		acked := getUint(tx.Bucket(bucketMeta), keyAcked)
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(acked + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			r, err := decode(v)
			if err != nil {
				return accounting.Errorf(accounting.ErrLedger, "record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Ack acknowledges every record up to seq, durably.
func (l *Ledger) Ack(ctx context.Context, seq uint64) error {
	if err := l.enter(ctx); err != nil {
		return err
	}
	defer l.mu.RUnlock()
	err := l.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if last := getUint(meta, keySeq); seq > last {
			return accounting.Errorf(accounting.ErrInvalid, "ack %d: the ledger's last record is %d", seq, last)
		}
		if seq <= getUint(meta, keyAcked) {
			return nil
		}
		return putUint(meta, keyAcked, seq)
	})
	if err != nil && !errors.Is(err, accounting.ErrInvalid) {
		return accounting.Errorf(accounting.ErrLedger, "ledger %s: ack %d: %w", l.path, seq, err)
	}
	return err
}

// Close waits for calls in flight, stops the committer and closes the
// file. It is idempotent.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		if l.o.groupCommit {
			close(l.stop)
		}
		<-l.done
		l.closeErr = l.db.Close()
	})
	return l.closeErr
}
