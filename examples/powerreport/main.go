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
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "powerreport:", err)
		os.Exit(1)
	}
}

// day is the Monday the report covers, in UTC.
var day = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// tariff is a time-of-use tariff: cheap nights, a dear evening peak.
func tariff() (*accounting.TimeOfUse, error) {
	return accounting.NewTimeOfUse(time.UTC, []accounting.Band{
		{Name: "night", Days: accounting.Weekdays, Start: 0, End: 7 * time.Hour, PerKWh: 0.11},
		{Name: "day", Days: accounting.Weekdays, Start: 7 * time.Hour, End: 17 * time.Hour, PerKWh: 0.24},
		{Name: "peak", Days: accounting.Weekdays, Start: 17 * time.Hour, End: 21 * time.Hour, PerKWh: 0.38},
		{Name: "evening", Days: accounting.Weekdays, Start: 21 * time.Hour, End: 24 * time.Hour, PerKWh: 0.24},
		{Name: "weekend", Days: accounting.Weekend, Start: 0, End: 24 * time.Hour, PerKWh: 0.15},
	})
}

// miningPerGPUHour is what an A40 earns mining, after pool fees, in the
// operator's currency: a stand-in for the mining package's coin
// economics.
const miningPerGPUHour = 0.085

func run(ctx context.Context, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("powerreport", flag.ContinueOnError)
	fs.SetOutput(out)
	csvPath := fs.String("csv", "", "write the ledger's records of the day as CSV to this file (- for standard output)")
	jsonPath := fs.String("json", "", "write them as JSON to this file (- for standard output)")
	svgPath := fs.String("svg", "", "draw the day (power by kind, the tariff, margin per GPU-hour) as SVG into this file")
	ledgerPath := fs.String("ledger", "", "the bbolt ledger file (default: a new one in a temporary folder)")
	pue := fs.Float64("pue", 1.25, "the site's power usage effectiveness")
	wall := fs.Float64("wall", 1.12, "wall-meter factor: power at the wall over what the GPUs report")
	verbose := fs.Bool("v", false, "log what the SDK does")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level := slog.LevelWarn + 4 // the process runtime warns that it isolates nothing, by design here
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	tmp, err := os.MkdirTemp("", "gpufarm-powerreport-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if *ledgerPath == "" {
		*ledgerPath = filepath.Join(tmp, "ledger.db")
	}

	// The node: a simulated rig of 8 A40s on a clock the story drives, a
	// workload manager over it, and the accounting.
	clk := sim.NewClock(day)
	p, err := sim.PresetByName(sim.PresetA40)
	if err != nil {
		return err
	}
	rig, err := sim.New(p, sim.WithClock(clk), sim.WithLogger(log))
	if err != nil {
		return err
	}
	gpus, err := gpu.New(ctx, rig, gpu.WithClock(clk), gpu.WithLogger(log))
	if err != nil {
		return err
	}
	defer gpus.Close()
	// It runs only "sleep", so root may run it.
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(filepath.Join(tmp, "logs")), process.WithLogger(log), process.WithClock(clk))
	if err != nil {
		return err
	}
	defer rt.Close()
	wm, err := workload.New(gpus, rt, workload.WithClock(clk), workload.WithLogger(log), workload.WithLoad(rig.SetGPULoad),
		workload.WithFiller(miners()), workload.WithTick(20*time.Millisecond), workload.WithPowerSettle(0),
		workload.WithHygieneTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer wm.Close()
	ledger, err := bolt.Open(*ledgerPath, bolt.WithLogger(log))
	if err != nil {
		return err
	}
	defer ledger.Close()
	tou, err := tariff()
	if err != nil {
		return err
	}
	mining := accounting.MiningRevenueFunc(func(_ context.Context, _, _ string, from, to time.Time) (float64, error) {
		return miningPerGPUHour * to.Sub(from).Hours(), nil
	})
	meter, err := accounting.New(ctx, gpus, wm, ledger, accounting.WithTariff(tou), accounting.WithMiningRevenue(mining),
		accounting.WithPUE(*pue), accounting.WithWallFactor(*wall), accounting.WithClock(clk), accounting.WithLogger(log))
	if err != nil {
		return err
	}

	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- wm.Run(runCtx) }()
	s := &story{out: out, clk: clk, wm: wm, meter: meter}
	storyErr := s.play(ctx)
	stopRun()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) && storyErr == nil {
		storyErr = err
	}
	for _, w := range wm.List(workload.Filter{}) {
		if !w.State.Final() {
			_, _ = rt.Stop(context.WithoutCancel(ctx), w.Container)
		}
	}
	if storyErr != nil {
		return storyErr
	}
	if err := meter.Close(); err != nil {
		return err
	}

	q := accounting.Query{From: day, To: day.Add(24 * time.Hour)}
	if err := report(ctx, out, ledger, q, meter); err != nil {
		return err
	}
	for _, o := range []struct {
		path  string
		write func(io.Writer) error
	}{
		{*csvPath, func(w io.Writer) error { return accounting.WriteCSV(w, ledger.Query(ctx, q)) }},
		{*jsonPath, func(w io.Writer) error { return accounting.WriteJSON(w, ledger.Query(ctx, q)) }},
		{*svgPath, func(w io.Writer) error { return drawDay(ctx, w, ledger, q, tou) }},
	} {
		if o.path != "" {
			if err := writeTo(o.path, out, o.write); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeTo(path string, stdout io.Writer, fn func(io.Writer) error) error {
	if path == "-" {
		return fn(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// miners fills every idle GPU with a miner; on this demo node a miner is a
// sleeping process, the simulator supplies the power.
func miners() workload.Filler {
	return workload.FillerFunc(func(_ context.Context, d gpu.Device) (workload.Spec, bool) {
		return workload.Spec{Tenant: "mining", Image: "gpufarm.example/miner:latest", Command: []string{"sleep", "infinity"},
			Network: isolation.NetworkHost, StopGrace: time.Second}, true
	})
}

// report prints the day per tenant, per kind and per GPU-hour.
func report(ctx context.Context, out io.Writer, l accounting.Ledger, q accounting.Query, m *accounting.Meter) error {
	var metered int64
	for _, g := range m.Stats().GPUs {
		metered += g.MeteredMJ
	}
	var booked int64
	for r, err := range l.Query(ctx, q) {
		if err != nil {
			return err
		}
		booked += r.EnergyMJ
	}
	fmt.Fprintf(out, "\nenergy booked in the ledger %d mJ, metered %d mJ: ", booked, metered)
	if booked != metered {
		return fmt.Errorf("the ledger books %d mJ but %d mJ were metered", booked, metered)
	}
	fmt.Fprintln(out, "every millijoule accounted for")
	for _, t := range []struct {
		title string
		by    accounting.GroupBy
	}{{"per tenant", accounting.ByTenant}, {"per kind", accounting.ByKind}} {
		rows, err := accounting.Summarize(l.Query(ctx, q), t.by)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\n%s, %s\n", t.title, day.Format("Monday 2 January 2006"))
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tGPU-hours\tkWh\tcost\trevenue\tmargin\tmargin/GPU-h\t")
		var total accounting.Row
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t\n", r.Key, r.GPUHours, r.KWh(), r.Cost.Float(), r.Revenue.Float(), r.Margin().Float(), r.MarginPerGPUHour())
			total.GPUHours += r.GPUHours
			total.FacilityEnergyMJ += r.FacilityEnergyMJ
			total.Cost += r.Cost
			total.Revenue += r.Revenue
		}
		fmt.Fprintf(tw, "total\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t\n", total.GPUHours, total.KWh(), total.Cost.Float(), total.Revenue.Float(), total.Margin().Float(), total.MarginPerGPUHour())
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	rows, err := accounting.Summarize(l.Query(ctx, q), accounting.ByKind)
	if err != nil {
		return err
	}
	var mine, rent accounting.Row
	for _, r := range rows {
		switch workload.Kind(r.Key) {
		case workload.KindMining:
			mine = r
		case workload.KindTraining, workload.KindInference, workload.KindBatch:
			rent.GPUHours += r.GPUHours
			rent.Cost += r.Cost
			rent.Revenue += r.Revenue
		}
	}
	fmt.Fprintf(out, "\nmargin per GPU-hour: renting %.3f, mining %.3f (renting earns %.1fx)\n",
		rent.MarginPerGPUHour(), mine.MarginPerGPUHour(), rent.MarginPerGPUHour()/mine.MarginPerGPUHour())
	return nil
}
