package containerd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
)

// sh runs a command the test needs on the host, logging it.
func sh(t testing.TB, args ...string) {
	t.Helper()
	t.Logf("$ %s", strings.Join(args, " "))
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	require.NoError(t, err, "%s: %s", strings.Join(args, " "), out)
}

// outside is a network namespace the test makes to stand for the world
// beyond the node: a veth pair from the host into it, and a TCP service
// in it. Nothing leaves the machine.
type outside struct {
	addr string // the service, host:port
}

func newOutside(t *testing.T, n containerdtest.TenantNetwork) outside {
	t.Helper()
	name := fmt.Sprintf("gft%dout", n.Index)
	host, peer := fmt.Sprintf("gft%dh", n.Index), fmt.Sprintf("gft%dn", n.Index)
	hostIP := fmt.Sprintf("10.%d.0.1", 192+n.Index)
	peerIP := fmt.Sprintf("10.%d.0.2", 192+n.Index)
	_ = exec.Command("ip", "netns", "delete", name).Run() // a crashed run's
	_ = exec.Command("ip", "link", "delete", host).Run()
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	sh(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", name)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "delete", host).Run() })
	sh(t, "ip", "addr", "add", hostIP+"/30", "dev", host)
	sh(t, "ip", "link", "set", host, "up")
	sh(t, "ip", "-n", name, "addr", "add", peerIP+"/30", "dev", peer)
	sh(t, "ip", "-n", name, "link", "set", peer, "up")
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	l := listenIn(t, "/run/netns/"+name, peerIP+":0")
	return outside{addr: l.Addr().String()}
}

// listenIn opens a TCP listener inside the network namespace at nsPath
// (the socket stays there) and serves a greeting until the test ends.
func listenIn(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// This thread enters the namespace and is never given back.
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		l, err := net.Listen("tcp", addr)
		ch <- result{l, err}
	}()
	r := <-ch
	require.NoError(t, r.err)
	serve(t, r.l)
	return r.l
}

// serve greets each connection to l until the test ends.
func serve(t *testing.T, l net.Listener) {
	t.Cleanup(func() { _ = l.Close() })
	go func() { // ends when l closes
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello from the host side")
			_ = c.Close()
		}
	}()
}

// attempt runs "probe try ..." as a container of tenant on network net
// and returns what the probe reported.
func (f *fixture) attempt(t *testing.T, tenant string, network isolation.Network, args ...string) probeAttempt {
	t.Helper()
	id := fmt.Sprintf("try-%d", time.Now().UnixNano())
	es, out := f.run(t, isolation.Spec{ID: id, Tenant: tenant, Image: probeRef, Network: network,
		Args: append([]string{"try"}, args...)})
	require.NoError(t, f.rt.Delete(ctx(t), isolation.Ref{Tenant: tenant, ID: id}))
	var a probeAttempt
	require.NoError(t, jsonLine(out, &a), "exit %+v, output %q", es, out)
	return a
}

type probeAttempt struct {
	Attempt string `json:"attempt"`
	Target  string `json:"target"`
	Result  string `json:"result"`
	Detail  string `json:"detail"`
}

// jsonLine decodes the last line of out into v.
func jsonLine(out string, v any) error {
	var last string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return json.Unmarshal([]byte(last), v)
}

// hostAddress is one of the host's own IPv4 addresses outside the test's
// networks, if it has one.
func hostAddress(n containerdtest.TenantNetwork) (netip.Addr, string) {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "gft") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !n.Subnet.Contains(p.Addr()) {
				return p.Addr(), i.Name
			}
		}
	}
	return netip.Addr{}, ""
}

// TestTenantNetwork: a container on the tenant network has an address in
// its tenant's subnet, reaches the world (a namespace the test made) and
// its own tenant's containers, and nothing of the host or of other
// tenants; everything the runtime set up goes with the containers and the
// runtime.
func TestTenantNetwork(t *testing.T) {
	f := newFixture(t)
	n := f.d.Network()
	world := newOutside(t, n)
	for _, tenant := range []string{"net-a", "net-b"} {
		f.importImage(t, tenant, probeRef)
	}
	c := ctx(t)

	// The host's own service, on every address.
	hostL, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	serve(t, hostL)
	_, hostPort, _ := net.SplitHostPort(hostL.Addr().String())

	server := f.start(t, isolation.Spec{ID: "server", Tenant: "net-a", Image: probeRef, Network: isolation.NetworkBridge,
		Args: []string{"listen", "-addr", ":8080"}})
	f.waitOutput(t, server, "listening")
	info, err := f.rt.Inspect(c, server)
	require.NoError(t, err)
	require.True(t, info.Address.IsValid(), "the server has an address")
	t.Logf("tenant net-a's server is at %s", info.Address)
	assert.True(t, n.Subnet.Contains(info.Address))
	gateway := netip.AddrFrom4([4]byte{info.Address.As4()[0], info.Address.As4()[1], info.Address.As4()[2], 1})
	serverAddr := net.JoinHostPort(info.Address.String(), "8080")

	cases := []struct {
		name, tenant, target, want string
	}{
		{"the world", "net-b", world.addr, "ok"},
		{"its own tenant's container", "net-a", serverAddr, "ok"},
		{"another tenant's container", "net-b", serverAddr, "ECONNREFUSED"},
		{"the host through its bridge", "net-b", net.JoinHostPort(gateway.String(), hostPort), "ECONNREFUSED"},
		{"the host's loopback service", "net-b", net.JoinHostPort("127.0.0.1", hostPort), "ECONNREFUSED"},
	}
	if a, name := hostAddress(n); a.IsValid() {
		cases = append(cases, struct{ name, tenant, target, want string }{
			"the host's address on " + name, "net-b", net.JoinHostPort(a.String(), hostPort), "ECONNREFUSED"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := f.attempt(t, tc.tenant, isolation.NetworkBridge, "dial", "tcp", tc.target)
			t.Logf("tenant %s dials %s: %s", tc.tenant, tc.target, a.Result)
			assert.Equal(t, tc.want, a.Result)
		})
	}

	// Nothing is left: no namespace, no address, and after Close no chain.
	_, err = f.rt.Stop(c, server)
	require.NoError(t, err)
	require.NoError(t, f.rt.Delete(c, server))
	left, _ := filepath.Glob(filepath.Join(n.StateDir, "netns", "*", "*"))
	assert.Empty(t, left, "every network namespace is gone with its container")
	require.NoError(t, f.rt.Close())
	chain := strings.ToUpper(n.BridgePrefix) + "-IN"
	err = exec.CommandContext(context.Background(), "iptables", "-w", "5", "-n", "-L", chain).Run()
	assert.Error(t, err, "chain %s removed at Close", chain)
}

