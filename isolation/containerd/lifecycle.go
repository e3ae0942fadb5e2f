package containerd

// The life of a container after Create: start, signal, stop, wait and
// delete, with the exit reason kept in labels.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/internal/logfile"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
)

// taskState is what containerd's task service says of a container's task.
type taskState struct {
	exists   bool
	status   tasktypes.Status
	pid      uint32
	exitCode uint32
	exitedAt time.Time
}

func (r *Runtime) taskState(ctx context.Context, id string) (taskState, error) {
	resp, err := r.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
	if err != nil {
		err = errgrpc.ToNative(err)
		if errdefs.IsNotFound(err) {
			return taskState{}, nil
		}
		return taskState{}, mapErr(err, "task of %s", id)
	}
	p := resp.GetProcess()
	ts := taskState{exists: true, status: p.GetStatus(), pid: p.GetPid(), exitCode: p.GetExitStatus()}
	if p.GetExitedAt() != nil {
		ts.exitedAt = p.GetExitedAt().AsTime()
	}
	return ts, nil
}

func (r *Runtime) deleteTask(ctx context.Context, id string) error {
	_, err := r.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if err = errgrpc.ToNative(err); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// newTask makes the container's task, its output going to its log file
// (written by containerd's shim). When the container has a task already,
// it returns that task's state instead.
func (r *Runtime) newTask(ctx context.Context, ctr ctrd.Container, ref isolation.Ref) (ctrd.Task, *taskState, error) {
	path := r.logPath(ref)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, nil, fmt.Errorf("isolation: log dir: %w", err)
	}
	if err := r.attach(ctx, ctr, ref); err != nil {
		return nil, nil, err
	}
	task, err := ctr.NewTask(ctx, cio.LogFile(path))
	if !errdefs.IsAlreadyExists(err) {
		return task, nil, err
	}
	ts, err := r.taskState(ctx, ref.ID)
	if err != nil {
		return nil, nil, err
	}
	return nil, &ts, nil
}

// attach puts a container of the tenant network on it before its task is
// made (the task joins the namespace), unless it is there already.
func (r *Runtime) attach(ctx context.Context, ctr ctrd.Container, ref isolation.Ref) error {
	c, err := ctr.Info(ctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return mapErr(err, "container %s", ref)
	}
	if c.Labels[labelNetwork] != string(isolation.NetworkBridge) {
		return nil
	}
	slot, err := r.tenantSlot(ctx, ref.Tenant)
	if err != nil {
		return err
	}
	addr, err := r.net.attach(ctx, ref, slot, r.tenantSubnet(slot))
	if err != nil {
		return err
	}
	r.log.Debug("container on the tenant network", "container", ref.String(), "address", addr, "bridge", r.net.bridge(slot))
	return nil
}

// Start starts a created container, or restarts a stopped one. Its output
// goes to its log file, written by containerd's shim.
func (r *Runtime) Start(ctx context.Context, ref isolation.Ref) error {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	task, existing, err := r.newTask(nctx, ctr, ref)
	if existing != nil {
		switch existing.status {
		case tasktypes.Status_CREATED:
			// Prepared: only the process is left to run.
			task, err = ctr.Task(nctx, nil)
		case tasktypes.Status_STOPPED:
			// Restart a task that has exited.
			if err := r.deleteTask(nctx, ref.ID); err != nil {
				return mapErr(err, "remove the old task of %s", ref)
			}
			if err := ctr.Update(nctx, withoutLabels(labelStop, labelOOM)); err != nil {
				return mapErr(err, "reset labels of %s", ref)
			}
			task, _, err = r.newTask(nctx, ctr, ref)
		default:
			return fmt.Errorf("%w: container %s is %s, not created or stopped", isolation.ErrState, ref, strings.ToLower(existing.status.String()))
		}
	}
	if err == nil && task == nil {
		err = fmt.Errorf("%w: container %s got a task while it started: start it once", isolation.ErrState, ref)
	}
	if err != nil {
		return mapErr(err, "create task of %s", ref)
	}
	if err := task.Start(nctx); err != nil {
		if derr := r.deleteTask(context.WithoutCancel(nctx), ref.ID); derr != nil {
			r.log.Warn("remove failed task", "container", ref.String(), "err", derr)
		}
		return mapErr(err, "start %s", ref)
	}
	r.log.Info("container started", "container", ref.String(), "pid", task.Pid())
	return nil
}

// Prepare makes the container's task, its shim, namespaces, cgroups and
// device rules, without running its process: the slow half of Start, done
// ahead so that Start only runs the process. Nothing of the image runs
// until Start. Preparing a prepared container does nothing.
func (r *Runtime) Prepare(ctx context.Context, ref isolation.Ref) error {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	_, existing, err := r.newTask(nctx, ctr, ref)
	switch {
	case existing != nil && existing.status == tasktypes.Status_CREATED:
		return nil
	case existing != nil:
		return fmt.Errorf("%w: container %s is %s, not created", isolation.ErrState, ref, strings.ToLower(existing.status.String()))
	case err != nil:
		return mapErr(err, "prepare task of %s", ref)
	}
	r.log.Debug("container prepared", "container", ref.String())
	return nil
}

