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
	"strings"
	"text/tabwriter"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/nvml"
	"github.com/gpufarm/gpufarm/gpu/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

// run is the command without the process around it: flags in args, the
// report on w. -h prints the usage on w and succeeds.
func run(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: inventory [-backend sim|nvml] [-preset name|all] [-notes=false]")
		fmt.Fprintln(fs.Output(), "Prints the GPUs of a node and what each is good for in AI.")
		fs.PrintDefaults()
	}
	backend := fs.String("backend", "sim", "where the GPUs come from: sim or nvml")
	preset := fs.String("preset", "rtx3080-riser", "simulated fleet, or all: "+presetNames())
	notes := fs.Bool("notes", true, "explain each verdict")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // asked for the usage, which Parse printed
		}
		return err
	}
	presets, err := choose(*backend, *preset)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if *backend == "nvml" {
		b, err := nvml.New(ctx, nvml.WithLogger(log))
		if err != nil {
			return fmt.Errorf("open NVML: %w", err)
		}
		return report(ctx, w, "this host (NVML, driver "+b.DriverVersion()+")", b, *notes, log)
	}
	for i, p := range presets {
		if i > 0 {
			fmt.Fprintln(w)
		}
		rig, err := sim.New(p, sim.WithLogger(log))
		if err != nil {
			return err
		}
		if err := report(ctx, w, "simulated "+p.Name+": "+p.Description, rig, *notes, log); err != nil {
			return err
		}
	}
	return nil
}

// choose checks -backend and -preset together, reporting every bad flag in
// one error, and returns the simulated fleets to report (none for nvml,
// which reads the host's GPUs and ignores -preset).
func choose(backend, preset string) ([]sim.Preset, error) {
	var errs []error
	if backend != "sim" && backend != "nvml" {
		errs = append(errs, fmt.Errorf("%w: unknown -backend %q: use sim or nvml", gpu.ErrInvalid, backend))
	}
	var presets []sim.Preset
	switch {
	case backend == "nvml":
	case preset == "all":
		presets = sim.Presets()
	default:
		p, err := sim.PresetByName(preset)
		if err != nil {
			errs = append(errs, fmt.Errorf("-preset: %w", err))
		}
		presets = []sim.Preset{p}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return presets, nil
}

func presetNames() string {
	var names []string
	for _, p := range sim.Presets() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

func report(ctx context.Context, w io.Writer, title string, b gpu.Backend, notes bool, log *slog.Logger) error {
	m, err := gpu.New(ctx, b, gpu.WithLogger(log)) // closes b if it fails
	if err != nil {
		return err
	}
	defer m.Close()
	devs := m.Devices()
	rs, host := m.HostReadiness()
	samples, err := m.SampleAll(ctx, nil)
	if err != nil && !errors.Is(err, gpu.ErrDeviceLost) {
		return err
	}

	fmt.Fprintf(w, "== %s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GPU\tNAME\tCLASS\tCC\tMEMORY (reserved)\tLINK\tLIMITED BY\tHOST GB/s\tPOWER W (limit, range)\tPERSIST\tECC\tUSE\tINFER fp16/int4\tQLoRA\tFULL FT\tFLAGS")
	for i, d := range devs {
		r := rs[i]
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\n",
			d.Index, strings.TrimPrefix(d.Name, "NVIDIA "), d.Class, d.ComputeCapability,
			memory(d), r.Link, limitedBy(r), r.HostLinkGBps, power(samples[i], d), d.Persistence, d.ECC, r.Use,
			params(r.Fit.InferenceFP16Params), params(r.Fit.InferenceINT4Params), params(r.Fit.QLoRAParams), params(r.Fit.FullFineTuneParams),
			flags(r.Flags))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if notes {
		// Identical cards get identical verdicts: explain each kind once.
		seen := map[string]bool{}
		for i, r := range rs {
			key := devs[i].Name + "|" + strings.Join(r.Notes, "|")
			if seen[key] {
				continue
			}
			seen[key] = true
			fmt.Fprintf(w, "  %s (GPU %d):\n", strings.TrimPrefix(devs[i].Name, "NVIDIA "), i)
			for _, n := range r.Notes {
				fmt.Fprintf(w, "    - %s\n", n)
			}
		}
	}
	fmt.Fprintf(w, "node: %d GPUs, %s; training %d, inference %d, mining %d, unusable %d\n",
		host.Devices, gib(host.MemoryBytes), host.ByUse[gpu.UseTraining], host.ByUse[gpu.UseInference],
		host.ByUse[gpu.UseMining], host.ByUse[gpu.UseNone])
	for _, n := range host.Notes {
		fmt.Fprintf(w, "  - %s\n", n)
	}
	return nil
}

func gib(b uint64) string { return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30)) }

// memory prints the size and, where the driver tells it, what it keeps
// for itself.
func memory(d gpu.Device) string {
	if !d.ReservedMemoryBytes.Valid {
		return gib(d.MemoryBytes)
	}
	return fmt.Sprintf("%s (%d MiB)", gib(d.MemoryBytes), d.ReservedMemoryBytes.Value>>20)
}

// limitedBy names what holds the link's generation and width down:
// "slot", "gen:slot width:riser", or "-".
func limitedBy(r gpu.Readiness) string {
	switch {
	case r.GenLimit == r.WidthLimit && r.GenLimit != gpu.LinkLimitNone:
		return string(r.GenLimit)
	case r.GenLimit != gpu.LinkLimitNone && r.WidthLimit != gpu.LinkLimitNone:
		return "gen:" + string(r.GenLimit) + " width:" + string(r.WidthLimit)
	case r.GenLimit != gpu.LinkLimitNone:
		return "gen:" + string(r.GenLimit)
	case r.WidthLimit != gpu.LinkLimitNone:
		return "width:" + string(r.WidthLimit)
	default:
		return "-"
	}
}

func params(p float64) string {
	if p >= 1e9 {
		return fmt.Sprintf("%.1fB", p/1e9)
	}
	return fmt.Sprintf("%.0fM", p/1e6)
}

func power(s gpu.Sample, d gpu.Device) string {
	now := "n/a"
	if s.PowerW.Valid {
		now = fmt.Sprintf("%.0f", s.PowerW.Value)
	}
	if !d.PowerLimit.Valid {
		return now
	}
	l := d.PowerLimit.Value
	return fmt.Sprintf("%s (%.0f, %.0f-%.0f)", now, l.CurrentW, l.MinW, l.MaxW)
}

func flags(fs []gpu.Flag) string {
	if len(fs) == 0 {
		return "-"
	}
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ",")
}
