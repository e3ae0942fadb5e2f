// Package containerdtest starts a private containerd daemon for tests.
//
// Each daemon has its own root, state directory and socket in a short
// temporary folder under /tmp (unix socket paths are limited to 108 bytes),
// runs with the CRI plugin disabled (see Config), and is stopped when the test (or the
// package, with Shared) ends: every task it ran is killed, its shims are
// ended by process id, its mounts are detached and its folder removed.
//
// A daemon needs root and the containerd, containerd-shim-runc-v2 and runc
// binaries. Without them a test is skipped, except when the environment
// variable CI is "true": then it fails, so integration tests never skip
// silently in CI.
//
// Per test:
//
//	d := containerdtest.Start(t)
//	c := d.Client(t)
//
// One daemon per package, started on first use:
//
//	var daemon containerdtest.Shared
//
//	func TestMain(m *testing.M) { os.Exit(daemon.Run(m)) }
//
//	func TestX(t *testing.T) { d := daemon.Daemon(t); ... }
package containerdtest