// Signal sends sig to the container's main process.
func (r *Runtime) Signal(ctx context.Context, ref isolation.Ref, sig syscall.Signal) error {
	_, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	return r.kill(nctx, ref, sig, false)
}

func (r *Runtime) kill(ctx context.Context, ref isolation.Ref, sig syscall.Signal, all bool) error {
	_, err := r.client.TaskService().Kill(ctx, &tasks.KillRequest{ContainerID: ref.ID, Signal: uint32(sig), All: all})
	return taskErr(errgrpc.ToNative(err), ref)
}

func taskErr(err error, ref isolation.Ref) error {
	if err == nil {
		return nil
	}
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("%w: container %s is not running (never started or already exited): %w", isolation.ErrState, ref, err)
	}
	return mapErr(err, "task of %s", ref)
}

// Stop sends the container's stop signal, waits up to its grace period,
// then kills every process of the container. It records which of the two
// ended it in the container's labels, so Wait (here or in a later
// Runtime) reports ReasonStopped or ReasonKilled. A signal is recorded only
// once containerd has delivered it: a process that exits on its own before
// the signal reaches it, or a Stop whose ctx ends before the signal is
// sent, leaves no record, and the exit is reported as ReasonExited. If ctx
// ends first, Stop returns ctx's error; a signal already delivered stays
// recorded, since the exit it causes is a stop.
func (r *Runtime) Stop(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	ts, err := r.taskState(nctx, ref.ID)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	if !ts.exists {
		return isolation.ExitStatus{}, fmt.Errorf("%w: container %s was never started", isolation.ErrState, ref)
	}
	if ts.status == tasktypes.Status_STOPPED {
		return r.Wait(ctx, ref)
	}
	labels, err := ctr.Labels(nctx)
	if err != nil {
		return isolation.ExitStatus{}, mapErr(err, "labels of %s", ref)
	}
	stop := isolation.InfoFromLabels(ref, labels)
	sig, grace := stop.StopSignal, stop.StopGrace
	exited := make(chan waitResult, 1)
	wctx, cancel := context.WithCancel(nctx)
	defer cancel()
	go func() { // ends with wctx at the latest
		code, at, err := r.waitExit(wctx, ref)
		exited <- waitResult{code, at, err} // buffered: never blocks
	}()
	r.log.Info("stopping container", "container", ref.String(), "signal", sig.String(), "grace", grace.String())
	if err := r.signalStop(nctx, ctr, ref, sig, false, "requested"); err != nil && !errors.Is(err, isolation.ErrState) {
		return isolation.ExitStatus{}, err
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var res waitResult
	select {
	case res = <-exited:
	case <-ctx.Done():
		return isolation.ExitStatus{}, ctx.Err()
	case <-timer.C:
		r.log.Warn("grace period over, killing container", "container", ref.String(), "grace", grace.String())
		if err := r.signalStop(nctx, ctr, ref, syscall.SIGKILL, true, "killed"); err != nil && !errors.Is(err, isolation.ErrState) {
			return isolation.ExitStatus{}, err
		}
		select {
		case res = <-exited:
		case <-ctx.Done():
			return isolation.ExitStatus{}, ctx.Err()
		}
	}
	if res.err != nil {
		return isolation.ExitStatus{}, res.err
	}
	return r.exitStatus(nctx, ctr, ref, res.code, res.at)
}

// signalStop sends sig and, once containerd has delivered it, records mark
// in the stop label. isolation.ErrState means the process had already exited: no
// signal, no record. Readers of the label (exitStatus) wait for the
// record, so an exit the signal causes at once is not mistaken for a
// natural one.
func (r *Runtime) signalStop(ctx context.Context, ctr ctrd.Container, ref isolation.Ref, sig syscall.Signal, all bool, mark string) error {
	r.stopHook("before-signal")
	unlock := r.stopLocks.lock(ref)
	defer unlock()
	if err := r.kill(ctx, ref, sig, all); err != nil {
		return err
	}
	r.stopHook("signalled")
	// The signal is out: record it even if ctx ends now.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := ctr.SetLabels(lctx, map[string]string{labelStop: mark}); err != nil {
		return mapErr(err, "label %s", ref)
	}
	return nil
}

type waitResult struct {
	code uint32
	at   time.Time
	err  error
}

// waitExit blocks in containerd until the task exits.
func (r *Runtime) waitExit(ctx context.Context, ref isolation.Ref) (uint32, time.Time, error) {
	resp, err := r.client.TaskService().Wait(ctx, &tasks.WaitRequest{ContainerID: ref.ID})
	if err != nil {
		if ctx.Err() != nil {
			return 0, time.Time{}, ctx.Err()
		}
		return 0, time.Time{}, taskErr(errgrpc.ToNative(err), ref)
	}
	var at time.Time
	if resp.GetExitedAt() != nil {
		at = resp.GetExitedAt().AsTime()
	}
	return resp.GetExitStatus(), at, nil
}

