package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// launchPlan is what a launcher's flags say: how many nodes and processes,
// which node this is and where the rendezvous is.
type launchPlan struct {
	name                string
	nnodes, nproc, rank int
	addr                string
	port                int
	// cudaVisible is what the launcher sets CUDA_VISIBLE_DEVICES to for
	// its workers; empty when it passes the container's on.
	cudaVisible string
	// extra is added to the script's arguments (DeepSpeed's --local_rank).
	extra []string
}

// launchers parse the flags of the launcher named by the first argument and
// return the plan and the script with its arguments.
var launchers = map[string]func(args []string) (launchPlan, []string, error){
	"torchrun":   torchrun,
	"accelerate": accelerate,
	"deepspeed":  deepspeed,
}

// flags is a flag set that takes each name with '-' and with '_', as the
// launchers' argparse does.
type flags struct{ *flag.FlagSet }

func newFlags(name string) flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return flags{fs}
}

func (f flags) int(p *int, name string, def int) {
	f.IntVar(p, name, def, "")
	if alt := strings.ReplaceAll(name, "-", "_"); alt != name {
		f.IntVar(p, alt, def, "")
	}
}

func (f flags) str(p *string, name, def string) {
	f.StringVar(p, name, def, "")
	if alt := strings.ReplaceAll(name, "-", "_"); alt != name {
		f.StringVar(p, alt, def, "")
	}
}

func (f flags) bool(name string) *bool {
	b := f.Bool(name, false, "")
	if alt := strings.ReplaceAll(name, "-", "_"); alt != name {
		f.BoolVar(b, alt, false, "")
	}
	return b
}

// parse reads the launcher's flags and returns the script and its args.
func (f flags) parse(args []string) ([]string, error) {
	if err := f.Parse(args); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if f.NArg() == 0 {
		return nil, fmt.Errorf("%s: no training script given", f.Name())
	}
	return f.Args(), nil
}

func torchrun(args []string) (launchPlan, []string, error) {
	p := launchPlan{name: "torchrun"}
	f := newFlags("torchrun")
	var nnodes, rdzvBackend, rdzvEndpoint, rdzvID, monitor string
	f.str(&nnodes, "nnodes", "1")
	f.int(&p.nproc, "nproc-per-node", 1)
	f.int(&p.rank, "node-rank", 0)
	f.str(&p.addr, "master-addr", "127.0.0.1")
	f.int(&p.port, "master-port", 29500)
	var restarts int
	f.int(&restarts, "max-restarts", 0)
	f.str(&rdzvBackend, "rdzv-backend", "static")
	f.str(&rdzvEndpoint, "rdzv-endpoint", "")
	f.str(&rdzvID, "rdzv-id", "none")
	f.str(&monitor, "monitor-interval", "0.1")
	f.bool("standalone")
	script, err := f.parse(args)
	if err != nil {
		return p, nil, err
	}
	lo, _, _ := strings.Cut(nnodes, ":") // MIN:MAX
	if p.nnodes, err = strconv.Atoi(lo); err != nil {
		return p, nil, fmt.Errorf("torchrun: --nnodes %q is not a number", nnodes)
	}
	return p, script, nil
}

func accelerate(args []string) (launchPlan, []string, error) {
	p := launchPlan{name: "accelerate"}
	if len(args) < 1 || args[0] != "launch" {
		return p, nil, errors.New(`accelerate: want "accelerate launch ..."`)
	}
	f := newFlags("accelerate launch")
	var total, restarts, threads int
	var precision, rdzv, dsConfig, monitor string
	f.int(&total, "num_processes", 1)
	f.int(&p.nnodes, "num_machines", 1)
	f.int(&p.rank, "machine_rank", 0)
	f.str(&p.addr, "main_process_ip", "127.0.0.1")
	f.int(&p.port, "main_process_port", 29500)
	f.int(&restarts, "max_restarts", 0)
	f.int(&threads, "num_cpu_threads_per_process", 1)
	f.str(&precision, "mixed_precision", "no")
	f.str(&rdzv, "rdzv_backend", "static")
	f.str(&dsConfig, "deepspeed_config_file", "")
	f.str(&monitor, "monitor_interval", "0.1")
	f.bool("multi_gpu")
	f.bool("same_network")
	f.bool("use_deepspeed")
	script, err := f.parse(args[1:])
	if err != nil {
		return p, nil, err
	}
	if p.nnodes < 1 || total%p.nnodes != 0 {
		return p, nil, fmt.Errorf("accelerate: --num_processes %d is not a multiple of --num_machines %d", total, p.nnodes)
	}
	p.nproc = total / p.nnodes
	return p, script, nil
}

