package containerd

// The tenant network (isolation.NetworkBridge). Each such container gets a
// network namespace of its own, made with its task and attached by CNI to
// its tenant's bridge: one bridge and one /24 per tenant slot, outbound
// traffic masqueraded. Firewall chains the runtime installs before the
// first attach, and removes at Close when no container is attached, keep the containers off
// the host's own addresses (and so its loopback services, which the
// kernel never routes to from outside), off other tenants' bridges, and
// closed to connections from anywhere but the host.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	gocni "github.com/containerd/go-cni"
	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/isolation"
)

// NetworkConfig is the tenant network's setup; see WithNetwork.
type NetworkConfig struct {
	// Subnet is cut into one /24 per tenant (slot n gets the n-th), so
	// its size bounds the number of tenants: a /16 holds 256.
	Subnet netip.Prefix
	// BridgePrefix names the tenants' bridges (prefix and slot) and the
	// firewall chains (upper case, "-IN" and "-FWD"): letters and digits,
	// at most 11 so a bridge name fits the kernel's 15.
	BridgePrefix string
	// PluginDirs are searched for the CNI plugins bridge and
	// host-local.
	PluginDirs []string
	// StateDir holds the network namespaces and the addresses given;
	// a tmpfs (/run), since neither outlives a reboot.
	StateDir string
}

// Defaults of the tenant network.
const (
	DefaultTenantSubnet    = "10.200.0.0/16"
	DefaultBridgePrefix    = "gpufarm"
	DefaultNetworkStateDir = "/run/gpufarm/network"
)

// DefaultCNIPluginDirs are where Debian's containernetworking-plugins and
// the upstream release tarball put the plugins.
func DefaultCNIPluginDirs() []string { return []string{"/usr/lib/cni", "/opt/cni/bin"} }

// DefaultNetworkConfig is the tenant network WithNetwork replaces.
func DefaultNetworkConfig() NetworkConfig {
	return NetworkConfig{
		Subnet:       netip.MustParsePrefix(DefaultTenantSubnet),
		BridgePrefix: DefaultBridgePrefix,
		PluginDirs:   DefaultCNIPluginDirs(),
		StateDir:     DefaultNetworkStateDir,
	}
}

// WithNetwork sets up the tenant network (DefaultNetworkConfig when not
// given). Two runtimes on one host, such as the test daemons of parallel
// packages, need different prefixes, subnets and state dirs.
func WithNetwork(c NetworkConfig) Option { return func(o *options) { o.network = c } }

var bridgePrefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,10}$`)

// validate lists every problem of c.
func (c NetworkConfig) validate() []string {
	var bad []string
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 24 || c.Subnet.Bits() < 8 {
		bad = append(bad, fmt.Sprintf("Subnet %s: give an IPv4 prefix between /8 and /24", c.Subnet))
	}
	if !bridgePrefixRE.MatchString(c.BridgePrefix) {
		bad = append(bad, fmt.Sprintf("BridgePrefix %q: give 1 to 11 lower-case letters and digits, a letter first", c.BridgePrefix))
	}
	if len(c.PluginDirs) == 0 {
		bad = append(bad, "PluginDirs: give the directories of the CNI plugins")
	}
	if !filepath.IsAbs(c.StateDir) {
		bad = append(bad, fmt.Sprintf("StateDir %q: give an absolute directory", c.StateDir))
	}
	return bad
}

// networkTimeout bounds one attach or detach: plugins and iptables are
// processes that may hang on a lock.
const networkTimeout = 30 * time.Second

// labelNetwork marks a container on the tenant network.
const labelNetwork = isolation.LabelPrefix + "network"

// network attaches and detaches containers, one at a time.
type network struct {
	cfg  NetworkConfig
	mu   sync.Mutex
	cni  map[int]gocni.CNI // by tenant slot
	fwUp bool              // this runtime installed the firewall
}

func newNetwork(cfg NetworkConfig) *network {
	cfg.Subnet = cfg.Subnet.Masked()
	return &network{cfg: cfg, cni: map[int]gocni.CNI{}}
}

// tenantSubnet is the /24 of a slot.
func (r *Runtime) tenantSubnet(slot int) netip.Prefix {
	a := r.opts.network.Subnet.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n += uint32(slot) << 8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), 0}), 24)
}

func (n *network) bridge(slot int) string { return fmt.Sprintf("%s%d", n.cfg.BridgePrefix, slot) }

// nsPath is where the container's network namespace is bound: known at
// Create, made at the first task.
func (n *network) nsPath(ref isolation.Ref) string {
	return filepath.Join(n.cfg.StateDir, "netns", isolation.Namespace(ref.Tenant), ref.ID)
}

// addrPath records the address an attach gave; it is written last, so it
// says the attach finished.
func (n *network) addrPath(ref isolation.Ref) string { return n.nsPath(ref) + ".addr" }

func cniID(ref isolation.Ref) string { return isolation.Namespace(ref.Tenant) + "_" + ref.ID }

// plugins are the CNI plugins the tenant network runs.
var plugins = []string{"bridge", "host-local"}

// available says what is missing to run the tenant network, if anything.
func (n *network) available() error {
	var missing []string
	for _, p := range plugins {
		found := false
		for _, d := range n.cfg.PluginDirs {
			if _, err := os.Stat(filepath.Join(d, p)); err == nil {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, "CNI plugin "+p+" (in "+strings.Join(n.cfg.PluginDirs, ", ")+")")
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the tenant network needs %s: install containernetworking-plugins and iptables, or use network none",
			isolation.ErrUnavailable, strings.Join(missing, ", "))
	}
	return nil
}

// conf is the CNI network of a tenant slot.
func (n *network) conf(slot int, subnet netip.Prefix) ([]byte, error) {
	return json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.bridge(slot),
		"plugins": []map[string]any{{
			"type":      "bridge",
			"bridge":    n.bridge(slot),
			"isGateway": true,
			// The firewall masquerades the whole subnet with one rule;
			// the plugin's would cost iptables runs on every attach.
			"ipMasq":      false,
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": subnet.String()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.cfg.StateDir, "ipam"),
			},
		}},
	})
}

func (n *network) cniFor(slot int, subnet netip.Prefix) (gocni.CNI, error) {
	if c, ok := n.cni[slot]; ok {
		return c, nil
	}
	conf, err := n.conf(slot, subnet)
	if err != nil {
		return nil, err
	}
	// The plugin dirs first: each network keeps the plugin search path it
	// was loaded with.
	c, err := gocni.New(gocni.WithPluginDir(n.cfg.PluginDirs), gocni.WithMinNetworkCount(1),
		gocni.WithConfListBytes(conf))
	if err != nil {
		return nil, fmt.Errorf("isolation: load the tenant network of slot %d: %w", slot, err)
	}
	n.cni[slot] = c
	return c, nil
}

// attach gives the container a network namespace on its tenant's bridge,
// unless an earlier attach finished (a restart keeps its address), and
// returns its address.
func (n *network) attach(ctx context.Context, ref isolation.Ref, slot int, subnet netip.Prefix) (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a := n.address(ref); a.IsValid() {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(ctx, networkTimeout)
	defer cancel()
	if err := n.available(); err != nil {
		return netip.Addr{}, err
	}
	c, err := n.cniFor(slot, subnet)
	if err != nil {
		return netip.Addr{}, err
	}
	// What an interrupted attach left goes first.
	if err := n.release(ctx, c, ref); err != nil {
		return netip.Addr{}, err
	}
	// The firewall is up before any container is on a bridge.
	if err := n.ensureFirewall(ctx); err != nil {
		return netip.Addr{}, err
	}
	path := n.nsPath(ref)
	if err := newNetNS(path); err != nil {
		return netip.Addr{}, fmt.Errorf("isolation: network namespace of %s: %w", ref, err)
	}
	res, err := c.Setup(ctx, cniID(ref), path)
	var addr netip.Addr
	if err == nil {
		addr, err = cniAddr(res)
	}
	if err == nil {
		err = os.WriteFile(n.addrPath(ref), []byte(addr.String()+"\n"), 0o644)
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), networkTimeout)
		defer cancel()
		if rerr := n.release(rctx, c, ref); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return netip.Addr{}, fmt.Errorf("%w: attach %s to the tenant network: %w", isolation.ErrUnavailable, ref, err)
	}
	return addr, nil
}

// address is what the container's finished attach gave it, if any.
func (n *network) address(ref isolation.Ref) netip.Addr {
	b, err := os.ReadFile(n.addrPath(ref))
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(strings.TrimSpace(string(b)))
	return a
}

// cniAddr is the address the bridge gave the container's eth0.
func cniAddr(res *gocni.Result) (netip.Addr, error) {
	for name, cfg := range res.Interfaces {
		if name == "lo" || cfg.Sandbox == "" {
			continue
		}
		for _, ip := range cfg.IPConfigs {
			if a, ok := netip.AddrFromSlice(ip.IP.To4()); ok {
				return a, nil
			}
		}
	}
	return netip.Addr{}, errors.New("the bridge plugin gave the container no IPv4 address")
}

// detach takes the container off the network and removes its namespace.
// Detaching a container that was never attached does nothing.
func (n *network) detach(ctx context.Context, ref isolation.Ref, slot int, subnet netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := os.Lstat(n.nsPath(ref)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, networkTimeout)
	defer cancel()
	c, err := n.cniFor(slot, subnet)
	if err != nil {
		return err
	}
	if err := n.release(ctx, c, ref); err != nil {
		return fmt.Errorf("%w: detach %s from the tenant network: %w", isolation.ErrUnavailable, ref, err)
	}
	return nil
}

// release undoes an attach, finished or not: CNI's DEL (it frees the
// address and the host's end of the link), then the namespace.
func (n *network) release(ctx context.Context, c gocni.CNI, ref isolation.Ref) error {
	path := n.nsPath(ref)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_ = os.Remove(n.addrPath(ref))
	if err := c.Remove(ctx, cniID(ref), path); err != nil {
		return fmt.Errorf("CNI DEL: %w", err)
	}
	return removeNetNS(path)
}

// orphans are the containers with a network namespace that are not in
// known.
func (n *network) orphans(known map[isolation.Ref]bool) []isolation.Ref {
	var out []isolation.Ref
	paths, _ := filepath.Glob(filepath.Join(n.cfg.StateDir, "netns", isolation.NamespacePrefix+"*", "*"))
	for _, p := range paths {
		if strings.HasSuffix(p, ".addr") {
			continue
		}
		ref := isolation.Ref{Tenant: strings.TrimPrefix(filepath.Base(filepath.Dir(p)), isolation.NamespacePrefix), ID: filepath.Base(p)}
		if !known[ref] {
			out = append(out, ref)
		}
	}
	return out
}

// attached counts the network namespaces left.
func (n *network) attached() int {
	dirs, _ := os.ReadDir(filepath.Join(n.cfg.StateDir, "netns"))
	count := 0
	for _, d := range dirs {
		files, _ := os.ReadDir(filepath.Join(n.cfg.StateDir, "netns", d.Name()))
		for _, f := range files {
			if !strings.HasSuffix(f.Name(), ".addr") {
				count++
			}
		}
	}
	return count
}

// newNetNS makes a network namespace with its loopback up and binds it at
// path, which must not exist. Bringing lo up here spares two runs of CNI's
// loopback plugin per container.
func newNetNS(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	_ = f.Close()
	done := make(chan error, 1)
	go func() {
		// The thread that unshares is left locked, so it ends with this
		// goroutine and no other goroutine ever runs in the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := loopbackUp(); err != nil {
			done <- fmt.Errorf("bring up lo: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			done <- fmt.Errorf("bind %s: %w", src, err)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// removeNetNS unbinds and removes a namespace newNetNS made.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unbind %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// chains are the names of the firewall chains.
func (n *network) chains() (in, fwd string) {
	p := strings.ToUpper(n.cfg.BridgePrefix)
	return p + "-IN", p + "-FWD"
}

// ensureFirewall installs the chains that fence the bridges in, once per
// runtime, for IPv4 and IPv6 (tenants get no IPv6, but link-local
// addresses would reach the host). Each family's chains are written in
// one iptables-restore, so a chain is never seen half filled.
func (n *network) ensureFirewall(ctx context.Context) error {
	if n.fwUp {
		return nil
	}
	in, fwd := n.chains()
	bridges := n.cfg.BridgePrefix + "+"
	// Outbound traffic leaves with the host's address: one rule for
	// every tenant's subnet.
	nat := strings.Join([]string{
		"*nat",
		":" + in + " - [0:0]",
		"-A " + in + " -s " + n.cfg.Subnet.String() + " ! -d " + n.cfg.Subnet.String() + " -j MASQUERADE",
		"COMMIT", "",
	}, "\n")
	v4 := strings.Join([]string{
		"*filter",
		":" + in + " - [0:0]",
		":" + fwd + " - [0:0]",
		// Replies to what the host opened (the agent's health checks).
		"-A " + in + " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		"-A " + in + " -j REJECT",
		"-A " + fwd + " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		// Containers of one tenant share its bridge; with br_netfilter
		// their frames pass here too.
		"-A " + fwd + " -m physdev --physdev-is-bridged -j ACCEPT",
		"-A " + fwd + " -i " + bridges + " -o " + bridges + " -j REJECT", // tenant to tenant
		"-A " + fwd + " -i " + bridges + " -j ACCEPT",                    // out to the world
		"-A " + fwd + " -o " + bridges + " -j REJECT",                    // nothing opens a connection in
		"COMMIT", "",
	}, "\n") + nat
	v6 := strings.Join([]string{
		"*filter",
		":" + in + " - [0:0]",
		":" + fwd + " - [0:0]",
		"-A " + in + " -j REJECT",
		"-A " + fwd + " -j REJECT",
		"COMMIT", "",
	}, "\n")
	var errs []error
	for tool, script := range map[string]string{"iptables": v4, "ip6tables": v6} {
		if err := xtRestore(ctx, tool, script); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, jump(ctx, tool, "filter", "INPUT", "-i", bridges, "-j", in),
			jump(ctx, tool, "filter", "FORWARD", "-i", bridges, "-j", fwd),
			jump(ctx, tool, "filter", "FORWARD", "-o", bridges, "-j", fwd))
		if tool == "iptables" {
			errs = append(errs, jump(ctx, tool, "nat", "POSTROUTING", "-j", in))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: install the tenant network firewall: %w", isolation.ErrUnavailable, err)
	}
	n.fwUp = true
	return nil
}

// removeFirewall removes the chains and the jumps to them, if no
// container is on a bridge.
func (n *network) removeFirewall(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attached() > 0 {
		return nil
	}
	in, fwd := n.chains()
	bridges := n.cfg.BridgePrefix + "+"
	var errs []error
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			continue // never installed
		}
		if !n.fwUp && xt(ctx, tool, "-t", "filter", "-n", "-L", in) != nil &&
			(tool != "iptables" || xt(ctx, tool, "-t", "nat", "-n", "-L", in) != nil) {
			continue // not there: nothing to run
		}
		errs = append(errs, unjump(ctx, tool, "filter", "INPUT", "-i", bridges, "-j", in),
			unjump(ctx, tool, "filter", "FORWARD", "-i", bridges, "-j", fwd),
			unjump(ctx, tool, "filter", "FORWARD", "-o", bridges, "-j", fwd),
			unchain(ctx, tool, "filter", in), unchain(ctx, tool, "filter", fwd))
		if tool == "iptables" {
			errs = append(errs, unjump(ctx, tool, "nat", "POSTROUTING", "-j", in), unchain(ctx, tool, "nat", in))
		}
	}
	n.fwUp = false
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: remove the tenant network firewall: %w", isolation.ErrUnavailable, err)
	}
	return nil
}

// xt runs one iptables or ip6tables command, waiting for the xtables lock.
func xt(ctx context.Context, tool string, args ...string) error {
	return xtRun(ctx, tool, nil, append([]string{"-w", "5"}, args...)...)
}

// xtRestore applies a script without flushing what it does not name.
func xtRestore(ctx context.Context, tool, script string) error {
	return xtRun(ctx, tool+"-restore", strings.NewReader(script), "-w", "5", "--noflush")
}

func xtRun(ctx context.Context, tool string, stdin io.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// jump puts rule first in a built-in chain of table, once.
func jump(ctx context.Context, tool, table, builtin string, rule ...string) error {
	if xt(ctx, tool, append([]string{"-t", table, "-C", builtin}, rule...)...) == nil {
		return nil
	}
	return xt(ctx, tool, append([]string{"-t", table, "-I", builtin, "1"}, rule...)...)
}

// unjump deletes every copy of rule from a built-in chain of table.
func unjump(ctx context.Context, tool, table, builtin string, rule ...string) error {
	for xt(ctx, tool, append([]string{"-t", table, "-C", builtin}, rule...)...) == nil {
		if err := xt(ctx, tool, append([]string{"-t", table, "-D", builtin}, rule...)...); err != nil {
			return err
		}
	}
	return nil
}

// unchain empties and deletes a chain of table, if it is there.
func unchain(ctx context.Context, tool, table, name string) error {
	if xt(ctx, tool, "-t", table, "-n", "-L", name) != nil {
		return nil
	}
	if err := xt(ctx, tool, "-t", table, "-F", name); err != nil {
		return err
	}
	return xt(ctx, tool, "-t", table, "-X", name)
}
