package workload

import (
	"context"
	"slices"
	"sort"
	"sync"
)

// Store keeps workload records durably: the queue of pending work is the
// set of queued records, so it survives a restart. The manager is the only
// writer, and writes in the order things happen; a write that returned nil
// must survive a crash. Implementations: NewMemoryStore for tests,
// workload/bolt for a node; a control plane may supply its own, and
// workload/storetest checks it.
//
// A store may do more through optional interfaces, found with a type
// assertion as database/sql finds a driver's: EventStore (Watch replays
// across restarts), SettingStore (cordons and the power budget survive restarts) and LogStore
// (a finished workload's log tail is kept). Without them those live in
// memory only.
type Store interface {
	// Put inserts or replaces the record with w.Spec.ID.
	Put(ctx context.Context, w Workload) error
	// Delete removes a record, with its log tail when the store keeps
	// them; deleting a missing one is not an error.
	Delete(ctx context.Context, id string) error
	// List returns every record, in no particular order.
	List(ctx context.Context) ([]Workload, error)
	// Close releases the store. It is idempotent.
	Close() error
}

// EventStore is a Store that keeps the event log.
type EventStore interface {
	Store
	// Commit stores w and appends ev in one write: both or neither.
	Commit(ctx context.Context, w Workload, ev Event) error
	// Append appends node events, which change no record.
	Append(ctx context.Context, ev Event) error
	// Events returns up to limit events with Seq above after, in order.
	Events(ctx context.Context, after uint64, limit int) ([]Event, error)
	// LastSeq is the highest Seq stored, 0 when none is.
	LastSeq(ctx context.Context) (uint64, error)
	// TrimEvents deletes the events with Seq up to upTo.
	TrimEvents(ctx context.Context, upTo uint64) error
}

// SettingStore is a Store that keeps node settings (cordons, the power
// budget) by key.
type SettingStore interface {
	Store
	PutSetting(ctx context.Context, key string, value []byte) error
	// Setting returns nil, and no error, for a key never set.
	Setting(ctx context.Context, key string) ([]byte, error)
}

// LogStore is a Store that keeps the tail of a workload's output after its
// container is gone, until the record is deleted.
type LogStore interface {
	Store
	PutLog(ctx context.Context, id string, tail []byte) error
	// Log returns nil, and no error, for a workload without a kept log.
	Log(ctx context.Context, id string) ([]byte, error)
}

// MemoryStore is a Store, EventStore, SettingStore and LogStore that
// forgets everything when the process ends.
type MemoryStore struct {
	mu       sync.Mutex
	recs     map[string]Workload
	events   []Event // in Seq order
	settings map[string][]byte
	logs     map[string][]byte
	closed   bool
}

var (
	_ EventStore   = (*MemoryStore)(nil)
	_ SettingStore = (*MemoryStore)(nil)
	_ LogStore     = (*MemoryStore)(nil)
)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{recs: map[string]Workload{}, settings: map[string][]byte{}, logs: map[string][]byte{}}
}

// do runs fn under the lock once ctx and the store allow it.
func (s *MemoryStore) do(ctx context.Context, fn func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	fn()
	return nil
}

func (s *MemoryStore) Put(ctx context.Context, w Workload) error {
	return s.do(ctx, func() { s.recs[w.Spec.ID] = w.clone() })
}

func (s *MemoryStore) Commit(ctx context.Context, w Workload, ev Event) error {
	return s.do(ctx, func() {
		s.recs[w.Spec.ID] = w.clone()
		s.events = append(s.events, ev.clone())
	})
}

func (s *MemoryStore) Append(ctx context.Context, ev Event) error {
	return s.do(ctx, func() { s.events = append(s.events, ev.clone()) })
}

func (s *MemoryStore) Events(ctx context.Context, after uint64, limit int) ([]Event, error) {
	var out []Event
	err := s.do(ctx, func() {
		i := sort.Search(len(s.events), func(i int) bool { return s.events[i].Seq > after })
		for _, ev := range s.events[i:min(len(s.events), i+max(limit, 0))] {
			out = append(out, ev.clone())
		}
	})
	return out, err
}

func (s *MemoryStore) LastSeq(ctx context.Context) (uint64, error) {
	var seq uint64
	err := s.do(ctx, func() {
		if len(s.events) > 0 {
			seq = s.events[len(s.events)-1].Seq
		}
	})
	return seq, err
}

func (s *MemoryStore) TrimEvents(ctx context.Context, upTo uint64) error {
	return s.do(ctx, func() {
		i := sort.Search(len(s.events), func(i int) bool { return s.events[i].Seq > upTo })
		s.events = slices.Delete(s.events, 0, i)
	})
}

func (s *MemoryStore) PutSetting(ctx context.Context, key string, value []byte) error {
	return s.do(ctx, func() { s.settings[key] = slices.Clone(value) })
}

func (s *MemoryStore) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.do(ctx, func() { v = slices.Clone(s.settings[key]) })
	return v, err
}

func (s *MemoryStore) PutLog(ctx context.Context, id string, tail []byte) error {
	return s.do(ctx, func() { s.logs[id] = slices.Clone(tail) })
}

func (s *MemoryStore) Log(ctx context.Context, id string) ([]byte, error) {
	var v []byte
	err := s.do(ctx, func() { v = slices.Clone(s.logs[id]) })
	return v, err
}

func (s *MemoryStore) Delete(ctx context.Context, id string) error {
	return s.do(ctx, func() {
		delete(s.recs, id)
		delete(s.logs, id)
	})
}

func (s *MemoryStore) List(ctx context.Context) ([]Workload, error) {
	var out []Workload
	err := s.do(ctx, func() {
		out = make([]Workload, 0, len(s.recs))
		for _, w := range s.recs {
			out = append(out, w.clone())
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.ID < out[j].Spec.ID })
	return out, err
}

func (s *MemoryStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
