package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, serves until ctx ends and returns the exit code:
// 0 after a clean shutdown, 1 on a runtime error, 2 on bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fakeminer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	listen := fs.String("listen", ":4067", "address of the HTTP API (T-Rex's default port)")
	fs.Float64Var(&cfg.hashrateHs, "hashrate", 95.5e6, "initial total hashrate in H/s; change it with POST /control/hashrate?value=")
	fs.StringVar(&cfg.algo, "algo", "ethash", "algorithm name reported")
	fs.IntVar(&cfg.gpus, "gpus", 1, "number of GPUs reported; the hashrate is split evenly")
	fs.StringVar(&cfg.name, "name", "t-rex", "miner name reported by /summary")
	fs.StringVar(&cfg.gpuName, "gpu-name", "RTX 3080", "GPU model name reported")
	fs.Float64Var(&cfg.difficulty, "difficulty", 4e9, "hashes per share: shares = floor(hashes since start / difficulty)")
	fs.IntVar(&cfg.rejectEvery, "reject-every", 0, "every Nth share is rejected (0: none)")
	fs.BoolVar(&cfg.warmup, "warmup", false, "emulate a fresh start: averaging windows fill over time (XMRig null, T-Rex hour/day 0); default: windows are full from the start")
	fs.StringVar(&cfg.api, "api", "", "serve this miner's API, and read its command line after --: "+strings.Join(apiNames(), ", ")+" (default: T-Rex's and XMRig's summaries)")
	fs.DurationVar(&cfg.window, "avg-window", time.Minute, "averaging window of the reported rate (T-Rex's --hashrate-avr; XMRig's middle window)")
	logEvery := fs.Duration("log-interval", 10*time.Second, "interval of the stats line on stdout (0: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var problems []error
	switch {
	case cfg.api != "":
		// The rest is the real miner's command line: its API address,
		// token and algorithm.
		ma, err := parseMinerArgs(cfg.api, fs.Args())
		if err != nil {
			problems = append(problems, err)
		}
		if ma.listen != "" {
			*listen = ma.listen
		}
		if ma.algo != "" && !set["algo"] {
			cfg.algo = ma.algo
		}
		if !set["name"] {
			cfg.name = cfg.api
		}
		cfg.token = ma.token
	case fs.NArg() > 0:
		problems = append(problems, fmt.Errorf("unexpected arguments %q (a miner's own arguments need -api)", fs.Args()))
	}
	if cfg.hashrateHs < 0 {
		problems = append(problems, fmt.Errorf("-hashrate must be >= 0, got %g", cfg.hashrateHs))
	}
	if cfg.gpus < 1 {
		problems = append(problems, fmt.Errorf("-gpus must be >= 1, got %d", cfg.gpus))
	}
	if cfg.difficulty <= 0 {
		problems = append(problems, fmt.Errorf("-difficulty must be > 0, got %g", cfg.difficulty))
	}
	if cfg.rejectEvery < 0 {
		problems = append(problems, fmt.Errorf("-reject-every must be >= 0, got %d", cfg.rejectEvery))
	}
	if cfg.window <= 0 {
		problems = append(problems, fmt.Errorf("-avg-window must be > 0, got %s", cfg.window))
	}
	if *logEvery < 0 {
		problems = append(problems, fmt.Errorf("-log-interval must be >= 0, got %s", *logEvery))
	}
	if len(problems) > 0 {
		fmt.Fprintln(stderr, "fakeminer:", errors.Join(problems...))
		return 2
	}

	m := newMiner(cfg, time.Now)
	ctx, stopTCP := context.WithCancel(ctx)
	defer stopTCP()
	m.ctx = ctx
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "fakeminer:", err)
		return 1
	}
	srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "fakeminer: %s %s listening on %s\n", cfg.name, cfg.algo, ln.Addr())

	serveErr := make(chan error, 1)
	// One listener for HTTP and, for the miners that have one, the TCP API.
	go func() { serveErr <- srv.Serve(newSplitListener(ln, m)) }()

	var tick <-chan time.Time
	if *logEvery > 0 {
		t := time.NewTicker(*logEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			fmt.Fprintln(stdout, m.logLine(m.snapshot()))
		case err := <-serveErr:
			fmt.Fprintln(stderr, "fakeminer:", err)
			return 1
		case <-ctx.Done():
			shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := srv.Shutdown(shutCtx)
			cancel()
			<-serveErr // Serve returns ErrServerClosed once Shutdown starts.
			if err != nil {
				fmt.Fprintln(stderr, "fakeminer: shutdown:", err)
				return 1
			}
			fmt.Fprintln(stdout, "fakeminer: stopped")
			return 0
		}
	}
}
