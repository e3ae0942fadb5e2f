package containerd

// Reading containers back: Inspect, List, Logs and Recover.

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/internal/logfile"

	tasktypes "github.com/containerd/containerd/api/types/task"
	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Inspect describes one container.
func (r *Runtime) Inspect(ctx context.Context, ref isolation.Ref) (isolation.Info, error) {
	ctr, nctx, err := r.load(ctx, ref)
	if err != nil {
		return isolation.Info{}, err
	}
	return r.info(nctx, ref, ctr)
}

func (r *Runtime) info(ctx context.Context, ref isolation.Ref, ctr ctrd.Container) (isolation.Info, error) {
	c, err := ctr.Info(ctx, ctrd.WithoutRefreshedMetadata)
	if err != nil {
		return isolation.Info{}, mapErr(err, "container %s", ref)
	}
	info := isolation.InfoFromLabels(ref, c.Labels)
	info.CreatedAt, info.LogPath = c.CreatedAt, r.logPath(ref)
	if c.Labels[labelNetwork] == string(isolation.NetworkBridge) {
		info.Address = r.net.address(ref)
	}
	ts, err := r.taskState(ctx, ref.ID)
	if err != nil || !ts.exists {
		return info, err
	}
	info.PID = int(ts.pid)
	switch ts.status {
	case tasktypes.Status_RUNNING:
		info.State = isolation.StateRunning
	case tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
		info.State = isolation.StatePaused
	case tasktypes.Status_CREATED:
		info.State = isolation.StateCreated
	case tasktypes.Status_STOPPED:
		info.State = isolation.StateStopped
		es, err := r.exitStatus(ctx, ctr, ref, ts.exitCode, ts.exitedAt)
		if err != nil {
			return isolation.Info{}, err
		}
		info.Exit = &es
	default:
		info.State = isolation.StateUnknown
	}
	return info, nil
}

// List describes the SDK's containers that match filter, tenant by tenant.
func (r *Runtime) List(ctx context.Context, filter isolation.Filter) ([]isolation.Info, error) {
	if err := r.closed(); err != nil {
		return nil, err
	}
	tenants, err := r.tenants(ctx, filter.Tenant)
	if err != nil {
		return nil, err
	}
	var out []isolation.Info
	for _, tenant := range tenants {
		nctx := namespaces.WithNamespace(ctx, isolation.Namespace(tenant))
		ctrs, err := r.client.Containers(nctx, `labels."`+isolation.LabelManaged+`"==true`)
		if err != nil {
			return nil, mapErr(err, "list containers of tenant %q", tenant)
		}
		for _, ctr := range ctrs {
			c, err := ctr.Info(nctx, ctrd.WithoutRefreshedMetadata)
			if err != nil || !filter.Match(tenant, c.Labels) {
				continue
			}
			info, err := r.info(nctx, isolation.Ref{Tenant: tenant, ID: ctr.ID()}, ctr)
			if errdefs.IsNotFound(err) || errors.Is(err, isolation.ErrNotFound) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			out = append(out, info)
		}
	}
	return out, nil
}

// tenants lists the tenants with a namespace, or checks the one asked for.
func (r *Runtime) tenants(ctx context.Context, only string) ([]string, error) {
	if only != "" {
		if err := isolation.ValidateTenant(only); err != nil {
			return nil, err
		}
	}
	nss, err := r.client.NamespaceService().List(ctx)
	if err != nil {
		return nil, mapErr(err, "list namespaces")
	}
	var out []string
	for _, ns := range nss {
		tenant, ok := strings.CutPrefix(ns, isolation.NamespacePrefix)
		if !ok || (only != "" && tenant != only) {
			continue
		}
		out = append(out, tenant)
	}
	return out, nil
}

// Logs reads the container's output: the newest bytes, at most the log cap.
func (r *Runtime) Logs(ctx context.Context, ref isolation.Ref) (io.ReadCloser, error) {
	if _, _, err := r.load(ctx, ref); err != nil {
		return nil, err
	}
	path := r.logPath(ref)
	if err := logfile.Rotate(path, r.opts.logCap); err != nil {
		r.log.Warn("cap log", "path", path, "err", err)
	}
	return logfile.Open(path)
}

// keepLogs enforces the log cap on every log file under the log dir until Close.
func (r *Runtime) keepLogs() {
	defer r.wg.Done()
	t := time.NewTicker(r.opts.logEvery)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		paths, _ := filepath.Glob(filepath.Join(r.opts.logDir, isolation.NamespacePrefix+"*", "*.log"))
		for _, p := range paths {
			if err := logfile.Rotate(p, r.opts.logCap); err != nil {
				r.log.Warn("cap log", "path", p, "err", err)
			}
		}
	}
}

// Recover finds the containers earlier instances created and reports each
// once, whatever its state: running ones keep running and their output
// keeps going to their log file (the shim writes it), stopped ones keep
// their exit status until Delete. It also removes what an interrupted
// Create or Delete left: snapshots held only by a create lease older than
// a minute, and log files of containers that no longer exist.
func (r *Runtime) Recover(ctx context.Context) ([]isolation.Info, error) {
	if err := r.closed(); err != nil {
		return nil, err
	}
	tenants, err := r.tenants(ctx, "")
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, tenant := range tenants {
		nctx := namespaces.WithNamespace(ctx, isolation.Namespace(tenant))
		ls := r.client.LeasesService()
		stale, err := ls.List(nctx, `labels."`+leaseLabel+`"`)
		if err != nil {
			errs = append(errs, mapErr(err, "list leases of tenant %q", tenant))
			continue
		}
		for _, l := range stale {
			if time.Since(l.CreatedAt) < r.staleLease {
				continue // a Create may still be running
			}
			if err := ls.Delete(nctx, l, leases.SynchronousDelete); err != nil {
				errs = append(errs, mapErr(err, "remove lease %s", l.ID))
			} else {
				r.log.Info("removed the lease of an interrupted create", "tenant", tenant, "container", l.Labels[leaseLabel])
			}
		}
	}
	infos, err := r.List(ctx, isolation.Filter{})
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	known := map[string]bool{}
	for _, i := range infos {
		known[r.logPath(i.Ref)] = true
	}
	paths, _ := filepath.Glob(filepath.Join(r.opts.logDir, isolation.NamespacePrefix+"*", "*.log"))
	for _, p := range paths {
		if !known[p] {
			if err := logfile.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	refs := map[isolation.Ref]bool{}
	for _, i := range infos {
		refs[i.Ref] = true
	}
	for _, ref := range r.net.orphans(refs) {
		// A container deleted behind the runtime's back (ctr, an operator)
		// leaves its namespace and address.
		slot, err := r.tenantSlot(namespaces.WithNamespace(ctx, isolation.Namespace(ref.Tenant)), ref.Tenant)
		if err == nil {
			err = r.net.detach(ctx, ref, slot, r.tenantSubnet(slot))
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			r.log.Info("took a deleted container off the tenant network", "container", ref.String())
		}
	}
	running := 0
	for _, i := range infos {
		if i.State == isolation.StateRunning {
			running++
		}
	}
	r.log.Info("recovered containers", "total", len(infos), "running", running)
	return infos, errors.Join(errs...)
}
