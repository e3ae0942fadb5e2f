package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
)

// SchemaVersion is the layout version this package writes and reads.
// Version 1 files (records only) are upgraded in place when opened.
const SchemaVersion = 2

// ErrCorrupt: a stored record cannot be decoded. The error names the id;
// Delete it, or restore the file from a backup.
var ErrCorrupt = fmt.Errorf("bolt: corrupt record: %w", gpu.ErrInvalid)

var (
	bucketWorkloads = []byte("workloads")
	bucketMeta      = []byte("meta")
	bucketEvents    = []byte("events")   // big-endian Seq -> event
	bucketSettings  = []byte("settings") // key -> value
	bucketLogs      = []byte("logs")     // workload ID -> log tail
	keySchema       = []byte("schema")
)

// v2Buckets are the buckets schema 2 adds to schema 1.
var v2Buckets = [][]byte{bucketEvents, bucketSettings, bucketLogs}

// Store is a workload.Store in a bbolt file. It is safe for concurrent use;
// the file is locked, so one Store at a time may have it open.
type Store struct {
	path string
	log  *slog.Logger

	// mu makes Close wait for calls in flight, and calls after Close fail
	// with ErrClosed instead of bbolt's "database not open".
	mu     sync.RWMutex
	db     *bbolt.DB
	closed bool
}

var (
	_ workload.EventStore   = (*Store)(nil)
	_ workload.SettingStore = (*Store)(nil)
	_ workload.LogStore     = (*Store)(nil)
)

// Option configures Open.
type Option func(*options)

type options struct {
	timeout    time.Duration
	log        *slog.Logger
	badTimeout bool
	nilLogger  bool
}

// WithTimeout sets how long Open waits for the file lock that another Store
// (in this or another process) holds; default 1s. It must be positive:
// bbolt would take zero as "wait for ever".
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout, o.badTimeout = d, d <= 0 }
}

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log, o.nilLogger = l, l == nil }
}

// Open opens the store at path, creating the file (mode 0600) if it does
// not exist. The parent folder must exist. The file holds a schema version;
// a file of another version is refused, not rewritten.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{timeout: time.Second, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	// Report every bad argument at once, before touching the file.
	var bad []error
	if path == "" {
		bad = append(bad, errors.New("path is empty: name the store's file"))
	}
	if o.badTimeout {
		bad = append(bad, fmt.Errorf("WithTimeout(%v): want a positive lock wait", o.timeout))
	}
	if o.nilLogger {
		bad = append(bad, errors.New("WithLogger(nil): pass a logger, or leave the option out to log nothing"))
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("bolt: open %q: %w: %w", path, gpu.ErrInvalid, errors.Join(bad...))
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: o.timeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("bolt: open %s: another process (or another Store in this one) holds the file's lock, still after %v: close that store or use another file: %w: %w",
			path, o.timeout, gpu.ErrBusy, err)
	case err != nil:
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	created, err := initSchema(db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	if created {
		o.log.Info("created workload store", "path", path, "schema", SchemaVersion)
	}
	o.log.Debug("opened workload store", "path", path)
	return &Store{path: path, log: o.log, db: db}, nil
}

// initSchema writes the schema version into a new file, upgrades a
// version 1 file, or checks the version an existing file carries. On error
// it changes nothing.
func initSchema(db *bbolt.DB) (created bool, err error) {
	err = db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if tx.Bucket(bucketWorkloads) != nil {
				return fmt.Errorf("file has workloads but no schema version: it was not written by this package: %w", gpu.ErrUnsupported)
			}
			created = true
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketWorkloads); err != nil {
				return err
			}
			return upgrade(tx, meta)
		}
		raw := meta.Get(keySchema)
		v, err := strconv.Atoi(string(raw))
		switch {
		case err == nil && v == 1:
			if tx.Bucket(bucketWorkloads) == nil {
				return fmt.Errorf("schema 1 file lacks its %q bucket: %w", bucketWorkloads, ErrCorrupt)
			}
			return upgrade(tx, meta)
		case err != nil || v != SchemaVersion:
			return fmt.Errorf("schema version %q, this build reads %d: open it with the gpufarm version that wrote it, or use a new file: %w",
				raw, SchemaVersion, gpu.ErrUnsupported)
		}
		for _, b := range append([][]byte{bucketWorkloads}, v2Buckets...) {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("schema %d file lacks its %q bucket: %w", SchemaVersion, b, ErrCorrupt)
			}
		}
		return nil
	})
	return created, err
}

