package containerd_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// escapeTenancy is the production default for every tenant, except that
// the operator shares one folder read-only with the tenant "mallory" (a
// dataset, say), so that reading another tenant's files through it can
// be tried.
func escapeTenancy(shared string) isolation.Tenancy {
	t := isolation.DefaultTenancy(isolation.DefaultMiningTenant)
	mallory := t.Default
	mallory.MountRoots = []string{shared}
	t.Tenants["mallory"] = mallory
	t.Tenants["victim"] = isolation.TenantPolicy{MountRoots: []string{shared}, WritableMounts: true,
		Networks: []isolation.Network{isolation.NetworkBridge}, DefaultLimits: t.Default.DefaultLimits, MaxLimits: t.Default.MaxLimits}
	return t
}

// notOK expects the attempt to fail, however.
const notOK = "!ok"

// escapeRow is one attempt of a tenant to break out, and the denial the
// node must answer with.
type escapeRow struct {
	name string
	// spec changes mallory's spec; args are the probe's.
	spec func(*isolation.Spec)
	args []string
	// want is the probe's result (notOK: any failure); wantErr, for attempts refused at
	// Create, the error category.
	want    string
	wantErr error
	// check, when set, judges the exit instead.
	check func(t *testing.T, es isolation.ExitStatus, out string) string
}

