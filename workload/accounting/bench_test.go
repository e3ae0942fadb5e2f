package accounting_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/accounting/bolt"
	"github.com/gpufarm/gpufarm/workload/accounting/metrics"
)

// BenchmarkObserve is the meter's cost per GPU sample. "between-windows"
// books samples that close no record window (the timer stops while a
// flush empties the buffer every 50): it must not allocate.
// "with-windows" books 1 Hz samples with one-minute windows, so every
// 60th sample attributes the minute and appends its record: the
// amortized cost.
func BenchmarkObserve(b *testing.B) {
	for _, name := range []string{"between-windows", "with-windows"} {
		b.Run(name, func(b *testing.B) {
			r := newRig(b, preset(b, sim.PresetA40))
			tl := newTimeline()
			tl.hand(r.devs[0].UUID, t0, holders[2])
			opts := []accounting.Option{accounting.WithTariff(accounting.Flat(0.2))}
			if name == "between-windows" {
				opts = append(opts, accounting.WithRecordInterval(24*time.Hour), accounting.WithMaxSampleGap(time.Hour))
			}
			m := newMeter(b, r, tl, accounting.NewMemoryLedger(), opts...)
			ctx := context.Background()
			s, err := r.gpus.SampleAll(ctx, nil)
			require.NoError(b, err)
			one := s[:1]
			require.NoError(b, m.Observe(ctx, one))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if name == "between-windows" && i%50 == 49 {
					b.StopTimer()
					require.NoError(b, m.Flush(ctx))
					b.StartTimer()
				}
				one[0].Time = t0.Add(time.Duration(i+1) * time.Second)
				one[0].EnergyMJ.Value += 250_000
				if err := m.Observe(ctx, one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEightGPUsAnHour meters a simulated 8-GPU rig for an hour at
// 1 Hz with handovers every few minutes, writing to a bbolt ledger, and
// scrapes nothing: it reports the CPU time that costs per simulated hour
// and as a share of one core (the target is under 1%).
func BenchmarkEightGPUsAnHour(b *testing.B) {
	ctx := context.Background()
	var cpu time.Duration
	for range b.N {
		b.StopTimer()
		r := newRig(b, preset(b, sim.PresetA40))
		l, err := bolt.Open(filepath.Join(b.TempDir(), "ledger.db"))
		require.NoError(b, err)
		tl := newTimeline()
		m := newMeter(b, r, tl, l)
		c, err := metrics.New(m, r.gpus, nil, metrics.WithHostname("bench"))
		require.NoError(b, err)
		reg := prometheus.NewRegistry()
		require.NoError(b, reg.Register(c))
		before := cpuTime()
		b.StartTimer()
		for s := 0; s <= 3600; s++ {
			at := t0.Add(time.Duration(s) * time.Second)
			r.clk.Set(at)
			if s%300 == 0 {
				for g, d := range r.devs {
					tl.hand(d.UUID, at, holders[(s/300+g)%len(holders)])
					_ = r.sim.SetLoad(g, sim.Load{Util: float64((s/300+g)%5) / 5})
				}
			}
			if err := m.Poll(ctx); err != nil {
				b.Fatal(err)
			}
			if s%15 == 0 { // Prometheus's default scrape interval
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := m.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - before
		require.NoError(b, m.Close())
		require.NoError(b, l.Close())
		b.StartTimer()
	}
	perHour := cpu / time.Duration(b.N)
	b.ReportMetric(float64(perHour.Milliseconds()), "cpu-ms/sim-hour")
	b.ReportMetric(100*perHour.Seconds()/3600, "%-of-a-core")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
