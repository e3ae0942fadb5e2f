package dra_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/internal/containerdtest"
	"github.com/gpufarm/gpufarm/internal/ociimage"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/kubernetes/dra"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

func TestMain(m *testing.M) { os.Exit(daemon.Run(m)) }

// daemon is the package's private containerd, started by the first test
// that needs one.
var daemon containerdtest.Shared

const (
	nodeName = "gpu-node-1"
	minerRef = "gpufarm.test/fakeminer:latest"
)

// node is a simulated GPU node run by the workload manager with miners on
// every idle GPU, and the DRA driver in front of it, talking to a fake
// API server; kubelet is played by the tests over the plugin's sockets.
type node struct {
	t       testing.TB
	rig     *sim.Rig
	gpus    *gpu.Manager
	rt      isolation.Runtime
	cdi     containerd.SimulatedCDI
	store   string // the manager's bbolt file
	client  *fake.Clientset
	dir     string // sockets: dir/registry, dir/plugin
	m       *workload.Manager
	drv     *dra.Driver
	ledger  *accounting.MemoryLedger
	meter   *accounting.Meter
	stopped chan struct{}
	stop    func()
}

// newNode starts a node of the preset's first gpus GPUs; with containerd,
// its miners run as containers on the package's private daemon.
func newNode(t testing.TB, preset string, gpus int, withContainerd bool) *node {
	t.Helper()
	p, err := sim.PresetByName(preset)
	require.NoError(t, err)
	p.Cards = p.Cards[:gpus]
	rig, err := sim.New(p)
	require.NoError(t, err)
	gm, err := gpu.New(context.Background(), rig, gpu.WithEventRetry(50*time.Millisecond))
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "dra-") // short: socket paths are limited to 108 bytes
	require.NoError(t, err)
	// The simple fake, not NewClientset: the field-managed one builds a
	// REST mapper on every call (about 2 ms), which would swamp what the
	// benchmark measures and is nothing like an API server's Get.
	n := &node{t: t, rig: rig, gpus: gm, dir: dir, store: filepath.Join(dir, "node.db"), client: fake.NewSimpleClientset()} //nolint:staticcheck
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_, err = n.client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, UID: "node-uid-1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	if withContainerd {
		d := daemon.Daemon(t)
		n.cdi, err = containerd.WriteSimulatedCDI(filepath.Join(dir, "cdi"), gm.Devices())
		require.NoError(t, err)
		rt, err := containerd.New(context.Background(), containerd.WithAddress(d.Address), containerd.WithCDISpecDirs(n.cdi.SpecDir),
			containerd.WithLogDir(filepath.Join(dir, "logs")))
		require.NoError(t, err)
		f, err := os.Open(minerImage(t))
		require.NoError(t, err)
		_, err = rt.Import(context.Background(), "mining", f)
		f.Close()
		require.NoError(t, err)
		n.rt = rt
	} else {
		n.rt, err = process.New(process.WithUnsafeRoot(), process.WithLogDir(filepath.Join(dir, "logs")))
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		// What still runs is the test's leftovers: stop it with the node.
		if infos, err := n.rt.List(context.Background(), isolation.Filter{}); err == nil {
			for _, in := range infos {
				_, _ = n.rt.Stop(context.Background(), in.Ref)
				_ = n.rt.Delete(context.Background(), in.Ref)
			}
		}
		_ = n.rt.Close()
		_ = gm.Close()
	})
	n.ledger = accounting.NewMemoryLedger()
	n.start()
	return n
}

// minerImage builds the fake miner's image once.
var minerImage = func() func(t testing.TB) string {
	var once sync.Once
	var tar string
	var err error
	return func(t testing.TB) string {
		once.Do(func() {
			dir, _ := os.MkdirTemp("", "dra-images-")
			tar = filepath.Join(dir, "fakeminer.tar")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			err = ociimage.BuildFile(ctx, ociimage.Spec{Package: "github.com/gpufarm/gpufarm/internal/fakeminer", Ref: minerRef}, tar)
		})
		require.NoError(t, err, "build the fake miner image")
		return tar
	}
}()

