package workload_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// faultRuntime is a runtime whose calls fail or hang on demand: a hook per
// call returns the error to inject, or nil to pass the call through.
type faultRuntime struct {
	isolation.Runtime
	mu    sync.Mutex
	hooks map[string]func(ctx context.Context, ref isolation.Ref) error
}

func newFaultRuntime(rt isolation.Runtime) *faultRuntime {
	return &faultRuntime{Runtime: rt, hooks: map[string]func(context.Context, isolation.Ref) error{}}
}

// set installs the hook of a call ("create", "start", "wait", "inspect",
// "stop", "delete", "list"); nil removes it.
func (f *faultRuntime) set(call string, hook func(ctx context.Context, ref isolation.Ref) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if hook == nil {
		delete(f.hooks, call)
		return
	}
	f.hooks[call] = hook
}

func (f *faultRuntime) hook(ctx context.Context, call string, ref isolation.Ref) error {
	f.mu.Lock()
	h := f.hooks[call]
	f.mu.Unlock()
	if h == nil {
		return nil
	}
	return h(ctx, ref)
}

func (f *faultRuntime) Create(ctx context.Context, s isolation.Spec) (isolation.Info, error) {
	if err := f.hook(ctx, "create", isolation.Ref{Tenant: s.Tenant, ID: s.ID}); err != nil {
		return isolation.Info{}, err
	}
	return f.Runtime.Create(ctx, s)
}

func (f *faultRuntime) Start(ctx context.Context, ref isolation.Ref) error {
	if err := f.hook(ctx, "start", ref); err != nil {
		return err
	}
	return f.Runtime.Start(ctx, ref)
}

func (f *faultRuntime) Wait(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	if err := f.hook(ctx, "wait", ref); err != nil {
		return isolation.ExitStatus{}, err
	}
	return f.Runtime.Wait(ctx, ref)
}

func (f *faultRuntime) Inspect(ctx context.Context, ref isolation.Ref) (isolation.Info, error) {
	if err := f.hook(ctx, "inspect", ref); err != nil {
		return isolation.Info{}, err
	}
	return f.Runtime.Inspect(ctx, ref)
}

func (f *faultRuntime) Stop(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	if err := f.hook(ctx, "stop", ref); err != nil {
		return isolation.ExitStatus{}, err
	}
	return f.Runtime.Stop(ctx, ref)
}

func (f *faultRuntime) Delete(ctx context.Context, ref isolation.Ref) error {
	if err := f.hook(ctx, "delete", ref); err != nil {
		return err
	}
	return f.Runtime.Delete(ctx, ref)
}

func (f *faultRuntime) List(ctx context.Context, filter isolation.Filter) ([]isolation.Info, error) {
	if err := f.hook(ctx, "list", isolation.Ref{}); err != nil {
		return nil, err
	}
	return f.Runtime.List(ctx, filter)
}

// Recover recovers through the wrapped runtime when it can, and lists
// otherwise; "list" faults apply to both.
func (f *faultRuntime) Recover(ctx context.Context) ([]isolation.Info, error) {
	if err := f.hook(ctx, "list", isolation.Ref{}); err != nil {
		return nil, err
	}
	if rec, ok := f.Runtime.(isolation.Recoverer); ok {
		return rec.Recover(ctx)
	}
	return f.Runtime.List(ctx, isolation.Filter{})
}

// Prepare prepares through the wrapped runtime when it can.
func (f *faultRuntime) Prepare(ctx context.Context, ref isolation.Ref) error {
	if p, ok := f.Runtime.(isolation.Preparer); ok {
		return p.Prepare(ctx, ref)
	}
	return nil
}

// Close leaves the wrapped runtime open: the tests close it themselves.
func (f *faultRuntime) Close() error { return nil }

// hang blocks until ctx ends, as a runtime call that never answers.
func hang(ctx context.Context, _ isolation.Ref) error {
	<-ctx.Done()
	return ctx.Err()
}

// failWith returns a hook that fails with err for the workload id (all
// workloads when id is empty).
func failWith(id string, err error) func(context.Context, isolation.Ref) error {
	return func(_ context.Context, ref isolation.Ref) error {
		if id == "" || strings.HasPrefix(ref.ID, id+"-") {
			return err
		}
		return nil
	}
}

// fullStore is a store with every optional interface.
type fullStore interface {
	workload.EventStore
	workload.SettingStore
	workload.LogStore
}

// faultStore is a store whose writes fail while fail is set.
type faultStore struct {
	fullStore
	fail  atomic.Pointer[error]
	fails atomic.Int64 // writes refused
}

func (s *faultStore) breakWrites(err error) { s.fail.Store(&err) }
func (s *faultStore) heal()                 { s.fail.Store(nil) }

func (s *faultStore) refused() error {
	if p := s.fail.Load(); p != nil {
		s.fails.Add(1)
		return *p
	}
	return nil
}

func (s *faultStore) Put(ctx context.Context, w workload.Workload) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.fullStore.Put(ctx, w)
}

func (s *faultStore) Commit(ctx context.Context, w workload.Workload, ev workload.Event) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.fullStore.Commit(ctx, w, ev)
}

func (s *faultStore) Append(ctx context.Context, ev workload.Event) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.fullStore.Append(ctx, ev)
}

func (s *faultStore) Delete(ctx context.Context, id string) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.fullStore.Delete(ctx, id)
}

func (s *faultStore) PutSetting(ctx context.Context, key string, v []byte) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.fullStore.PutSetting(ctx, key, v)
}

func (s *faultStore) PutLog(ctx context.Context, id string, tail []byte) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.fullStore.PutLog(ctx, id, tail)
}

// Close leaves the wrapped store open, so a test can hand it to the next
// manager as a restarted process would reopen its file.
func (s *faultStore) Close() error { return nil }

// goroutines counts the goroutines of the test binary now.
func goroutines() int { return runtime.NumGoroutine() }

// noLeak fails t when, after everything was stopped, more goroutines run
// than before it started.
func noLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines outlive the manager (%d before):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
	}
}

// shJob is a paid batch job running a shell script on one GPU.
func shJob(id, script string) workload.Spec {
	return workload.Spec{
		ID: id, Kind: workload.KindBatch, Tenant: "acme", Image: "unused",
		GPUs:      workload.GPURequest{Count: 1},
		Command:   []string{"/bin/sh", "-c", script},
		StopGrace: time.Second, StopSignal: syscall.SIGTERM,
	}
}

var _ = require.NoError
