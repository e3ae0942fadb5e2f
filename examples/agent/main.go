package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/nvml"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/containerd"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	ledgerbolt "github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/metrics"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

type config struct {
	listen, backend, preset, state, runtime, ctrd, cdiDir string
	gpus                                                  int
	tokens, cert, key, clientCA                           string
	unsafeRoot                                            bool
	pricePerKWh                                           float64
	debug                                                 bool
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:9400", "address of the API; off loopback it needs -tls-cert, -tls-key and -tokens or -client-ca")
	fs.StringVar(&c.backend, "backend", "sim", "sim (a simulated rig) or nvml (this host's GPUs)")
	fs.StringVar(&c.preset, "preset", sim.PresetA40, "the simulated rig's preset")
	fs.IntVar(&c.gpus, "gpus", 0, "use only the first N simulated GPUs (0: all)")
	fs.StringVar(&c.state, "state", "agent-state", "folder of the workload store, the ledger, the logs and the simulated CDI spec")
	fs.StringVar(&c.runtime, "runtime", "auto", "containerd, process (nothing isolated), or auto: containerd if it answers")
	fs.StringVar(&c.ctrd, "containerd", containerd.DefaultAddress, "containerd's socket")
	fs.StringVar(&c.cdiDir, "cdi-dir", "", "CDI spec folder (default: /etc/cdi and /var/run/cdi for nvml; a simulated spec under -state for sim)")
	fs.StringVar(&c.tokens, "tokens", "", "file of bearer tokens, one per line: SECRET, or SECRET TENANT for a tenant's token")
	fs.StringVar(&c.cert, "tls-cert", "", "TLS certificate (PEM)")
	fs.StringVar(&c.key, "tls-key", "", "TLS key (PEM)")
	fs.StringVar(&c.clientCA, "client-ca", "", "CA of accepted client certificates (PEM); a certificate named tenant:NAME acts for NAME")
	fs.BoolVar(&c.unsafeRoot, "unsafe-root", false, "let the process runtime run workloads as root")
	fs.Float64Var(&c.pricePerKWh, "price", 0.20, "power price per kWh, for the ledger's cost")
	fs.BoolVar(&c.debug, "debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, nil
}

// run is the agent: it serves until ctx ends, then shuts down, leaving
// the workloads running for the next start to find.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if c.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	state, err := filepath.Abs(c.state)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o750); err != nil {
		return fmt.Errorf("state folder: %w", err)
	}
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}()

	gpus, rig, err := openGPUs(ctx, c, log)
	if err != nil {
		return err
	}
	closers = append(closers, gpus.Close)
	rt, err := openRuntime(ctx, c, state, gpus.Devices(), log)
	if err != nil {
		return err
	}
	closers = append(closers, rt.Close)
	store, err := bolt.Open(filepath.Join(state, "node.db"))
	if err != nil {
		return err
	}
	closers = append(closers, store.Close)
	opts := []workload.Option{workload.WithStore(store), workload.WithLogger(log.With("component", "workload"))}
	if rig != nil {
		opts = append(opts, workload.WithLoad(rig.SetGPULoad))
	}
	m, err := workload.New(gpus, rt, opts...)
	if err != nil {
		return err
	}
	closers = append(closers, m.Close)
	ledger, err := ledgerbolt.Open(filepath.Join(state, "ledger.db"))
	if err != nil {
		return err
	}
	closers = append(closers, ledger.Close)
	meter, err := accounting.New(ctx, gpus, m, ledger, accounting.WithTariff(accounting.Flat(c.pricePerKWh)),
		accounting.WithLogger(log.With("component", "accounting")))
	if err != nil {
		return err
	}
	closers = append(closers, meter.Close)
	collector, err := metrics.New(meter, gpus, m)
	if err != nil {
		return err
	}
	metricsHandler, err := collector.Handler()
	if err != nil {
		return err
	}
	aopts, err := apiOptions(c)
	if err != nil {
		return err
	}
	aopts = append(aopts, agent.WithGPUs(gpus), agent.WithLedger(ledger), agent.WithMetrics(metricsHandler),
		agent.WithLogger(log.With("component", "agent")))
	if images, ok := rt.(isolation.ImageStore); ok {
		aopts = append(aopts, agent.WithImages(images))
	}
	srv, err := agent.New(m, aopts...)
	if err != nil {
		return err
	}

	// The manager, the meter, the collector and the API run until ctx
	// ends; the manager's Run returning leaves the containers running.
	ran := make(chan error, 3)
	go func() { ran <- m.Run(ctx) }()
	go func() { ran <- meter.Run(ctx, time.Second) }()
	go func() { ran <- collector.Run(ctx) }()
	err = srv.ListenAndServe(ctx, c.listen)
	stop := context.Cause(ctx)
	for range 3 {
		if rerr := <-ran; rerr != nil && !errors.Is(rerr, context.Canceled) && err == nil {
			err = rerr
		}
	}
	log.Info("agent stopped", "why", stop)
	return err
}