// start runs the manager (with miners filling idle GPUs), the meter and
// the driver; stop ends them, leaving the containers and the store, as a
// restart of the plugin's process would.
func (n *node) start() {
	t := n.t
	store, err := bolt.Open(n.store)
	require.NoError(t, err)
	filler := workload.FillerFunc(func(_ context.Context, d gpu.Device) (workload.Spec, bool) {
		s := workload.Spec{Tenant: "mining", StopGrace: 2 * time.Second, Network: isolation.NetworkHost}
		if _, ok := n.rt.(*process.Runtime); ok {
			s.Image, s.Command = "miner", []string{"sleep", "3600"}
		} else {
			s.Image, s.Command = minerRef, []string{"-listen", "127.0.0.1:0", "-gpu-name", d.Name}
		}
		return s, true
	})
	n.m, err = workload.New(n.gpus, n.rt, workload.WithStore(store), workload.WithFiller(filler), workload.WithLoad(n.rig.SetGPULoad),
		workload.WithTick(20*time.Millisecond), workload.WithPowerSettle(0), workload.WithHygieneTimeout(5*time.Second),
		workload.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	n.meter, err = accounting.New(context.Background(), n.gpus, n.m, n.ledger, accounting.WithTariff(accounting.Flat(0.2)))
	require.NoError(t, err)
	n.drv, err = dra.New(n.m, n.gpus, nodeName, dra.WithHealthInterval(100*time.Millisecond), dra.WithPrepareTimeout(30*time.Second))
	require.NoError(t, err)
	for _, d := range []string{"registry", "plugin"} { // kubelet's folders, which it makes
		require.NoError(t, os.MkdirAll(filepath.Join(n.dir, d), 0o750))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = n.m.Run(ctx) }()
	go func() { defer wg.Done(); _ = n.meter.Run(ctx, 50*time.Millisecond) }()
	go func() {
		defer wg.Done()
		err := n.drv.Run(ctx, n.client, kubeletplugin.RegistrarDirectoryPath(filepath.Join(n.dir, "registry")),
			kubeletplugin.PluginDataDirectoryPath(filepath.Join(n.dir, "plugin")))
		if err != nil {
			t.Errorf("driver: %v", err)
		}
	}()
	stopped := false
	n.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		wg.Wait()
		_ = n.meter.Close()
		_ = n.m.Close()
		_ = store.Close()
	}
	t.Cleanup(n.stop)
	require.Eventually(t, func() bool { return n.m.Status().Running }, 10*time.Second, 10*time.Millisecond)
}

// restart stops everything but the containers and the store, and starts
// again: a new plugin process.
func (n *node) restart() {
	n.stop()
	n.start()
}

func (n *node) waitMining(count int) {
	n.t.Helper()
	require.Eventually(n.t, func() bool {
		return len(n.m.List(workload.Filter{Kind: workload.KindMining, States: []workload.State{workload.StateRunning}})) == count
	}, 60*time.Second, 20*time.Millisecond, "want %d miners", count)
}

// kubelet plays the kubelet: it registers the plugin and calls it.
type kubelet struct {
	reg registerapi.RegistrationClient
	dra drapb.DRAPluginClient
}

func (n *node) kubelet(ctx context.Context) *kubelet {
	t := n.t
	t.Helper()
	sock := filepath.Join(n.dir, "registry", dra.DriverName+"-reg.sock")
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 10*time.Millisecond, "the registration socket")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	k := &kubelet{reg: registerapi.NewRegistrationClient(conn)}
	info, err := k.reg.GetInfo(ctx, &registerapi.InfoRequest{})
	require.NoError(t, err)
	require.Equal(t, dra.DriverName, info.Name)
	require.Equal(t, registerapi.DRAPlugin, info.Type)
	_, err = k.reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true})
	require.NoError(t, err)
	dconn, err := grpc.NewClient("unix://"+info.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = dconn.Close() })
	k.dra = drapb.NewDRAPluginClient(dconn)
	return k
}

// claim makes an allocated ResourceClaim in namespace ns for the devices
// of this driver on this node, reserved for a pod, in the fake API server.
func (n *node) claim(ns, name string, devices ...string) *resourceapi.ResourceClaim {
	n.t.Helper()
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name + "-" + time.Now().Format("150405.000000000"))},
		Status: resourceapi.ResourceClaimStatus{
			Allocation:  &resourceapi.AllocationResult{},
			ReservedFor: []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: name + "-pod", UID: "pod-uid"}},
		},
	}
	for _, d := range devices {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: "gpu", Driver: dra.DriverName, Pool: nodeName, Device: d})
	}
	c.UID = types.UID(strings.NewReplacer(":", "", ".", "").Replace(string(c.UID)))
	_, err := n.client.ResourceV1().ResourceClaims(ns).Create(context.Background(), c, metav1.CreateOptions{})
	require.NoError(n.t, err)
	return c
}

func ref(c *resourceapi.ResourceClaim) *drapb.Claim {
	return &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
}

// holder is the workload holding GPU index i.
func (n *node) holder(i int) workload.GPU {
	for _, g := range n.m.GPUs() {
		if g.Device.Index == i {
			return g
		}
	}
	n.t.Fatalf("no GPU %d", i)
	return workload.GPU{}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