// pluginDir links the CNI plugins into a folder of the test's own, so a
// test can take them away.
func pluginDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{"bridge", "host-local"} {
		src := ""
		for _, d := range containerd.DefaultCNIPluginDirs() {
			if _, err := os.Stat(filepath.Join(d, p)); err == nil {
				src = filepath.Join(d, p)
				break
			}
		}
		require.NotEmpty(t, src, "CNI plugin %s: install containernetworking-plugins", p)
		require.NoError(t, os.Symlink(src, filepath.Join(dir, p)))
	}
	return dir
}

// TestTenantNetworkFailures: without the plugins a bridge spec is refused
// at Create and nothing is made; a Delete whose detach fails keeps the
// container, so it can be retried, and the retry leaves nothing; an
// attach cut short (a namespace without an address) is redone at Start.
func TestTenantNetworkFailures(t *testing.T) {
	plugins := pluginDir(t)
	d := daemon.Daemon(t)
	n := testNetwork(d)
	n.PluginDirs = []string{plugins}
	f := newFixture(t, containerd.WithNetwork(n))
	f.importImage(t, "flaky", probeRef)
	c := ctx(t)
	spec := isolation.Spec{ID: "web", Tenant: "flaky", Image: probeRef, Network: isolation.NetworkBridge, Args: []string{"sleep"}}

	t.Run("no plugins", func(t *testing.T) {
		empty := n
		empty.PluginDirs = []string{t.TempDir()}
		rt := f.newRuntime(t, containerd.WithNetwork(empty))
		_, err := rt.Create(c, spec)
		require.ErrorIs(t, err, isolation.ErrUnavailable)
		assert.ErrorContains(t, err, "install containernetworking-plugins")
		_, err = rt.Inspect(c, isolation.Ref{Tenant: spec.Tenant, ID: spec.ID})
		assert.ErrorIs(t, err, isolation.ErrNotFound, "nothing was made")
	})

	t.Run("an attach cut short is redone", func(t *testing.T) {
		info, err := f.rt.Create(c, spec)
		require.NoError(t, err)
		// What a crash between the namespace and CNI's ADD leaves.
		require.NoError(t, containerd.NewNetNS(filepath.Join(n.StateDir, "netns", isolation.Namespace(spec.Tenant), spec.ID)))
		require.NoError(t, f.rt.Start(c, info.Ref))
		f.waitOutput(t, info.Ref, "sleeping")
		got, err := f.rt.Inspect(c, info.Ref)
		require.NoError(t, err)
		assert.True(t, got.Address.IsValid(), "attached after all")

		_, err = f.rt.Stop(c, info.Ref)
		require.NoError(t, err)
		hidden := plugins + ".away"
		require.NoError(t, os.Rename(plugins, hidden))
		err = f.rt.Delete(c, info.Ref)
		require.ErrorIs(t, err, isolation.ErrUnavailable, "the detach failed")
		t.Logf("delete without plugins: %v", err)
		_, err = f.rt.Inspect(c, info.Ref)
		require.NoError(t, err, "the container is kept for a retry")
		require.NoError(t, os.Rename(hidden, plugins))
		require.NoError(t, f.rt.Delete(c, info.Ref))
		left, _ := filepath.Glob(filepath.Join(n.StateDir, "netns", "*", "*"))
		assert.Empty(t, left)
	})

	t.Run("a container deleted behind the runtime's back", func(t *testing.T) {
		ref := f.start(t, isolation.Spec{ID: "gone", Tenant: "flaky", Image: probeRef, Network: isolation.NetworkBridge, Args: []string{"sleep"}})
		f.waitOutput(t, ref, "sleeping")
		nctx := namespaces.WithNamespace(c, isolation.Namespace(ref.Tenant))
		ctr, err := f.client.LoadContainer(nctx, ref.ID)
		require.NoError(t, err)
		task, err := ctr.Task(nctx, nil)
		require.NoError(t, err)
		_, err = task.Delete(nctx, ctrd.WithProcessKill)
		require.NoError(t, err)
		require.NoError(t, ctr.Delete(nctx, ctrd.WithSnapshotCleanup))
		left, _ := filepath.Glob(filepath.Join(n.StateDir, "netns", "*", "gone"))
		require.Len(t, left, 1, "containerd knows nothing of the network")
		_, err = f.rt.Recover(c)
		require.NoError(t, err)
		left, _ = filepath.Glob(filepath.Join(n.StateDir, "netns", "*", "gone*"))
		assert.Empty(t, left, "Recover took it off the network")
	})
}
