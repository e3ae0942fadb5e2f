package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// report prints the setting, the switching strategy's decisions and the
// day under each strategy.
func report(ctx context.Context, out io.Writer, cfg config, o *outcome, verbose bool) error {
	dc := cfg.dc
	first, last := cfg.day[0].At, cfg.day[len(cfg.day)-1].At.Add(stepLen)
	m, _ := modelOf(cfg.preset.Cards[0].Name)
	fmt.Fprintf(out, "profit switching on a simulated rig: %s (%s)\n", cfg.preset.Description, cfg.preset.Name)
	fmt.Fprintf(out, "  %s, %s-%s UTC in %d-minute steps, seed %d\n", first.Format("Monday 2 January 2006"),
		first.Format("15:04"), clock(last), int(stepLen.Minutes()), dc.seed)
	var tags []string
	for _, c := range cfg.day[0].Coins {
		tags = append(tags, c.Tag)
	}
	fmt.Fprintf(out, "  coins from WhatToMine (%s), prices and difficulty moving; BTC at %.0f USD\n", strings.Join(tags, ", "), dc.btcUSD)
	fmt.Fprintf(out, "  a GPU mines %s at %.2f MH/s and %.0f W, draws %.0f W rented and %.0f W idle\n",
		m.bench.Algorithm, m.bench.Rate/1e6, m.bench.PowerW, m.rentW, m.idleW)
	var bands []string
	for _, b := range tariffBands() {
		if b.Days&accounting.Wednesday != 0 {
			bands = append(bands, fmt.Sprintf("%s %.2f (%s-%s)", b.Name, b.PerKWh, clockOf(b.Start), clockOf(b.End)))
		}
	}
	fmt.Fprintf(out, "  power in USD/kWh: %s\n", strings.Join(bands, ", "))
	var asks []string
	for _, d := range demand {
		asks = append(asks, fmt.Sprintf("%d GPUs %s-%s at about %.3f", min(d.gpus, dc.gpus), clockOf(d.from), clockOf(d.to), dc.basePrice*d.factor))
	}
	fmt.Fprintf(out, "  %s rents, USD per GPU-hour: %s\n", dc.tenant, strings.Join(asks, ", "))
	fmt.Fprintf(out, "  the SDK's Switcher moves a GPU when another choice nets %g %% more for %d steps in a row\n", cfg.gainPct, cfg.ticks)

	if verbose {
		fmt.Fprintf(out, "\nGPU 0 at every step: net USD an hour of each choice [the switcher's word]\n")
		for _, t := range o.switching.trace {
			fmt.Fprintln(out, "  "+t)
		}
	}

	fmt.Fprintf(out, "\ndecisions of %s; made: the margin (revenue less power, USD) of those GPUs until their next decision;\n", o.switching.name)
	fmt.Fprintf(out, "vs staying put: made less what %s made on the same GPUs then\n", o.stay.name)
	var sum accounting.Amount
	for _, g := range groupDecisions(o.switching.decisions) {
		d := g.first
		what := d.From.String() + " -> " + d.To.String()
		if d.First {
			what = "start: " + d.To.String()
		}
		fmt.Fprintf(out, "%s  GPU %-5s %s\n", clock(d.At), gpuList(g.gpus), what)
		fmt.Fprintf(out, "       why: %s\n", d.Why)
		fmt.Fprintf(out, "       made %s until %s, %s vs staying put\n", money(g.made), clock(d.End), signed(g.gain))
		sum += g.gain
	}

	sums := make([]summary, 0, 3)
	for _, r := range []*dayResult{o.switching, o.stay, o.rent} {
		s, err := summarize(ctx, r)
		if err != nil {
			return err
		}
		sums = append(sums, s)
	}
	fmt.Fprintf(out, "\nthe day, %d GPUs for %g hours (USD)\n", len(o.switching.devices), last.Sub(first).Hours())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\trevenue\tpower cost\tmargin\tGPU-h mining\trented\tidle\tchanges\t")
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%d\t\n", s.name, money(s.revenue), money(s.cost), money(s.revenue-s.cost),
			s.miningH, s.rentedH, s.idleH, s.changes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	diff := func(i int) accounting.Amount {
		return sums[0].revenue - sums[0].cost - (sums[i].revenue - sums[i].cost)
	}
	fmt.Fprintf(out, "\nswitching made %s USD against %s; the decisions' gains above add up to %s\n", signed(diff(1)), sums[1].name, signed(sum))
	fmt.Fprintf(out, "switching made %s USD against %s\n", signed(diff(2)), sums[2].name)
	if sum != diff(1) {
		return fmt.Errorf("the decisions' gains add up to %s but the day's margins differ by %s: a stretch of some GPU's day is booked twice or not at all", sum, diff(1))
	}
	return nil
}

