package workload

import (
	"context"
	"sort"
	"sync"
)

// Store keeps workload records durably: the queue of pending work is the
// set of queued records, so it survives a restart. The manager is the only
// writer, and writes while it holds its lock, in the order things happen. Implementations: NewMemoryStore for tests, workload/bolt for a
// node; a control plane may supply its own.
type Store interface {
	// Put inserts or replaces the record with w.Spec.ID.
	Put(ctx context.Context, w Workload) error
	// Delete removes a record; deleting a missing one is not an error.
	Delete(ctx context.Context, id string) error
	// List returns every record, in no particular order.
	List(ctx context.Context) ([]Workload, error)
	// Close releases the store. It is idempotent.
	Close() error
}

// MemoryStore is a Store that forgets everything when the process ends.
type MemoryStore struct {
	mu     sync.Mutex
	recs   map[string]Workload
	closed bool
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{recs: map[string]Workload{}} }

func (s *MemoryStore) Put(ctx context.Context, w Workload) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.recs[w.Spec.ID] = w.clone()
	return nil
}

func (s *MemoryStore) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	delete(s.recs, id)
	return nil
}

func (s *MemoryStore) List(ctx context.Context) ([]Workload, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := make([]Workload, 0, len(s.recs))
	for _, w := range s.recs {
		out = append(out, w.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.ID < out[j].Spec.ID })
	return out, nil
}

func (s *MemoryStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
