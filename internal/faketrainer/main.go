package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	args, out := os.Args[1:], &lineWriter{w: os.Stdout}
	if len(args) > 0 && launchers[args[0]] != nil {
		script, err := launch(args, out, os.Getenv, visibleGPUs("/dev"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "faketrainer:", err)
			os.Exit(1)
		}
		args = script
	}
	os.Exit(run(args, os.Stdout, os.Stderr, sig, time.Now))
}

// run parses args, trains and returns the exit code: 0 when training is
// done or a checkpoint was saved on a signal, 1 on a runtime error (such as
// an unwritable checkpoint dir, or a checkpoint to resume from that
// cannot be read), 2 on bad flags. sig delivers SIGTERM, SIGINT and
// SIGUSR1.
func run(args []string, stdout, stderr io.Writer, sig <-chan os.Signal, now func() time.Time) int {
	fs := flag.NewFlagSet("faketrainer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.layout, "layout", layoutFile, "checkpoint layout and progress format: "+strings.Join(layouts, ", "))
	fs.StringVar(&cfg.from.hf, "resume_from_checkpoint", "", "hf: the checkpoint-<step> folder to resume from")
	fs.StringVar(&cfg.from.lightning, "ckpt_path", "", "lightning: the .ckpt file to resume from")
	fs.StringVar(&cfg.from.dsDir, "load_dir", "", "deepspeed: the checkpoint folder to resume from")
	fs.StringVar(&cfg.from.dsTag, "ckpt_id", "", "deepspeed: the tag to resume from (default: the one latest names)")
	fs.StringVar(&cfg.from.marker, "resume", "", "marker: the step folder to resume from")
	fs.BoolVar(&cfg.partialOnSignal, "partial-on-signal", false, "on a stop signal, write half a checkpoint and exit 1, as a job killed mid-save")
	fs.StringVar(&cfg.metricsFile, "metrics-file", "", "also append each progress report to this file as a JSON line")
	fs.Int("local_rank", 0, "set by the deepspeed launcher; ignored")
	fs.StringVar(&cfg.dir, "checkpoint-dir", "/ckpt", "directory of checkpoint-<step> files; created if missing")
	fs.IntVar(&cfg.steps, "steps", 1000, "total training steps")
	fs.DurationVar(&cfg.stepInterval, "step-interval", 50*time.Millisecond, "wall time of one step")
	fs.IntVar(&cfg.checkpointEvery, "checkpoint-every", 100, "save a checkpoint every N steps (0: only on SIGTERM/SIGINT and at the end)")
	fs.DurationVar(&cfg.saveDelay, "save-delay", 0, "time one checkpoint save takes, to test grace periods")
	ignoreTerm := fs.Bool("ignore-sigterm", false, "log and ignore SIGTERM (to test the kill at the end of a grace period); SIGINT and SIGUSR1 still checkpoint")
	fs.IntVar(&cfg.loggingSteps, "logging-steps", 10, "print one progress dict every N steps")
	fs.IntVar(&cfg.batchSize, "batch-size", 8, "samples per step")
	fs.IntVar(&cfg.stepsPerEpoch, "steps-per-epoch", 100, "steps in one epoch")
	fs.Float64Var(&cfg.learningRate, "learning-rate", 5e-5, "peak learning rate (linear decay to 0)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cfg.validate(fs.Args()); err != nil {
		fmt.Fprintln(stderr, "faketrainer:", err)
		return 2
	}

	out := &lineWriter{w: stdout}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() { // turns signals into a cancel; ends with run
		defer wg.Done()
		for {
			select {
			case s := <-sig:
				name := "SIGINT"
				if s == syscall.SIGUSR1 {
					name = "SIGUSR1"
				}
				if s == syscall.SIGTERM {
					name = "SIGTERM"
					if *ignoreTerm {
						out.printf("received SIGTERM, ignoring it (-ignore-sigterm)")
						continue
					}
				}
				out.printf("received %s, saving checkpoint", name)
				cancel()
				return
			case <-ctx.Done():
				return
			}
		}
	}()

	if err := train(ctx, cfg, out, now); err != nil {
		fmt.Fprintln(stderr, "faketrainer:", err)
		return 1
	}
	return 0
}

func (c config) validate(extra []string) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(extra) > 0 {
		bad("unexpected arguments %q", extra)
	}
	if c.dir == "" {
		bad("-checkpoint-dir must not be empty")
	}
	if c.steps < 1 {
		bad("-steps must be >= 1, got %d", c.steps)
	}
	if c.stepInterval <= 0 {
		bad("-step-interval must be > 0, got %s", c.stepInterval)
	}
	if c.checkpointEvery < 0 {
		bad("-checkpoint-every must be >= 0, got %d", c.checkpointEvery)
	}
	if c.saveDelay < 0 {
		bad("-save-delay must be >= 0, got %s", c.saveDelay)
	}
	if c.loggingSteps < 1 {
		bad("-logging-steps must be >= 1, got %d", c.loggingSteps)
	}
	if c.batchSize < 1 {
		bad("-batch-size must be >= 1, got %d", c.batchSize)
	}
	if c.stepsPerEpoch < 1 {
		bad("-steps-per-epoch must be >= 1, got %d", c.stepsPerEpoch)
	}
	if !(c.learningRate > 0) {
		bad("-learning-rate must be > 0, got %g", c.learningRate)
	}
	if c.layout != "" && !slices.Contains(layouts, c.layout) {
		bad("-layout %q: want one of %s", c.layout, strings.Join(layouts, ", "))
	}
	return errors.Join(errs...)
}