// Wait blocks until the container's process exits and says how. It
// returns at once for a container that already exited.
func (r *Runtime) Wait(ctx context.Context, ref isolation.Ref) (isolation.ExitStatus, error) {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return isolation.ExitStatus{}, err
	}
	code, at, err := r.waitExit(nctx, ref)
	if err != nil {
		if errors.Is(err, isolation.ErrState) {
			return isolation.ExitStatus{}, fmt.Errorf("%w: container %s was never started", isolation.ErrState, ref)
		}
		return isolation.ExitStatus{}, err
	}
	return r.exitStatus(nctx, ctr, ref, code, at)
}

// exitStatus reads the labels as they are after the exit and derives the
// reason. It waits for a Stop of this runtime that is between its signal
// and the record of it.
func (r *Runtime) exitStatus(ctx context.Context, ctr ctrd.Container, ref isolation.Ref, code uint32, at time.Time) (isolation.ExitStatus, error) {
	unlock := r.stopLocks.rlock(ref)
	defer unlock()
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return isolation.ExitStatus{}, mapErr(err, "labels of %s", ref)
	}
	return r.reason(ctx, ctr, labels, code, at), nil
}

// reason derives why the process ended from the labels Stop wrote and,
// for a SIGKILL death of a container with a memory limit, from its memory
// cgroup's OOM-kill counter, which the shim reports until the task is
// deleted. A seen OOM kill is written to the labels, so it is reported
// the same way later.
func (r *Runtime) reason(ctx context.Context, ctr ctrd.Container, labels map[string]string, code uint32, at time.Time) isolation.ExitStatus {
	es := isolation.ExitStatus{Code: int(code), ExitedAt: at, Reason: isolation.ReasonExited}
	oom := labels[labelOOM] == "true"
	if !oom && code == 128+uint32(syscall.SIGKILL) && labels[labelMemory] != "" {
		if oom = r.oomKilled(ctx, ctr.ID()); oom {
			if _, err := ctr.SetLabels(ctx, map[string]string{labelOOM: "true"}); err != nil {
				r.log.Warn("record OOM kill", "container", ctr.ID(), "err", err)
			}
		}
	}
	switch {
	case oom:
		es.Reason, es.OOMKilled = isolation.ReasonOOMKilled, true
	case labels[labelStop] == "killed":
		es.Reason = isolation.ReasonKilled
	case labels[labelStop] == "requested":
		es.Reason = isolation.ReasonStopped
	}
	return es
}

// oomKilled reads the OOM-kill counter of the task's memory cgroup
// (memory.oom_control on cgroup v1, memory.events on v2).
func (r *Runtime) oomKilled(ctx context.Context, id string) bool {
	resp, err := r.client.TaskService().Metrics(ctx, &tasks.MetricsRequest{Filters: []string{"id==" + id}})
	if err != nil {
		return false
	}
	for _, m := range resp.GetMetrics() {
		if m.GetID() != id || m.GetData() == nil {
			continue
		}
		v, err := typeurl.UnmarshalAny(m.GetData())
		if err != nil {
			continue
		}
		switch t := v.(type) {
		case *cgroup1stats.Metrics:
			return t.GetMemoryOomControl().GetOomKill() > 0
		case *cgroup2stats.Metrics:
			return t.GetMemoryEvents().GetOomKill() > 0
		}
	}
	return false
}

// Delete removes a container that is not running, its snapshot and its logs.
func (r *Runtime) Delete(ctx context.Context, ref isolation.Ref) error {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return err
	}
	ts, err := r.taskState(nctx, ref.ID)
	if err != nil {
		return err
	}
	if ts.exists {
		if ts.status != tasktypes.Status_STOPPED && ts.status != tasktypes.Status_CREATED {
			return fmt.Errorf("%w: container %s is %s: stop it before deleting", isolation.ErrState, ref, strings.ToLower(ts.status.String()))
		}
		if err := r.deleteTask(nctx, ref.ID); err != nil {
			return mapErr(err, "delete task of %s", ref)
		}
	}
	c, err := ctr.Info(nctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return mapErr(err, "container %s", ref)
	}
	if c.Labels[labelNetwork] == string(isolation.NetworkBridge) {
		slot, err := r.tenantSlot(nctx, ref.Tenant)
		if err != nil {
			return err
		}
		if err := r.net.detach(nctx, ref, slot, r.tenantSubnet(slot)); err != nil {
			return err
		}
	}
	if err := r.client.ContainerService().Delete(nctx, ref.ID); err != nil {
		return mapErr(err, "delete %s", ref)
	}
	if c.SnapshotKey != "" {
		if err := r.client.SnapshotService(c.Snapshotter).Remove(nctx, c.SnapshotKey); err != nil && !errdefs.IsNotFound(err) {
			r.log.Warn("remove snapshot; containerd's garbage collector will", "container", ref.String(), "err", err)
		}
	}
	if err := logfile.Remove(r.logPath(ref)); err != nil {
		r.log.Warn("remove logs", "container", ref.String(), "err", err)
	}
	r.log.Info("container deleted", "container", ref.String())
	return nil
}
