// Command gpufarm-dra runs a GPU node of a Kubernetes cluster: the
// workload manager (miners on idle GPUs, in containerd), the meter and its
// ledger, and the DRA kubelet plugin that hands GPUs to claims. Deploy it
// with the manifests in kubernetes/deploy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/nvml"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/kubernetes/dra"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	ledgerbolt "github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gpufarm-dra:", err)
		os.Exit(1)
	}
}

type config struct {
	node, kubeconfig, backend, preset, state, ctrd, cdiDir string
	registryDir, pluginDir, minerImage, minerArgs, listen  string
	price                                                  float64
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("gpufarm-dra", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.node, "node-name", os.Getenv("NODE_NAME"), "this node's name in the cluster (default $NODE_NAME)")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster service account")
	fs.StringVar(&c.backend, "backend", "nvml", "nvml (this host's GPUs) or sim (a simulated rig, for trying it out)")
	fs.StringVar(&c.preset, "preset", sim.PresetA40, "the simulated rig's preset")
	fs.StringVar(&c.state, "state", "/var/lib/gpufarm", "folder of the workload store and the ledger")
	fs.StringVar(&c.ctrd, "containerd", containerd.DefaultAddress, "containerd's socket")
	fs.StringVar(&c.cdiDir, "cdi-dir", "", "CDI spec folder (default: /etc/cdi and /var/run/cdi; a simulated spec under -state for sim)")
	fs.StringVar(&c.registryDir, "registry-dir", kubeletplugin.KubeletRegistryDir, "kubelet's plugin registration folder")
	fs.StringVar(&c.pluginDir, "plugin-dir", filepath.Join(kubeletplugin.KubeletPluginsDir, dra.DriverName), "the plugin's socket folder")
	fs.StringVar(&c.minerImage, "miner-image", "", "the miner to run on idle GPUs (tenant mining); empty: idle GPUs stay idle")
	fs.StringVar(&c.minerArgs, "miner-args", "", "the miner's arguments, separated by spaces")
	fs.StringVar(&c.listen, "listen", "", "also serve the agent's HTTP API on this loopback address, e.g. 127.0.0.1:9400")
	fs.Float64Var(&c.price, "price", 0.20, "power price per kWh, for the ledger's cost")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var bad []string
	if c.node == "" {
		bad = append(bad, "-node-name is empty: give the node's name, or set NODE_NAME (the DaemonSet does)")
	}
	if c.backend != "nvml" && c.backend != "sim" {
		bad = append(bad, fmt.Sprintf("-backend %q: give nvml or sim", c.backend))
	}
	if fs.NArg() > 0 {
		bad = append(bad, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if len(bad) > 0 {
		return c, errors.New(strings.Join(bad, "; "))
	}
	return c, nil
}

// run serves until ctx ends. Claims stay held and miners keep running
// when it stops; the next start finds both in the store and containerd.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := os.MkdirAll(c.state, 0o750); err != nil {
		return err
	}
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}()
	kube, err := kubeClient(c.kubeconfig)
	if err != nil {
		return err
	}
	var backend gpu.Backend
	var load func(string, float64, []int)
	switch c.backend {
	case "nvml":
		b, err := nvml.New(ctx)
		if err != nil {
			return err
		}
		backend = b
	case "sim":
		p, err := sim.PresetByName(c.preset)
		if err != nil {
			return err
		}
		rig, err := sim.New(p)
		if err != nil {
			return err
		}
		backend, load = rig, rig.SetGPULoad
	}
	gpus, err := gpu.New(ctx, backend, gpu.WithLogger(log.With("component", "gpu")))
	if err != nil {
		return err
	}
	closers = append(closers, gpus.Close)
	cdiDirs := containerd.DefaultCDISpecDirs()
	switch {
	case c.cdiDir != "":
		cdiDirs = []string{c.cdiDir}
	case c.backend == "sim":
		cdi, err := containerd.WriteSimulatedCDI(filepath.Join(c.state, "cdi"), gpus.Devices())
		if err != nil {
			return err
		}
		cdiDirs = []string{cdi.SpecDir}
	}
	rt, err := containerd.New(ctx, containerd.WithAddress(c.ctrd), containerd.WithCDISpecDirs(cdiDirs...),
		containerd.WithLogDir(filepath.Join(c.state, "logs")), containerd.WithLogger(log.With("component", "isolation")))
	if err != nil {
		return err
	}
	closers = append(closers, rt.Close)
	store, err := bolt.Open(filepath.Join(c.state, "node.db"))
	if err != nil {
		return err
	}
	closers = append(closers, store.Close)
	opts := []workload.Option{workload.WithStore(store), workload.WithLogger(log.With("component", "workload"))}
	if load != nil {
		opts = append(opts, workload.WithLoad(load))
	}
	if c.minerImage != "" {
		opts = append(opts, workload.WithFiller(workload.FillerFunc(func(context.Context, gpu.Device) (workload.Spec, bool) {
			return workload.Spec{Tenant: isolation.DefaultMiningTenant, Image: c.minerImage, Command: strings.Fields(c.minerArgs),
				Network: isolation.NetworkHost, StopGrace: 5 * time.Second}, true
		})))
	}
	m, err := workload.New(gpus, rt, opts...)
	if err != nil {
		return err
	}
	closers = append(closers, m.Close)
	ledger, err := ledgerbolt.Open(filepath.Join(c.state, "ledger.db"))
	if err != nil {
		return err
	}
	closers = append(closers, ledger.Close)
	meter, err := accounting.New(ctx, gpus, m, ledger, accounting.WithTariff(accounting.Flat(c.price)),
		accounting.WithLogger(log.With("component", "accounting")))
	if err != nil {
		return err
	}
	closers = append(closers, meter.Close)
	drv, err := dra.New(m, gpus, c.node, dra.WithLogger(log.With("component", "dra")))
	if err != nil {
		return err
	}

	// A part that fails ends the others: the pod exits, and the DaemonSet
	// starts it again.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 4)
	n := 3
	go func() { ran <- m.Run(ctx) }()
	go func() { ran <- meter.Run(ctx, time.Second) }()
	go func() {
		ran <- drv.Run(ctx, kube, kubeletplugin.RegistrarDirectoryPath(c.registryDir), kubeletplugin.PluginDataDirectoryPath(c.pluginDir))
	}()
	if c.listen != "" {
		srv, err := agent.New(m, agent.WithGPUs(gpus), agent.WithLedger(ledger), agent.WithImages(rt), agent.WithLogger(log.With("component", "agent")))
		if err != nil {
			return err
		}
		n++
		go func() { ran <- srv.ListenAndServe(ctx, c.listen) }()
	}
	log.Info("gpufarm DRA driver running", "node", c.node, "driver", dra.DriverName, "gpus", len(gpus.Devices()))
	var first error
	for range n {
		if err := <-ran; err != nil && !errors.Is(err, context.Canceled) && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (give -kubeconfig outside a cluster): %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}
