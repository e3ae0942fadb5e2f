package containerdtest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// TenantNetwork is a tenant network of a daemon's own, for
// containerd.WithNetwork: bridges, firewall chains and a subnet that no
// other daemon on the machine uses at the same time (the daemons of
// parallel test packages each hold an index through a lock file), and
// state under the daemon's folder.
type TenantNetwork struct {
	Index        int
	BridgePrefix string
	Subnet       netip.Prefix
	StateDir     string
}

// maxNetworks is how many daemons may have a network at once.
const maxNetworks = 64

// Network is the daemon's tenant network.
func (d *Daemon) Network() TenantNetwork { return d.net }

// takeNetwork takes the first free index, held by an flock on a file in
// the temp dir until the returned file is closed (or the process dies).
func takeNetwork(dir string) (TenantNetwork, *os.File, error) {
	for i := 0; i < maxNetworks; i++ {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("gpufarm-testnet-%d.lock", i)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return TenantNetwork{}, nil, fmt.Errorf("containerdtest: network lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			continue
		}
		return TenantNetwork{
			Index:        i,
			BridgePrefix: fmt.Sprintf("gft%dx", i), // "x": no prefix is another's start
			Subnet:       netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i), 0, 0}), 16),
			StateDir:     filepath.Join(dir, "net"),
		}, f, nil
	}
	return TenantNetwork{}, nil, fmt.Errorf("containerdtest: all %d test networks are taken", maxNetworks)
}

// removeBridges deletes the bridges of the daemon's network, which CNI
// leaves behind.
func (d *Daemon) removeBridges() {
	if d.net.BridgePrefix == "" {
		return
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if rest, ok := strings.CutPrefix(i.Name, d.net.BridgePrefix); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			if out, err := exec.Command("ip", "link", "delete", i.Name).CombinedOutput(); err != nil {
				d.logf("containerdtest: delete bridge %s: %v: %s", i.Name, err, out)
			}
		}
	}
}
