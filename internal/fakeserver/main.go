package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, visibleGPUs("/dev")))
}

// server is what the arguments say.
type server struct {
	flavor   string // "vllm" or "tgi"
	model    string
	host     string
	port     int
	parallel int
	maxLen   int
	maxInput int
	memory   float64
	delay    time.Duration
}

// parse reads vLLM's or TGI's arguments.
func parse(args []string) (server, error) {
	s := server{flavor: "vllm", host: "0.0.0.0", port: 8000, parallel: 1, memory: 0.9}
	if len(args) > 0 && args[0] == "serve" { // "vllm serve MODEL" with the program in the image
		args = args[1:]
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		s.model, args = args[0], args[1:]
	}
	var errs []error
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			errs = append(errs, fmt.Errorf("unexpected argument %q", a))
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		name = strings.ReplaceAll(name, "_", "-")
		if !hasVal {
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
				val, i = args[i+1], i+1
			} else {
				val = "true" // a switch
			}
		}
		num := func(p *int) {
			n, err := strconv.Atoi(val)
			if err != nil {
				errs = append(errs, fmt.Errorf("--%s %q is not a number", name, val))
			}
			*p = n
		}
		switch name {
		case "model-id":
			s.flavor, s.model = "tgi", val
		case "model":
			s.model = val
		case "host", "hostname":
			s.host = val
		case "port":
			num(&s.port)
		case "tensor-parallel-size", "num-shard":
			num(&s.parallel)
		case "max-model-len", "max-total-tokens":
			num(&s.maxLen)
		case "max-input-tokens", "max-input-length":
			num(&s.maxInput)
		case "gpu-memory-utilization", "cuda-memory-fraction":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("--%s %q is not a number", name, val))
			}
			s.memory = f
		case "fake-load-delay":
			d, err := time.ParseDuration(val)
			if err != nil {
				errs = append(errs, fmt.Errorf("--fake-load-delay %q: %v", val, err))
			}
			s.delay = d
		}
	}
	if s.model == "" {
		errs = append(errs, errors.New("no model: give it first (vLLM) or with --model-id (TGI)"))
	}
	return s, errors.Join(errs...)
}

// check does what the real servers check before they load anything.
func (s server) check(gpus int) error {
	var errs []error
	if s.parallel < 1 {
		errs = append(errs, fmt.Errorf("parallel size %d: want at least 1", s.parallel))
	}
	if gpus > 0 && s.parallel > gpus {
		errs = append(errs, fmt.Errorf("parallel size %d but the container sees %d GPUs", s.parallel, gpus))
	}
	if s.flavor == "tgi" && s.maxLen > 0 && s.maxInput >= s.maxLen {
		errs = append(errs, fmt.Errorf("`max_input_tokens` must be < `max_total_tokens`: %d >= %d", s.maxInput, s.maxLen))
	}
	if !(s.memory > 0 && s.memory <= 1) {
		errs = append(errs, fmt.Errorf("memory share %v: want 0 < share <= 1", s.memory))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, gpus int) int {
	s, err := parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "fakeserver:", err)
		return 2
	}
	if err := s.check(gpus); err != nil {
		fmt.Fprintln(stderr, "fakeserver:", err)
		return 1
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.host, strconv.Itoa(s.port)))
	if err != nil {
		fmt.Fprintln(stderr, "fakeserver:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: listening on %s, model %s, parallel %d, max length %d, %d GPUs visible\n", s.flavor, ln.Addr(), s.model, s.parallel, s.maxLen, gpus)
	var loaded atomic.Bool
	srv := &http.Server{Handler: s.handler(&loaded), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }() // ends with Shutdown below
	load := time.NewTimer(s.delay)
	defer load.Stop()
	for {
		select {
		case <-load.C:
			loaded.Store(true)
			fmt.Fprintf(stdout, "model loaded: %s\n", s.model)
		case err := <-done:
			fmt.Fprintln(stderr, "fakeserver:", err)
			return 1
		case <-ctx.Done():
			fmt.Fprintln(stdout, "shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-done
			return 0
		}
	}
}

func (s server) handler(loaded *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if !loaded.Load() {
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	describe := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		describe(w, map[string]any{"object": "list", "data": []any{map[string]any{"id": s.model, "object": "model", "max_model_len": s.maxLen}}})
	})
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		describe(w, map[string]any{"model_id": s.model, "num_shard": s.parallel, "max_total_tokens": s.maxLen, "max_input_tokens": s.maxInput})
	})
	return mux
}

// visibleGPUs counts the GPU device nodes (/dev/nvidiaN) under dev.
func visibleGPUs(dev string) int {
	m, _ := filepath.Glob(filepath.Join(dev, "nvidia[0-9]*"))
	return len(m)
}
