package accounting_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// A meter on a simulated A40 rig: GPU 0 mines, then a rented training job
// takes it over; the other GPUs idle. On a node the Timeline is the
// *workload.Manager and the meter runs with Run.
func Example() {
	ctx := context.Background()
	clk := sim.NewClock(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC))
	p, _ := sim.PresetByName(sim.PresetA40)
	rig, _ := sim.New(p, sim.WithClock(clk))
	gpus, _ := gpu.New(ctx, rig, gpu.WithClock(clk))
	defer gpus.Close()
	gpu0 := gpus.Devices()[0].UUID
	start := clk.Now()
	handover := start.Add(90 * time.Second)
	timeline := accounting.TimelineFunc(func(uuid string, from, to time.Time) ([]workload.Allocation, error) {
		if uuid != gpu0 {
			return nil, nil
		}
		return []workload.Allocation{
			{GPU: uuid, Workload: "miner-0", Attempt: 1, Tenant: "mining", Kind: workload.KindMining, From: start, To: handover},
			{GPU: uuid, Workload: "finetune", Attempt: 1, Tenant: "acme", Kind: workload.KindTraining, PricePerGPUHour: 1.2, From: handover},
		}, nil
	})
	ledger := accounting.NewMemoryLedger()
	meter, err := accounting.New(ctx, gpus, timeline, ledger, accounting.WithTariff(accounting.Flat(0.25)),
		accounting.WithMiningRevenue(accounting.MiningRevenueFunc(func(_ context.Context, _, _ string, from, to time.Time) (float64, error) {
			return 0.09 * to.Sub(from).Hours(), nil
		})))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = rig.SetLoad(0, sim.Load{Util: 0.98})
	for s := 0; s <= 180; s++ { // three minutes at 1 Hz
		at := start.Add(time.Duration(s) * time.Second)
		clk.Set(at)
		if at.Equal(handover) {
			_ = rig.SetLoad(0, sim.Load{Util: 0.9})
		}
		if err := meter.Poll(ctx); err != nil {
			fmt.Println(err)
		}
	}
	_ = meter.Close()

	rows, _ := accounting.Summarize(ledger.Query(ctx, accounting.Query{}), accounting.ByWorkload)
	for _, r := range rows {
		fmt.Printf("%-9s %5.3f GPU-h %9d mJ  cost %s  revenue %s\n", r.Key, r.GPUHours, r.EnergyMJ, r.Cost, r.Revenue)
	}
	// Output:
	// (idle)    0.350 GPU-h  37422000 mJ  cost 0.002604  revenue 0.000000
	// finetune  0.025 GPU-h  24567300 mJ  cost 0.001706  revenue 0.030000
	// miner-0   0.025 GPU-h  26513460 mJ  cost 0.001841  revenue 0.002250
}

// A time-of-use tariff must give every minute of every day one price:
// bands that overlap or leave a gap are refused, all named at once.
func ExampleNewTimeOfUse() {
	_, err := accounting.NewTimeOfUse(time.UTC, []accounting.Band{
		{Name: "night", Days: accounting.EveryDay, Start: 0, End: 7 * time.Hour, PerKWh: 0.11},
		{Name: "day", Days: accounting.EveryDay, Start: 6 * time.Hour, End: 22 * time.Hour, PerKWh: 0.24},
	})
	fmt.Println(strings.SplitN(err.Error(), "\n", 3)[:2])

	tou, _ := accounting.NewTimeOfUse(time.UTC, []accounting.Band{
		{Name: "night", Days: accounting.EveryDay, Start: 0, End: 7 * time.Hour, PerKWh: 0.11},
		{Name: "day", Days: accounting.EveryDay, Start: 7 * time.Hour, End: 24 * time.Hour, PerKWh: 0.24},
	})
	// One kWh drawn evenly from 06:30 to 07:30 costs half at each price.
	at := time.Date(2026, 11, 30, 6, 30, 0, 0, time.UTC)
	cost, _ := accounting.Cost(tou, at, at.Add(time.Hour), 3_600_000_000)
	fmt.Printf("%.3f\n", cost)
	// Output:
	// [time-of-use tariff: Monday: "night" and "day" overlap from 06:00 to 07:00 Monday: no band from 22:00 to 24:00]
	// 0.175
}

// Market prices per MWh every 15 minutes, as a CSV from the market.
func ExampleReadPriceCSV() {
	prices, err := accounting.ReadPriceCSV(strings.NewReader(`start,price_per_mwh
2026-11-30T17:00:00Z,142.5
2026-11-30T17:15:00Z,180.0
2026-11-30T17:45:00Z,95.0
`), 15*time.Minute)
	fmt.Println(err)
	_ = prices
	// Output:
	// price series: hole: no price from 2026-11-30T17:30:00Z to 2026-11-30T17:45:00Z
}

// The ledger's records as CSV, for a spreadsheet or a central store.
func ExampleWriteCSV() {
	l := accounting.NewMemoryLedger()
	start := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	_ = l.Append(context.Background(), []accounting.Record{{Start: start, End: start.Add(time.Minute), GPU: "GPU-0", Workload: "finetune",
		Attempt: 1, Tenant: "acme", Kind: workload.KindTraining, EnergyMJ: 16_200_000, FacilityEnergyMJ: 20_250_000,
		Cost: accounting.AmountOf(0.001406), Revenue: accounting.AmountOf(0.02), Flags: accounting.FlagCounter}})
	_ = accounting.WriteCSV(os.Stdout, l.Query(context.Background(), accounting.Query{}))
	// Output:
	// seq,start,end,gpu,workload,attempt,tenant,kind,energy_mj,facility_energy_mj,cost,revenue,flags
	// 1,2026-11-30T00:00:00Z,2026-11-30T00:01:00Z,GPU-0,finetune,1,acme,training,16200000,20250000,0.001406,0.020000,counter
}
