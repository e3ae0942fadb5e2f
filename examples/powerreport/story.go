package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// story drives the day. The clock moves only between scenes, a second at
// a time, with a meter sample each second; within a scene the workload
// manager hands GPUs over in real time while the clock stands still, as
// if each handover took no time.
type story struct {
	out   io.Writer
	clk   *sim.ManualClock
	wm    *workload.Manager
	meter *accounting.Meter
}

// scene is what happens at a time of the day.
type scene struct {
	at   time.Duration
	what string
	do   func(ctx context.Context) error
}

func (s *story) play(ctx context.Context) error {
	acme := workload.Spec{ID: "finetune-acme", Kind: workload.KindTraining, Tenant: "acme", Priority: 1,
		GPUs: workload.GPURequest{Count: 4}, Image: "gpufarm.example/trainer:latest", Command: []string{"sleep", "infinity"},
		Preemptible: true, MinRuntime: time.Hour, StopGrace: 2 * time.Second, PricePerGPUHour: 1.10}
	beta := workload.Spec{ID: "urgent-beta", Kind: workload.KindTraining, Tenant: "beta", Priority: 10,
		GPUs: workload.GPURequest{Count: 6}, Image: "gpufarm.example/trainer:latest", Command: []string{"sleep", "infinity"},
		StopGrace: 2 * time.Second, PricePerGPUHour: 2.40}
	const capW = 1500
	scenes := []scene{
		{0, "miners fill all 8 GPUs", func(context.Context) error {
			return s.until("8 miners", func() bool { return s.running(workload.KindMining) == 8 })
		}},
		{2 * time.Hour, "acme rents 4 GPUs for a fine-tune at 1.10/GPU-h (preemptible)", func(ctx context.Context) error {
			if _, err := s.wm.Submit(ctx, acme); err != nil {
				return err
			}
			return s.until("acme running", func() bool { return s.state(acme.ID) == workload.StateRunning && s.running(workload.KindMining) == 4 })
		}},
		{9 * time.Hour, "beta needs 6 GPUs at once at 2.40/GPU-h: acme is preempted", func(ctx context.Context) error {
			if _, err := s.wm.Submit(ctx, beta); err != nil {
				return err
			}
			return s.until("beta running, acme queued", func() bool {
				return s.state(beta.ID) == workload.StateRunning && s.state(acme.ID) == workload.StateQueued && s.running(workload.KindMining) == 2
			})
		}},
		{13 * time.Hour, "beta is done; acme resumes", func(ctx context.Context) error {
			if err := s.wm.Cancel(ctx, beta.ID); err != nil {
				return err
			}
			return s.until("acme back", func() bool { return s.state(acme.ID) == workload.StateRunning && s.running(workload.KindMining) == 4 })
		}},
		{17 * time.Hour, fmt.Sprintf("evening peak: the site caps the GPUs at %d W", capW), func(ctx context.Context) error {
			rep, err := s.wm.Curtail(ctx, capW)
			if err != nil {
				return err
			}
			if !rep.Met {
				return fmt.Errorf("the cap of %d W was not met: %.0f W", capW, rep.FinalW)
			}
			fmt.Fprintf(s.out, "          draw %.0f W -> %.0f W in %d steps\n", rep.StartW, rep.FinalW, len(rep.Steps))
			return nil
		}},
		{21 * time.Hour, "the cap is lifted; miners return", func(ctx context.Context) error {
			if _, err := s.wm.Curtail(ctx, 0); err != nil {
				return err
			}
			return s.until("miners back", func() bool { return s.running(workload.KindMining) == 4 })
		}},
		{22 * time.Hour, "acme's fine-tune is done; miners take its GPUs", func(ctx context.Context) error {
			if err := s.wm.Cancel(ctx, acme.ID); err != nil {
				return err
			}
			return s.until("8 miners", func() bool { return s.running(workload.KindMining) == 8 })
		}},
		{24 * time.Hour, "end of the day", func(context.Context) error { return nil }},
	}
	fmt.Fprintf(s.out, "a day on a simulated rig of 8 A40s, %s, in accelerated time\n", day.Format("Monday 2 January 2006"))
	for _, sc := range scenes {
		if err := s.advance(ctx, day.Add(sc.at)); err != nil {
			return err
		}
		fmt.Fprintf(s.out, "  %s  %s\n", day.Add(sc.at).Format("15:04"), sc.what)
		if err := sc.do(ctx); err != nil {
			return fmt.Errorf("%s: %w", sc.what, err)
		}
		// A sample at the handover instant, as Meter.Run takes one
		// when work starts or ends.
		if err := s.meter.Poll(ctx); err != nil {
			return err
		}
	}
	return s.meter.Flush(ctx)
}

// advance moves the clock to t a second at a time, sampling each second.
func (s *story) advance(ctx context.Context, t time.Time) error {
	for now := s.clk.Now(); now.Before(t); {
		now = now.Add(time.Second)
		s.clk.Set(now)
		if err := s.meter.Poll(ctx); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// until waits, in real time and with the clock standing still, for the
// manager to reach cond.
func (s *story) until(what string, cond func() bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("waited a minute for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func (s *story) running(k workload.Kind) int {
	return len(s.wm.List(workload.Filter{Kind: k, States: []workload.State{workload.StateRunning}}))
}

func (s *story) state(id string) workload.State {
	w, err := s.wm.Get(id)
	if err != nil {
		return ""
	}
	return w.State
}
