package bolt

import (
	"context"
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
const SchemaVersion = 1

// ErrCorrupt: a stored record cannot be decoded. The error names the id;
// Delete it, or restore the file from a backup.
var ErrCorrupt = fmt.Errorf("bolt: corrupt record: %w", gpu.ErrInvalid)

var (
	bucketWorkloads = []byte("workloads")
	bucketMeta      = []byte("meta")
	keySchema       = []byte("schema")
)

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

var _ workload.Store = (*Store)(nil)

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

// initSchema writes the schema version into a new file, or checks the one
// an existing file carries. On error it changes nothing.
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
			if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
				return err
			}
			_, err := tx.CreateBucket(bucketWorkloads)
			return err
		}
		raw := meta.Get(keySchema)
		if v, err := strconv.Atoi(string(raw)); err != nil || v != SchemaVersion {
			return fmt.Errorf("schema version %q, this build reads %d: open it with the gpufarm version that wrote it, or use a new file: %w",
				raw, SchemaVersion, gpu.ErrUnsupported)
		}
		if tx.Bucket(bucketWorkloads) == nil {
			return fmt.Errorf("schema %d file lacks its %q bucket: %w", SchemaVersion, bucketWorkloads, ErrCorrupt)
		}
		return nil
	})
	return created, err
}

// Path returns the store's file.
func (s *Store) Path() string { return s.path }

// update runs fn in one read-write transaction, committed with an fsync
// before it returns: a Put that returned nil survives a crash.
func (s *Store) update(ctx context.Context, op string, fn func(b *bbolt.Bucket) error) error {
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
		return fn(tx.Bucket(bucketWorkloads))
	})
	if err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	return nil
}

// Put stores w under w.Spec.ID, replacing any record of that id.
func (s *Store) Put(ctx context.Context, w workload.Workload) error {
	op := fmt.Sprintf("put %q", w.Spec.ID)
	if w.Spec.ID == "" {
		return fmt.Errorf("bolt: %s: Spec.ID is empty: %w", op, workload.ErrInvalid)
	}
	data, err := json.Marshal(w)
	if err != nil { // a NaN or infinite float
		return fmt.Errorf("bolt: %s: record cannot be stored as JSON: %w: %w", op, workload.ErrInvalid, err)
	}
	return s.update(ctx, op, func(b *bbolt.Bucket) error { return b.Put([]byte(w.Spec.ID), data) })
}

// Delete removes the record of id; a missing one is not an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	return s.update(ctx, fmt.Sprintf("delete %q", id), func(b *bbolt.Bucket) error { return b.Delete([]byte(id)) })
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