// TestEscape runs the probe as tenant "mallory", under the default
// policy, against a node where tenant "victim" runs a GPU job, a server on
// the tenant network and keeps a secret, and tries everything a tenant
// must not do. Each row is one attempt with the denial expected; the table
// of results is logged at the end.
func TestEscape(t *testing.T) {
	shared := t.TempDir() // the operator's read-only share
	require.NoError(t, os.Chmod(shared, 0o755))
	victimDir := filepath.Join(shared, "victim")
	require.NoError(t, os.Mkdir(victimDir, 0o755))
	f := newFixture(t, containerd.WithTenancy(escapeTenancy(shared)))
	f.importImage(t, "victim", probeRef)
	f.importImage(t, "victim", trainerRef) // the victim's private image
	f.importImage(t, "mallory", probeRef)
	c := ctx(t)
	gpu := func(i int) isolation.GPU {
		return isolation.GPU{Device: "nvidia.com/gpu=" + simulatedGPUs[i].UUID}
	}

	// The victim: a job on GPU 1 with its folder, a secret in it, and a
	// server on its tenant network.
	job := f.start(t, isolation.Spec{ID: "job", Tenant: "victim", Image: probeRef, Args: []string{"sleep"},
		GPUs: []isolation.GPU{gpu(1)}, Mounts: []isolation.Mount{{Source: victimDir, Target: "/data"}}})
	f.waitOutput(t, job, "sleeping")
	es, out := f.run(t, isolation.Spec{ID: "secret", Tenant: "victim", Image: probeRef,
		Mounts: []isolation.Mount{{Source: victimDir, Target: "/data"}}, Args: []string{"try", "write", "/data/secret"}})
	require.Zero(t, es.Code, out)
	server := f.start(t, isolation.Spec{ID: "server", Tenant: "victim", Image: probeRef, Network: isolation.NetworkBridge,
		Args: []string{"listen", "-addr", ":8080"}})
	f.waitOutput(t, server, "listening")
	info, err := f.rt.Inspect(c, server)
	require.NoError(t, err)
	victimPID := f.taskPID(t, job)
	a4 := info.Address.As4()
	gateway := fmt.Sprintf("%d.%d.%d.1", a4[0], a4[1], a4[2])

	// The node's own loopback service (a miner's API, the agent).
	hostL, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serve(t, hostL)
	anyL, err := net.Listen("tcp", ":0") // every address, IPv6 too
	require.NoError(t, err)
	serve(t, anyL)
	_, anyPort, _ := net.SplitHostPort(anyL.Addr().String())

	rows := []escapeRow{
		{name: "open its own GPU node (control: allowed, no driver here)", args: []string{"open", "/dev/nvidia0"}, want: "ENXIO"},
		{name: "open another tenant's GPU node", args: []string{"open", "/dev/nvidia1"}, want: "ENOENT"},
		{name: "mknod a GPU node", args: []string{"mknod", "/tmp/nvidia1", "195", "1"}, want: "EPERM"},
		{name: "mount a filesystem", args: []string{"mount", "/tmp"}, want: "EPERM"},
		{name: "write to /", args: []string{"write", "/evil"}, want: "EROFS"},
		{name: "mount another tenant's folder", spec: func(s *isolation.Spec) {
			s.Mounts = []isolation.Mount{{Source: victimDir, Target: "/loot", ReadOnly: true}}
		}, wantErr: isolation.ErrDenied},
		{name: "read another tenant's file in a share", spec: func(s *isolation.Spec) {
			s.Mounts = []isolation.Mount{{Source: shared, Target: "/shared", ReadOnly: true}}
		}, args: []string{"read", "/shared/victim/secret"}, want: "EACCES"},
		{name: "mount a host path outside the allowed roots", spec: func(s *isolation.Spec) {
			s.Mounts = []isolation.Mount{{Source: "/", Target: "/host", ReadOnly: true}}
		}, wantErr: isolation.ErrDenied},
		{name: "signal another container", args: []string{"kill", strconv.Itoa(victimPID)}, want: "ESRCH"},
		{name: "ptrace another container", args: []string{"ptrace", strconv.Itoa(victimPID)}, want: "ESRCH"},
		{name: "reach the containerd socket", args: []string{"dial", "unix", f.d.Address}, want: "ENOENT"},
		{name: "reach containerd's default socket", args: []string{"dial", "unix", "/run/containerd/containerd.sock"}, want: "ENOENT"},
		{name: "regain a capability", args: []string{"capset"}, want: "EPERM"},
		{name: "gain capabilities in a new user namespace", args: []string{"userns"}, want: "EPERM"},
		{name: "run a setuid-root binary", args: []string{"setuid", "/app/probe-setuid"}, want: "euid=65534"},
		{name: "fork past the pids limit (32)", spec: func(s *isolation.Spec) { s.Limits.Pids = 32 },
			args: []string{"fork", "100"}, want: "EAGAIN"},
		{name: "allocate past the memory limit (64 MiB)", spec: func(s *isolation.Spec) {
			s.Limits.MemoryBytes = 64 << 20
			s.Args = []string{"alloc", "-mib", "512"}
		}, check: func(t *testing.T, es isolation.ExitStatus, out string) string {
			assert.True(t, es.OOMKilled, "exit %+v, output %q", es, out)
			assert.NotContains(t, out, "allocated")
			st, err := f.rt.Inspect(c, job)
			require.NoError(t, err)
			assert.Equal(t, isolation.StateRunning, st.State, "the victim's job runs on")
			return fmt.Sprintf("exit %d, OOM-killed %v; the victim runs on", es.Code, es.OOMKilled)
		}},
		{name: "ask for the host network", spec: func(s *isolation.Spec) { s.Network = isolation.NetworkHost }, wantErr: isolation.ErrDenied},
		{name: "run as a miner (kind mining)", spec: func(s *isolation.Spec) { s.Kind = "mining" }, wantErr: isolation.ErrDenied},
		{name: "reach the host's loopback service", args: []string{"dial", "tcp", hostL.Addr().String()}, want: "ECONNREFUSED"},
		{name: "reach the host through the bridge", args: []string{"dial", "tcp", net.JoinHostPort(gateway, anyPort)}, want: "ECONNREFUSED"},
		{name: "reach another tenant's container", args: []string{"dial", "tcp", net.JoinHostPort(info.Address.String(), "8080")}, want: "ECONNREFUSED"},
		{name: "run another tenant's image", spec: func(s *isolation.Spec) { s.Image = trainerRef }, wantErr: isolation.ErrNotFound},
	}
	if ll := bridgeLinkLocal(t, f.d.Network().BridgePrefix); ll != "" {
		// Tenants get no IPv6; whether the attempt ends at the container's
		// own stack or at the firewall depends on the host.
		rows = append(rows, escapeRow{name: "reach the host over IPv6 link-local", args: []string{"dial", "tcp6", net.JoinHostPort(ll+"%eth0", anyPort)}, want: notOK})
	}

	var table []string
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			spec := isolation.Spec{ID: fmt.Sprintf("escape-%d", i), Tenant: "mallory", Image: probeRef,
				GPUs: []isolation.GPU{gpu(0)}, Network: isolation.NetworkBridge, Args: append([]string{"try"}, row.args...)}
			if row.spec != nil {
				row.spec(&spec)
			}
			got := f.escape(t, spec, row)
			how := "probe try " + strings.Join(row.args, " ")
			switch {
			case row.wantErr != nil:
				how = "Create"
			case row.check != nil:
				how = "probe " + strings.Join(spec.Args, " ")
			}
			table = append(table, fmt.Sprintf("| %s | %s | %s |", row.name, how, got))
		})
	}

	// The victim, containerd and this process are untouched.
	st, err := f.rt.Inspect(c, job)
	require.NoError(t, err)
	assert.Equal(t, isolation.StateRunning, st.State, "the victim's job runs on")
	_, err = f.client.Version(namespaces.WithNamespace(c, "default"))
	assert.NoError(t, err, "containerd answers")
	t.Logf("escape attempts of tenant mallory:\n| attempt | probe | result |\n|---|---|---|\n%s", strings.Join(table, "\n"))
}

