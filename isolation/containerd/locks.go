package containerd

import (
	"sync"

	"github.com/gpufarm/gpufarm/isolation"
)

// refLocks are read-write locks by container, made on demand and dropped
// when unused.
type refLocks struct {
	mu sync.Mutex
	m  map[isolation.Ref]*refLock
}

type refLock struct {
	sync.RWMutex
	users int
}

func (l *refLocks) acquire(ref isolation.Ref) *refLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[isolation.Ref]*refLock{}
	}
	rl := l.m[ref]
	if rl == nil {
		rl = &refLock{}
		l.m[ref] = rl
	}
	rl.users++
	return rl
}

func (l *refLocks) release(ref isolation.Ref, rl *refLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rl.users--; rl.users == 0 {
		delete(l.m, ref)
	}
}

func (l *refLocks) lock(ref isolation.Ref) (unlock func()) {
	rl := l.acquire(ref)
	rl.Lock()
	return func() { rl.Unlock(); l.release(ref, rl) }
}

func (l *refLocks) rlock(ref isolation.Ref) (unlock func()) {
	rl := l.acquire(ref)
	rl.RLock()
	return func() { rl.RUnlock(); l.release(ref, rl) }
}
