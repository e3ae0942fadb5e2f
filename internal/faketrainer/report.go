package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// reporter prints progress at every logging step the way the layout's
// framework does, and appends it to the metrics file when one is set.
type reporter struct {
	cfg       config
	out       *lineWriter
	now       func() time.Time
	start     time.Time
	startStep int
	metrics   *os.File
}

func newReporter(cfg config, out *lineWriter, now func() time.Time, startStep int) (*reporter, error) {
	r := &reporter{cfg: cfg, out: out, now: now, start: now(), startStep: startStep}
	if cfg.metricsFile != "" {
		f, err := os.OpenFile(cfg.metricsFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open metrics file: %w", err)
		}
		r.metrics = f
	}
	return r, nil
}

func (r *reporter) close() {
	if r.metrics != nil {
		_ = r.metrics.Close()
	}
}

// report prints the progress of step; loss is the mean over the logging
// window.
func (r *reporter) report(step int, loss float64) map[string]float64 {
	c := r.cfg
	entry := map[string]float64{
		"loss": roundTo(loss, 4), "grad_norm": gradNormAt(step), "learning_rate": c.learningRateAt(step),
		"epoch": roundTo(c.epochAt(step), 2), "step": float64(step),
	}
	dict := pyDict(kv{"loss", entry["loss"]}, kv{"grad_norm", entry["grad_norm"]}, kv{"learning_rate", entry["learning_rate"]}, kv{"epoch", entry["epoch"]})
	elapsed := r.now().Sub(r.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(step-r.startStep) / s
	}
	switch c.layout {
	case layoutHF:
		r.out.printf("%s", bar("", step, c.steps, elapsed, rate, ""))
		r.out.printf("%s", dict)
	case layoutLightning:
		epoch := (step - 1) / c.stepsPerEpoch
		r.out.printf("%s", bar(fmt.Sprintf("Epoch %d: ", epoch), step-epoch*c.stepsPerEpoch, c.stepsPerEpoch, elapsed, rate,
			fmt.Sprintf(", v_num=0, train_loss=%.3f", loss)))
	case layoutDeepSpeed:
		ts := r.now().Format("2006-01-02 15:04:05,000")
		r.out.printf("[%s] [INFO] [logging.py:96:log_dist] [Rank 0] step=%d, skipped=0, lr=[%s], mom=[[0.9, 0.999]]", ts, step, pyFloat(entry["learning_rate"]))
		r.out.printf("[%s] [INFO] [timer.py:215:stop] epoch=%d/micro_step=%d/global_step=%d, RunningAvgSamplesPerSec=%s, CurrSamplesPerSec=%s, MemAllocated=0.26GB, MaxMemAllocated=9.02GB",
			ts, int(c.epochAt(step)), step, step, pyFloat(rate*float64(c.batchSize)), pyFloat(rate*float64(c.batchSize)))
	default:
		r.out.printf("%s", dict)
	}
	if r.metrics != nil {
		line, _ := json.Marshal(map[string]any{"step": step, "total_steps": c.steps, "loss": entry["loss"], "epoch": entry["epoch"], "learning_rate": entry["learning_rate"]})
		_, _ = r.metrics.Write(append(line, '\n'))
	}
	return entry
}

// bar draws a tqdm progress bar: "desc 10%|█         | 100/1000
// [00:05<00:45, 20.00it/s<postfix>]".
func bar(desc string, n, total int, elapsed time.Duration, rate float64, postfix string) string {
	filled := n * 10 / total
	left, speed := "?", "?it/s"
	if rate > 0 {
		left = tqdmClock(time.Duration(float64(total-n) / rate * float64(time.Second)))
		speed = fmt.Sprintf("%.2fit/s", rate)
		if rate < 1 {
			speed = fmt.Sprintf("%.2fs/it", 1/rate)
		}
	}
	return fmt.Sprintf("%s%3d%%|%s%s| %d/%d [%s<%s, %s%s]", desc, n*100/total, strings.Repeat("█", filled), strings.Repeat(" ", 10-filled),
		n, total, tqdmClock(elapsed), left, speed, postfix)
}

// tqdmClock prints a duration as tqdm does: MM:SS, or H:MM:SS.
func tqdmClock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}