// upgrade brings a new or version 1 file to the current schema: the new
// buckets, and a live record's cancellation (version 1's CancelRequested)
// as its Outcome.
func upgrade(tx *bbolt.Tx, meta *bbolt.Bucket) error {
	for _, b := range v2Buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	recs := tx.Bucket(bucketWorkloads)
	type v1 struct {
		CancelRequested bool
	}
	var fix [][2][]byte
	err := recs.ForEach(func(k, v []byte) error {
		var old v1
		var w workload.Workload
		if json.Unmarshal(v, &old) != nil || !old.CancelRequested || json.Unmarshal(v, &w) != nil || w.State.Final() {
			return nil
		}
		w.Outcome = workload.StateCancelled
		data, err := json.Marshal(w)
		if err != nil {
			return err
		}
		fix = append(fix, [2][]byte{append([]byte(nil), k...), data})
		return nil
	})
	if err != nil {
		return err
	}
	for _, kv := range fix {
		if err := recs.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
}

// Path returns the store's file.
func (s *Store) Path() string { return s.path }

// update runs fn in one read-write transaction, committed with an fsync
// before it returns: a Put that returned nil survives a crash.
func (s *Store) update(ctx context.Context, op string, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("bolt: %s: %s: %w", op, s.path, workload.ErrClosed)
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		// The wait for the writer lock may have outlived ctx.
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(tx)
	})
	if err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	return nil
}

// view runs fn in one read-only transaction.
func (s *Store) view(ctx context.Context, op string, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("bolt: %s: %s: %w", op, s.path, workload.ErrClosed)
	}
	if err := s.db.View(fn); err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	return nil
}

// encodeRecord checks and encodes a record.
func encodeRecord(op string, w workload.Workload) ([]byte, error) {
	if w.Spec.ID == "" {
		return nil, fmt.Errorf("bolt: %s: Spec.ID is empty: %w", op, workload.ErrInvalid)
	}
	data, err := json.Marshal(w)
	if err != nil { // a NaN or infinite float
		return nil, fmt.Errorf("bolt: %s: record cannot be stored as JSON: %w: %w", op, workload.ErrInvalid, err)
	}
	return data, nil
}

// encodeEvent encodes an event under its big-endian Seq, so that keys
// sort as sequence numbers.
func encodeEvent(op string, ev workload.Event) (key, data []byte, err error) {
	data, err = json.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("bolt: %s: event cannot be stored as JSON: %w: %w", op, workload.ErrInvalid, err)
	}
	return binary.BigEndian.AppendUint64(nil, ev.Seq), data, nil
}

// Put stores w under w.Spec.ID, replacing any record of that id.
func (s *Store) Put(ctx context.Context, w workload.Workload) error {
	op := fmt.Sprintf("put %q", w.Spec.ID)
	data, err := encodeRecord(op, w)
	if err != nil {
		return err
	}
	return s.update(ctx, op, func(tx *bbolt.Tx) error { return tx.Bucket(bucketWorkloads).Put([]byte(w.Spec.ID), data) })
}

// Commit stores w and appends ev in one transaction.
func (s *Store) Commit(ctx context.Context, w workload.Workload, ev workload.Event) error {
	op := fmt.Sprintf("commit %q with event %d", w.Spec.ID, ev.Seq)
	data, err := encodeRecord(op, w)
	if err != nil {
		return err
	}
	key, evData, err := encodeEvent(op, ev)
	if err != nil {
		return err
	}
	return s.update(ctx, op, func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketWorkloads).Put([]byte(w.Spec.ID), data); err != nil {
			return err
		}
		return tx.Bucket(bucketEvents).Put(key, evData)
	})
}