// escape runs one row and returns its result for the table.
func (f *fixture) escape(t *testing.T, spec isolation.Spec, row escapeRow) string {
	t.Helper()
	c := ctx(t)
	if row.wantErr != nil {
		_, err := f.rt.Create(c, spec)
		require.Error(t, err)
		assert.ErrorIs(t, err, row.wantErr)
		_, ierr := f.rt.Inspect(c, isolation.Ref{Tenant: spec.Tenant, ID: spec.ID})
		assert.True(t, errors.Is(ierr, isolation.ErrNotFound), "nothing was made")
		t.Logf("refused at Create: %v", err)
		return "refused: " + firstLine(err.Error())
	}
	es, out := f.run(t, spec)
	require.NoError(t, f.rt.Delete(c, isolation.Ref{Tenant: spec.Tenant, ID: spec.ID}))
	if row.check != nil {
		return row.check(t, es, out)
	}
	var a probeAttempt
	require.NoError(t, jsonLine(out, &a), "exit %+v, output %q", es, out)
	t.Logf("%s: %s %s", a.Attempt, a.Result, a.Detail)
	if row.want == notOK {
		assert.NotEqual(t, "ok", a.Result, a.Detail)
	} else {
		assert.Equal(t, row.want, a.Result, a.Detail)
	}
	if a.Detail != "" {
		return a.Result + " (" + a.Detail + ")"
	}
	return a.Result
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// taskPID is the host pid of a container's process.
func (f *fixture) taskPID(t *testing.T, ref isolation.Ref) int {
	t.Helper()
	nctx := namespaces.WithNamespace(ctx(t), isolation.Namespace(ref.Tenant))
	ctr, err := f.client.LoadContainer(nctx, ref.ID)
	require.NoError(t, err)
	task, err := ctr.Task(nctx, nil)
	require.NoError(t, err)
	return int(task.Pid())
}

// bridgeLinkLocal is the IPv6 link-local address of one of the daemon's
// bridges, if the host gives them one.
func bridgeLinkLocal(t *testing.T, prefix string) string {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if !strings.HasPrefix(i.Name, prefix) {
			continue
		}
		// The kernel assigns it a moment after the bridge comes up.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			addrs, _ := i.Addrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsLinkLocalUnicast() && ipn.IP.To4() == nil {
					t.Logf("bridge %s has %s", i.Name, ipn.IP)
					return ipn.IP.String()
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ""
}
