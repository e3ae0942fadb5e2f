package progress_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/training/progress"
)

// TestParseRealLogs feeds real training output (testdata/SOURCES.txt) and
// checks what a customer's dashboard would show.
func TestParseRealLogs(t *testing.T) {
	tests := []struct {
		file   string
		format progress.Format
		want   progress.Progress
	}{
		{"hf-trainer-deepspeed-t5.log", progress.FormatHF, progress.Progress{
			// The bar said 1999/24128, DeepSpeed's step line then 2000.
			Step: 2000, Total: 24128, Loss: 0, HasLoss: true, Epoch: 0.1, HasEpoch: true, LearningRate: 0.001,
			StepsPerSecond: 1 / 3.33, SamplesPerSecond: 9.526738918021234, ETA: 20*time.Hour + 27*time.Minute + 23*time.Second, HasETA: true,
		}},
		{"lightning-tqdm.log", progress.FormatLightning, progress.Progress{
			Step: 5, Total: 18, Loss: 9.850, HasLoss: true, Epoch: 5.0 / 18, HasEpoch: true, StepsPerSecond: 1 / 4.14, EpochSteps: true,
		}},
		{"lightning-nemo-global-step.log", progress.FormatLightning, progress.Progress{
			Step: 32000, Loss: 2.590, HasLoss: true, Epoch: 32040.0 / 500150, HasEpoch: true, StepsPerSecond: 1.37,
		}},
		{"deepspeed-megatron.log", progress.FormatDeepSpeed, progress.Progress{
			Step: 35, Total: 10000, Loss: 11.18665, HasLoss: true, HasEpoch: true, LearningRate: 2.1731931451279077e-06,
			StepsPerSecond: 1000 / 4103.1, SamplesPerSecond: 7.864669709950182,
		}},
		{"deepspeed-timer-0.5.log", progress.FormatDeepSpeed, progress.Progress{
			Step: 50, HasEpoch: true, LearningRate: 5e-05, SamplesPerSecond: 83.73838805358588,
		}},
		{"metrics.jsonl", progress.FormatJSONLines, progress.Progress{
			Step: 30, Total: 500, Loss: 1.9, HasLoss: true, Epoch: 0.04, HasEpoch: true, LearningRate: 4.8e-05,
			StepsPerSecond: 4, SamplesPerSecond: 64.5, ETA: 118 * time.Second, HasETA: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			require.NoError(t, err)
			p, err := progress.NewParser(tt.format)
			require.NoError(t, err)
			p.Feed(b)
			got, ok := p.Progress()
			require.True(t, ok)
			assert.Equal(t, tt.want.Step, got.Step, "step")
			assert.Equal(t, tt.want.Total, got.Total, "total")
			assert.InDelta(t, tt.want.Loss, got.Loss, 1e-9, "loss")
			assert.Equal(t, tt.want.HasLoss, got.HasLoss)
			assert.InDelta(t, tt.want.Epoch, got.Epoch, 1e-9, "epoch")
			assert.Equal(t, tt.want.HasEpoch, got.HasEpoch)
			assert.InDelta(t, tt.want.LearningRate, got.LearningRate, 1e-15, "learning rate")
			assert.InDelta(t, tt.want.StepsPerSecond, got.StepsPerSecond, 1e-9, "steps/s")
			assert.InDelta(t, tt.want.SamplesPerSecond, got.SamplesPerSecond, 1e-9, "samples/s")
			assert.Equal(t, tt.want.ETA, got.ETA)
			assert.Equal(t, tt.want.HasETA, got.HasETA)
			assert.Equal(t, tt.want.EpochSteps, got.EpochSteps)
		})
	}
}

// TestBarsRedrawnWithCarriageReturns: tqdm redraws its bar with '\r' and
// no newline; the last redraw counts.
func TestBarsRedrawnWithCarriageReturns(t *testing.T) {
	p, _ := progress.NewParser(progress.FormatHF)
	p.Feed([]byte("\r  1%|          | 10/1000 [00:05<08:15,  2.00it/s]\r  2%|▏         | 20/1000 [00:10<08:10,  2.00it/s]" +
		"\n{'loss': 1.7, 'grad_norm': 0.9, 'learning_rate': 4.9e-05, 'epoch': 0.02}\n"))
	got, ok := p.Progress()
	require.True(t, ok)
	assert.Equal(t, 20, got.Step)
	assert.Equal(t, 1000, got.Total)
	assert.Equal(t, 8*time.Minute+10*time.Second, got.ETA)
	assert.Equal(t, 1.7, got.Loss)
	assert.Equal(t, "2 steps/s, ETA 8m10s", got.Summary())
}

func TestNothingOfProgress(t *testing.T) {
	for _, f := range progress.Formats {
		p, err := progress.NewParser(f)
		require.NoError(t, err)
		p.Feed([]byte("Loading checkpoint shards: done\n{'train_runtime': 12.5, 'train_loss': 0.4, 'epoch': 3.0}\nTraceback (most recent call last):\n"))
		_, ok := p.Progress()
		assert.False(t, ok, "%s: nothing said progress", f)
	}
	_, err := progress.NewParser("tensorboard")
	require.ErrorIs(t, err, progress.ErrInvalid)
	assert.Contains(t, err.Error(), `"tensorboard"`)
}

// TestTracker works out throughput and ETA for output that says neither,
// and starts over when a resumed job reports a lower step.
func TestTracker(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	var tr progress.Tracker
	got := tr.Observe(progress.Progress{Step: 100, Total: 1100}, t0)
	assert.Zero(t, got.StepsPerSecond, "one observation says no rate")
	got = tr.Observe(progress.Progress{Step: 150, Total: 1100}, t0.Add(10*time.Second))
	assert.Equal(t, 5.0, got.StepsPerSecond)
	assert.True(t, got.HasETA)
	assert.Equal(t, 190*time.Second, got.ETA)
	got = tr.Observe(progress.Progress{Step: 160, Total: 1100, StepsPerSecond: 2}, t0.Add(12*time.Second))
	assert.Equal(t, 2.0, got.StepsPerSecond, "the job's own rate wins")
	assert.Equal(t, 470*time.Second, got.ETA)
	got = tr.Observe(progress.Progress{Step: 40, Total: 50, EpochSteps: true}, t0.Add(20*time.Second))
	assert.Zero(t, got.StepsPerSecond, "a lower step starts over")
	got = tr.Observe(progress.Progress{Step: 45, Total: 50, EpochSteps: true}, t0.Add(21*time.Second))
	assert.Equal(t, 5.0, got.StepsPerSecond)
	assert.False(t, got.HasETA, "no ETA from the counts of one epoch")
}
