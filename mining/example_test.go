package mining_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/mining"
)

// Read a reply of T-Rex's API: the GPUs' bus ids and UUIDs come out in the
// forms gpu.Device uses.
func Example() {
	body, err := os.ReadFile("testdata/miners/t-rex/summary_0.25.9_api4.1_1gpu_ethash_linux.json")
	if err != nil {
		fmt.Println(err)
		return
	}
	trex, _ := mining.AdapterByName("trex")
	var st mining.Stats
	if err := trex.Parse(trex.Detect(body), body, &st); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %s %s: %.1f M%s, %d accepted, up %v\n", st.Miner, st.Version, st.Algorithm,
		st.Rate.Value/1e6, st.Unit, st.Shares.Accepted.Value, st.Uptime.Value)
	for _, g := range st.GPUs {
		fmt.Printf("GPU %d %s %s: %.0f W, %.0f C\n", g.Index, g.PCIBusID, g.UUID, g.PowerW.Value, g.TemperatureC.Value)
	}
	// Output:
	// trex 0.25.9 ethash: 50.3 MH/s, 1 accepted, up 1m56s
	// GPU 0 0000:0a:00.0 GPU-3e95c8eb-ee1c-a0d4-90c7-a000a27f4c55: 195 W, 74 C
}

// What 88.5 MH/s earned on Ethereum Classic by WhatToMine's numbers of
// February 2020.
func ExampleCoin_RevenuePerDay() {
	body, _ := os.ReadFile("testdata/miners/whattomine/coins.json_2020-02_ethash-fragment_3coins.json")
	market, err := mining.ParseWhatToMine(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	etc, _ := market.Coin("ETC")
	fmt.Printf("%.5f ETC a day, %.8f BTC after a 1 %% pool fee\n", etc.CoinsPerDay(88.5e6), etc.RevenuePerDay(88.5e6, 0.01))
	// Output:
	// 0.18164 ETC a day, 0.00017200 BTC after a 1 % pool fee
}

// The spec a Filler gives the workload manager for an idle simulated GPU:
// T-Rex on the host network, its API on the GPU's loopback port.
func ExampleFiller_Fill() {
	rig, _ := sim.New(sim.Presets()[0])
	gpus, _ := gpu.New(context.Background(), rig)
	defer gpus.Close()
	trex, _ := mining.AdapterByName("trex")
	f, err := mining.NewFiller(gpus, []mining.Miner{{
		Adapter: trex, Image: "registry.example/t-rex:0.26.8", Algorithm: "etchash",
		Pool: "stratum+ssl://etc.pool.example:5555", Wallet: "0x4296116d44a4a7259B52B1A756e19083e675062A", Worker: "rig7",
	}}, mining.WithAPIPorts(4100))
	if err != nil {
		fmt.Println(err)
		return
	}
	spec, ok := f.Fill(context.Background(), gpus.Devices()[3])
	fmt.Println(ok, spec.Tenant, spec.Network, spec.Image)
	fmt.Println(spec.Command)
	fmt.Println(spec.Labels[mining.LabelMiner], spec.Labels[mining.LabelAPI])
	// Output:
	// true mining host registry.example/t-rex:0.26.8
	// [-a etchash -o stratum+ssl://etc.pool.example:5555 -u 0x4296116d44a4a7259B52B1A756e19083e675062A -p x -w rig7 -d 0 --api-bind-http 127.0.0.1:4103 --api-read-only]
	// trex-etchash 127.0.0.1:4103
}

// The watchdog restarts a miner whose rate stays under half its median,
// and backs the GPU off before the next miner.
func ExampleWatchdog() {
	clk := sim.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	w, _ := mining.NewWatchdog(mining.WatchdogConfig{Grace: time.Minute, For: time.Minute, Backoff: 30 * time.Second}, clk)
	w.Start("GPU-1", "mine-gpu0-1")
	observe := func(rate float64, for_ time.Duration) {
		for t := time.Duration(0); t <= for_; t += 10 * time.Second {
			if restart, why := w.Observe("GPU-1", mining.Observation{Rate: gpu.Some(rate), Unit: mining.UnitHashes}); restart {
				until := w.Restarted("GPU-1")
				fmt.Printf("restart: %s; next miner after %v\n", why, until.Sub(clk.Now()))
				return
			}
			clk.Advance(10 * time.Second)
		}
	}
	observe(0, 50*time.Second) // the DAG build, within the grace
	observe(95e6, 5*time.Minute)
	observe(30e6, 5*time.Minute)
	// Output:
	// restart: rate 30.00 MH/s below 50 % of its median 95.00 MH/s for 1m0s; next miner after 30s
}

// A tuning profile on a simulated RTX 3080: the power limit while it
// mines, the default after.
func ExampleTuner() {
	rig, _ := sim.New(sim.Presets()[0])
	gpus, _ := gpu.New(context.Background(), rig)
	defer gpus.Close()
	tu, err := mining.NewTuner(gpus, []mining.Profile{{Model: "RTX 3080", Algorithm: "ethash", PowerLimitW: 230}}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	d := gpus.Devices()[0]
	ctx := context.Background()
	_, _, _ = tu.Apply(ctx, d, "ethash")
	l, _ := gpus.PowerLimits(ctx, d.UUID)
	fmt.Printf("mining: %.0f W\n", l.CurrentW)
	_ = tu.Restore(ctx, d.UUID)
	l, _ = gpus.PowerLimits(ctx, d.UUID)
	fmt.Printf("restored: %.0f W\n", l.CurrentW)
	_, err = mining.NewTuner(gpus, []mining.Profile{{Model: "RTX 3080", PowerLimitW: 400}}, nil)
	fmt.Println(err)
	// Output:
	// mining: 230 W
	// restored: 320 W
	// mining: invalid argument: mining profiles: Profiles[0].PowerLimitW: 400 W is outside 100-336 W, the range of NVIDIA GeForce RTX 3080 (GPU 0)
}
