package containerdtest_test

import (
	"fmt"

	"github.com/gpufarm/gpufarm/internal/containerdtest"
)

// The configuration Launch gives a daemon whose folder is /tmp/ctrd-1:
// everything of it stays in that folder.
func ExampleConfig() {
	fmt.Print(containerdtest.Config("/tmp/ctrd-1"))
	// Output:
	// version = 2
	// root = "/tmp/ctrd-1/root"
	// state = "/tmp/ctrd-1/state"
	// disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
	//
	// [grpc]
	//   address = "/tmp/ctrd-1/c.sock"
	//
	// [ttrpc]
	//   address = "/tmp/ctrd-1/c.sock.ttrpc"
	//
	// [debug]
	//   address = ""
	//
	// [metrics]
	//   address = ""
	//
	// [plugins."io.containerd.internal.v1.opt"]
	//   path = "/tmp/ctrd-1/opt"
	//
	// # A namespace sees only the content it brought: one tenant cannot claim
	// # another's private image by its digest.
	// [plugins."io.containerd.metadata.v1.bolt"]
	//   content_sharing_policy = "isolated"
}