// group is the decisions of several GPUs that did the same at the same
// time for the same reason until the same time.
type group struct {
	first      decision
	gpus       []int
	made, gain accounting.Amount
}

func groupDecisions(ds []decision) []group {
	var out []group
	index := map[string]int{}
	for _, d := range ds {
		k := fmt.Sprint(d.At.UnixNano(), d.From, d.To, d.Why, d.End.UnixNano())
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, group{first: d})
		}
		out[i].gpus = append(out[i].gpus, d.GPU)
		out[i].made += d.Made
		out[i].gain += d.Gain
	}
	slices.SortStableFunc(out, func(a, b group) int {
		if c := a.first.At.Compare(b.first.At); c != 0 {
			return c
		}
		return a.gpus[0] - b.gpus[0]
	})
	return out
}

// summary is one strategy's day, from its ledger.
type summary struct {
	name                    string
	revenue, cost           accounting.Amount
	miningH, rentedH, idleH float64
	changes                 int
}

func summarize(ctx context.Context, r *dayResult) (summary, error) {
	rows, err := accounting.Summarize(r.ledger.Query(ctx, accounting.Query{}), accounting.ByKind)
	if err != nil {
		return summary{}, err
	}
	s := summary{name: r.name}
	for _, row := range rows {
		s.revenue += row.Revenue
		s.cost += row.Cost
		switch workload.Kind(row.Key) {
		case workload.KindMining:
			s.miningH += row.GPUHours
		case accounting.KindIdle:
			s.idleH += row.GPUHours
		default:
			s.rentedH += row.GPUHours
		}
	}
	for _, d := range r.decisions {
		if !d.First {
			s.changes++
		}
	}
	return s, nil
}

// writeSteps writes one CSV row per step to the file at path: the market,
// the tariff, the offer, what each choice nets on GPU 0, and what every
// GPU runs.
func writeSteps(path string, cfg config, r *dayResult) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	cw := csv.NewWriter(f)
	m, _ := modelOf(r.devices[0].Name)
	head := []string{"time", "usd_per_kwh", "btc_usd"}
	for _, c := range cfg.day[0].Coins {
		t := strings.ToLower(c.Tag)
		head = append(head, t+"_price_btc", t+"_difficulty", t+"_net_usd_per_gpu_hour")
	}
	head = append(head, "offer_gpus", "offer_usd_per_gpu_hour", "rent_net_usd_per_gpu_hour", "idle_net_usd_per_gpu_hour")
	for _, d := range r.devices {
		head = append(head, "gpu"+strconv.Itoa(d.Index))
	}
	if err := cw.Write(head); err != nil {
		return err
	}
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', 8, 64) }
	for i, st := range cfg.day {
		opts := m.options(st, true)
		row := []string{st.At.Format(time.RFC3339), num(st.PerKWh), num(st.BTCUSD)}
		for _, c := range st.Coins {
			o, _ := find(opts, choice{act: actMine, coin: c.Tag})
			row = append(row, num(c.PriceBTC), num(c.Difficulty), num(o.est.ProfitPerHour))
		}
		rent, _ := find(opts, choice{act: actRent, tenant: st.Offer.Tenant})
		idle, _ := find(opts, choice{act: actIdle})
		row = append(row, strconv.Itoa(st.Offer.GPUs), num(st.Offer.PerGPUHour), num(rent.est.ProfitPerHour), num(idle.est.ProfitPerHour))
		for _, c := range r.choices[i] {
			row = append(row, c.String())
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// gpuList prints GPU indices as ranges: 0-3,6.
func gpuList(gs []int) string {
	var parts []string
	for i := 0; i < len(gs); {
		j := i
		for j+1 < len(gs) && gs[j+1] == gs[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", gs[i], gs[j]))
		} else {
			parts = append(parts, strconv.Itoa(gs[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// clock prints a time of day; the end of the day is 24:00.
func clock(t time.Time) string {
	return clockOf(t.Sub(dayStart))
}

func clockOf(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60)
}

func money(a accounting.Amount) string { return fmt.Sprintf("%.4f", a.Float()) }

func signed(a accounting.Amount) string { return fmt.Sprintf("%+.4f", a.Float()) }
