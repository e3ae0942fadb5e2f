package workload

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"

	"github.com/gpufarm/gpufarm/isolation"
)

// An external workload's containers are someone else's to run (kubelet's,
// for a Kubernetes resource claim): the manager places it, takes its GPUs
// from their holders with hygiene, holds and accounts them, and gives
// them back when it is cancelled, but starts nothing itself. Its
// "container" is a hold in holds, an in-memory runtime that the manager
// uses in place of its own for those refs. Holds are not durable by
// themselves: after a restart, reconcile makes them again from the
// records, which are.

// holds is the runtime of external workloads.
type holds struct {
	mu sync.Mutex
	by map[isolation.Ref]*hold
}

type hold struct {
	info isolation.Info
	done chan struct{} // closed when the hold is released
}

var _ isolation.Runtime = (*holds)(nil)

func newHolds() *holds { return &holds{by: map[isolation.Ref]*hold{}} }

func (h *holds) has(ref isolation.Ref) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.by[ref] != nil
}

// rtFor is the runtime that has ref's container.
func (m *Manager) rtFor(ref isolation.Ref) isolation.Runtime {
	if m.holds.has(ref) {
		return m.holds
	}
	return m.rt
}

// rtOf is the runtime that runs e's containers. The caller holds m.mu.
func (m *Manager) rtOf(e *entry) isolation.Runtime {
	if e.w.Spec.External {
		return m.holds
	}
	return m.rt
}

// restore makes the hold of an external workload found in the records
// after a restart: running if it was, else created.
func (h *holds) restore(w Workload) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.by[w.Container] != nil {
		return
	}
	st := isolation.StateCreated
	switch w.State {
	case StateRunning, StatePreempting, StateStopping:
		st = isolation.StateRunning
	}
	spec := w.Spec.containerSpec(w.Container.ID, nil)
	for _, u := range w.GPUs {
		spec.GPUs = append(spec.GPUs, isolation.GPU{UUID: u})
	}
	info := isolation.InfoFromLabels(w.Container, spec.ContainerLabels())
	info.State, info.CreatedAt = st, w.StartedAt
	h.by[w.Container] = &hold{info: info, done: make(chan struct{})}
}

func (h *holds) get(ref isolation.Ref) (*hold, error) {
	if x := h.by[ref]; x != nil {
		return x, nil
	}
	return nil, fmt.Errorf("%w: no hold %s", isolation.ErrNotFound, ref)
}

func (h *holds) Create(_ context.Context, s isolation.Spec) (isolation.Info, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ref := isolation.Ref{Tenant: s.Tenant, ID: s.ID}
	if h.by[ref] != nil {
		return isolation.Info{}, fmt.Errorf("%w: hold %s", isolation.ErrExists, ref)
	}
	info := isolation.InfoFromLabels(ref, s.ContainerLabels())
	info.State = isolation.StateCreated
	h.by[ref] = &hold{info: info, done: make(chan struct{})}
	return info, nil
}

func (h *holds) Start(_ context.Context, ref isolation.Ref) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	x, err := h.get(ref)
	if err == nil {
		x.info.State = isolation.StateRunning
	}
	return err
}

// Signal does nothing: the workload's processes are not the manager's.
func (h *holds) Signal(_ context.Context, ref isolation.Ref, _ syscall.Signal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.get(ref)
	return err
}

// Stop releases the hold at once: whoever runs the containers stops them
// on their side (kubelet unprepares a claim after its pod ended).
func (h *holds) Stop(_ context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	x, err := h.get(ref)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	if x.info.Exit == nil {
		x.info.Exit = &isolation.ExitStatus{Reason: isolation.ReasonStopped}
		x.info.State = isolation.StateStopped
		close(x.done)
	}
	return *x.info.Exit, nil
}

func (h *holds) Wait(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	h.mu.Lock()
	x, err := h.get(ref)
	h.mu.Unlock()
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	select {
	case <-x.done:
	case <-ctx.Done():
		return isolation.ExitStatus{}, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return *x.info.Exit, nil
}

func (h *holds) Delete(_ context.Context, ref isolation.Ref) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	x, err := h.get(ref)
	if err != nil {
		return err
	}
	if x.info.State == isolation.StateRunning {
		return fmt.Errorf("%w: hold %s is held: stop it first", isolation.ErrState, ref)
	}
	delete(h.by, ref)
	return nil
}

func (h *holds) Inspect(_ context.Context, ref isolation.Ref) (isolation.Info, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	x, err := h.get(ref)
	if err != nil {
		return isolation.Info{}, err
	}
	return x.info, nil
}

func (h *holds) List(_ context.Context, f isolation.Filter) ([]isolation.Info, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []isolation.Info
	for _, x := range h.by {
		if f.Match(x.info.Tenant, x.info.Labels) {
			out = append(out, x.info)
		}
	}
	return out, nil
}

// Logs are empty: the output is with whoever runs the containers.
func (h *holds) Logs(_ context.Context, ref isolation.Ref) (io.ReadCloser, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.get(ref); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("")), nil
}

func (h *holds) Close() error { return nil }