// Append appends a node event.
func (s *Store) Append(ctx context.Context, ev workload.Event) error {
	op := fmt.Sprintf("append event %d", ev.Seq)
	key, data, err := encodeEvent(op, ev)
	if err != nil {
		return err
	}
	return s.update(ctx, op, func(tx *bbolt.Tx) error { return tx.Bucket(bucketEvents).Put(key, data) })
}

// Events returns up to limit events with Seq above after, in order. An
// event that cannot be decoded fails the call, naming its Seq.
func (s *Store) Events(ctx context.Context, after uint64, limit int) ([]workload.Event, error) {
	var out []workload.Event
	err := s.view(ctx, "events", func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && len(out) < limit; k, v = c.Next() {
			var ev workload.Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("event %d: %w: %w", binary.BigEndian.Uint64(k), ErrCorrupt, err)
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// LastSeq is the highest Seq in the event log, 0 when it is empty.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	var seq uint64
	err := s.view(ctx, "last event", func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); k != nil {
			seq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return seq, err
}

// TrimEvents deletes the events with Seq up to upTo.
func (s *Store) TrimEvents(ctx context.Context, upTo uint64) error {
	return s.update(ctx, fmt.Sprintf("trim events to %d", upTo), func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutSetting stores a node setting.
func (s *Store) PutSetting(ctx context.Context, key string, value []byte) error {
	return s.putIn(ctx, bucketSettings, "setting", key, value)
}

// Setting returns a node setting, nil when it was never set.
func (s *Store) Setting(ctx context.Context, key string) ([]byte, error) {
	return s.getFrom(ctx, bucketSettings, "setting", key)
}

// PutLog stores the kept log tail of a workload.
func (s *Store) PutLog(ctx context.Context, id string, tail []byte) error {
	return s.putIn(ctx, bucketLogs, "log of", id, tail)
}

// Log returns the kept log tail of a workload, nil when none is kept.
func (s *Store) Log(ctx context.Context, id string) ([]byte, error) {
	return s.getFrom(ctx, bucketLogs, "log of", id)
}

// putIn stores one value under key in a bucket of plain values.
func (s *Store) putIn(ctx context.Context, bucket []byte, what, key string, value []byte) error {
	return s.update(ctx, fmt.Sprintf("put %s %q", what, key), func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(key), value)
	})
}

// getFrom reads the value under key, a copy, or nil when there is none.
func (s *Store) getFrom(ctx context.Context, bucket []byte, what, key string) ([]byte, error) {
	var v []byte
	err := s.view(ctx, fmt.Sprintf("read %s %q", what, key), func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucket).Get([]byte(key)); b != nil {
			v = append([]byte{}, b...)
		}
		return nil
	})
	return v, err
}

// Delete removes the record of id and its kept log; a missing one is not
// an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	return s.update(ctx, fmt.Sprintf("delete %q", id), func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketWorkloads).Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketLogs).Delete([]byte(id))
	})
}

// List returns every record, sorted by id. If any record cannot be decoded
// it returns no records and an error, wrapping ErrCorrupt, that names every
// such id.
func (s *Store) List(ctx context.Context) ([]workload.Workload, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bolt: list: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("bolt: list: %s: %w", s.path, workload.ErrClosed)
	}
	var out []workload.Workload
	var bad []error
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketWorkloads).ForEach(func(k, v []byte) error {
			var w workload.Workload
			if err := json.Unmarshal(v, &w); err != nil {
				bad = append(bad, fmt.Errorf("record %q: %w", k, err))
				return nil
			}
			if w.Spec.ID != string(k) {
				bad = append(bad, fmt.Errorf("record %q holds Spec.ID %q", k, w.Spec.ID))
				return nil
			}
			out = append(out, w)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list: %w", err)
	}
	if len(bad) > 0 {
		s.log.Warn("corrupt workload records", "path", s.path, "count", len(bad))
		return nil, fmt.Errorf("bolt: list %s: %w: delete these ids or restore the file: %w", s.path, ErrCorrupt, errors.Join(bad...))
	}
	return out, nil
}

// Close closes the file and releases its lock, after the calls in flight
// end. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", s.path, err)
	}
	s.log.Debug("closed workload store", "path", s.path)
	return nil
}