// train runs steps from the checkpoint to resume from to cfg.steps. When
// ctx ends it saves the current step and returns nil: a checkpointed stop
// is a clean exit. With partialOnSignal it writes half a checkpoint
// instead and returns errDiedMidSave.
func train(ctx context.Context, cfg config, out *lineWriter, now func() time.Time) error {
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return fmt.Errorf("create checkpoint dir: %w", err)
	}
	st := newStore(cfg)
	ck, found, err := st.resume(out)
	if err != nil {
		return err
	}
	step, lastSaved := 0, -1
	if found {
		step = min(ck.Step, cfg.steps)
		lastSaved = step
		out.printf("resumed from step=%d", ck.Step)
	}
	save := func(step int) (string, error) {
		time.Sleep(cfg.saveDelay) // deliberately not interruptible: a save must finish
		p, err := st.save(checkpoint{Step: step, Loss: roundTo(lossAt(step), 4)}, cfg.epochAt(step))
		if err == nil {
			lastSaved = step
		}
		return p, err
	}
	rep, err := newReporter(cfg, out, now, step)
	if err != nil {
		return err
	}
	defer rep.close()
	hist, _ := st.(historian)

	start := now()
	var sumLoss, winLoss float64
	ran, winN := 0, 0
	tick := time.NewTicker(cfg.stepInterval)
	defer tick.Stop()
	for step < cfg.steps {
		select {
		case <-ctx.Done():
			if cfg.partialOnSignal {
				if lastSaved == step {
					// No framework saves a step twice: the cut save is
					// of the next one.
					step++
				}
				p, err := st.savePartial(checkpoint{Step: step, Loss: roundTo(lossAt(step), 4)}, cfg.epochAt(step))
				if err != nil {
					return err
				}
				out.printf("dying mid-save at step=%d, leaving %s", step, p)
				return errDiedMidSave
			}
			if lastSaved != step {
				if _, err := save(step); err != nil {
					return err
				}
			}
			out.printf("checkpoint saved step=%d", step)
			return nil
		case <-tick.C:
		}
		step++
		ran++
		loss := lossAt(step)
		sumLoss += loss
		winLoss += loss
		winN++
		if step%cfg.loggingSteps == 0 {
			entry := rep.report(step, winLoss/float64(winN))
			if hist != nil {
				hist.logged(entry)
			}
			winLoss, winN = 0, 0
		}
		if cfg.checkpointEvery > 0 && step%cfg.checkpointEvery == 0 {
			p, err := save(step)
			if err != nil {
				return err
			}
			out.printf("Saving model checkpoint to %s", p)
		}
	}
	if lastSaved != step {
		p, err := save(step)
		if err != nil {
			return err
		}
		out.printf("Saving model checkpoint to %s", p)
	}

	runtime := now().Sub(start).Seconds()
	var samplesPerS, stepsPerS, trainLoss float64
	if runtime > 0 {
		samplesPerS = roundTo(float64(ran*cfg.batchSize)/runtime, 3)
		stepsPerS = roundTo(float64(ran)/runtime, 3)
	}
	if ran > 0 {
		trainLoss = sumLoss / float64(ran)
	}
	out.printf("Training completed. Do not forget to share your model on huggingface.co/models =)")
	out.printf("%s", pyDict(
		kv{"train_runtime", roundTo(runtime, 4)},
		kv{"train_samples_per_second", samplesPerS},
		kv{"train_steps_per_second", stepsPerS},
		kv{"train_loss", trainLoss},
		kv{"epoch", roundTo(cfg.epochAt(step), 2)},
	))
	return nil
}