func deepspeed(args []string) (launchPlan, []string, error) {
	p := launchPlan{name: "deepspeed"}
	f := newFlags("deepspeed")
	var include, hostfile string
	f.int(&p.nnodes, "num_nodes", 1)
	f.int(&p.nproc, "num_gpus", -1)
	f.int(&p.rank, "node_rank", 0)
	f.str(&p.addr, "master_addr", "127.0.0.1")
	f.int(&p.port, "master_port", 29500)
	f.str(&include, "include", "")
	f.str(&hostfile, "hostfile", "")
	noSSH := f.bool("no_ssh")
	script, err := f.parse(args)
	if err != nil {
		return p, nil, err
	}
	if p.nnodes > 1 && !*noSSH {
		return p, nil, errors.New("deepspeed: several nodes without --no_ssh need a hostfile and ssh, which a container has not")
	}
	ids := make([]string, max(p.nproc, 0))
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	// DeepSpeed numbers the GPUs of its own node and sets the list itself.
	p.cudaVisible = strings.Join(ids, ",")
	p.extra = []string{"--local_rank=0"}
	return p, script, nil
}

// launch emulates a distributed launcher inside the container: it parses
// the launcher's flags, checks them against the GPUs the container sees
// (gpus device nodes; 0 when it cannot tell), prints the environment each
// worker would get, and returns the arguments of the training script
// (after its path) that this process then runs as rank 0.
func launch(args []string, out *lineWriter, getenv func(string) string, gpus int) ([]string, error) {
	p, script, err := launchers[args[0]](args[1:])
	if err != nil {
		return nil, err
	}
	var probs []string
	if p.nproc < 1 {
		probs = append(probs, fmt.Sprintf("%d processes per node: want at least 1", p.nproc))
	}
	if p.nnodes < 1 || p.rank < 0 || p.rank >= p.nnodes {
		probs = append(probs, fmt.Sprintf("node rank %d of %d nodes", p.rank, p.nnodes))
	}
	if gpus > 0 && p.nproc > gpus {
		probs = append(probs, fmt.Sprintf("%d processes per node but the container sees %d GPUs", p.nproc, gpus))
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("%s: %s", p.name, strings.Join(probs, "; "))
	}
	visible := p.cudaVisible
	if visible == "" {
		visible = getenv("CUDA_VISIBLE_DEVICES")
	}
	out.printf("[%s] %d nodes x %d processes, node %d, rendezvous %s:%d, container GPUs %d, script %s",
		p.name, p.nnodes, p.nproc, p.rank, p.addr, p.port, gpus, script[0])
	for local := range p.nproc {
		out.printf("[%s] worker local_rank=%d rank=%d world_size=%d local_world_size=%d group_rank=%d master_addr=%s master_port=%d cuda_visible_devices=%s",
			p.name, local, p.rank*p.nproc+local, p.nnodes*p.nproc, p.nproc, p.rank, p.addr, p.port, visible)
	}
	for _, k := range []string{"NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "CUDA_DEVICE_ORDER"} {
		if v := getenv(k); v != "" {
			out.printf("[%s] %s=%s", p.name, k, v)
		}
	}
	return append(script[1:], p.extra...), nil
}

// visibleGPUs counts the GPU device nodes (/dev/nvidiaN) under dev.
func visibleGPUs(dev string) int {
	m, _ := filepath.Glob(filepath.Join(dev, "nvidia[0-9]*"))
	return len(m)
}