func openGPUs(ctx context.Context, c config, log *slog.Logger) (*gpu.Manager, *sim.Rig, error) {
	glog := gpu.WithLogger(log.With("component", "gpu"))
	switch c.backend {
	case "sim":
		p, err := sim.PresetByName(c.preset)
		if err != nil {
			return nil, nil, err
		}
		if c.gpus > 0 && c.gpus < len(p.Cards) {
			p.Cards = p.Cards[:c.gpus]
		}
		rig, err := sim.New(p)
		if err != nil {
			return nil, nil, err
		}
		m, err := gpu.New(ctx, rig, glog)
		return m, rig, err
	case "nvml":
		b, err := nvml.New(ctx)
		if err != nil {
			return nil, nil, err
		}
		m, err := gpu.New(ctx, b, glog)
		return m, nil, err
	}
	return nil, nil, fmt.Errorf("-backend %q: give sim or nvml", c.backend)
}

func openRuntime(ctx context.Context, c config, state string, devs []gpu.Device, log *slog.Logger) (isolation.Runtime, error) {
	rlog := log.With("component", "isolation")
	if c.runtime == "containerd" || c.runtime == "auto" {
		cdiDirs := containerd.DefaultCDISpecDirs()
		switch {
		case c.cdiDir != "":
			cdiDirs = []string{c.cdiDir}
		case c.backend == "sim":
			cdi, err := containerd.WriteSimulatedCDI(filepath.Join(state, "cdi"), devs)
			if err != nil {
				return nil, err
			}
			cdiDirs = []string{cdi.SpecDir}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		rt, err := containerd.New(cctx, containerd.WithAddress(c.ctrd), containerd.WithCDISpecDirs(cdiDirs...),
			containerd.WithLogDir(filepath.Join(state, "logs")), containerd.WithLogger(rlog))
		if err == nil || c.runtime == "containerd" {
			return rt, err
		}
		log.Warn("containerd does not answer; using the process runtime", "err", err)
	} else if c.runtime != "process" {
		return nil, fmt.Errorf("-runtime %q: give containerd, process or auto", c.runtime)
	}
	log.Warn("process runtime: NOTHING IS ISOLATED: workloads run as host processes and end with the agent")
	opts := []process.Option{process.WithLogDir(filepath.Join(state, "logs")), process.WithLogger(rlog)}
	if c.unsafeRoot {
		opts = append(opts, process.WithUnsafeRoot())
	}
	return process.New(opts...)
}

// apiOptions reads the credentials and the TLS files.
func apiOptions(c config) ([]agent.Option, error) {
	var opts []agent.Option
	if c.tokens != "" {
		tokens, err := readTokens(c.tokens)
		if err != nil {
			return nil, err
		}
		opts = append(opts, agent.WithTokens(tokens...))
	}
	if c.cert == "" && c.key == "" && c.clientCA == "" {
		return opts, nil
	}
	cert, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert, -tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.clientCA != "" {
		pem, err := os.ReadFile(c.clientCA)
		if err != nil {
			return nil, fmt.Errorf("-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-client-ca %s: no PEM certificate in it", c.clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return append(opts, agent.WithTLS(cfg)), nil
}

// readTokens reads "SECRET" or "SECRET TENANT" lines; # starts a comment.
func readTokens(path string) ([]agent.Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-tokens: %w", err)
	}
	defer f.Close()
	var out []agent.Token
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
		switch len(fields) {
		case 0:
		case 1:
			out = append(out, agent.Token{Secret: fields[0]})
		case 2:
			out = append(out, agent.Token{Secret: fields[0], Tenant: fields[1]})
		default:
			return nil, fmt.Errorf("-tokens %s line %d: want SECRET or SECRET TENANT", path, line)
		}
	}
	return out, sc.Err()
}
