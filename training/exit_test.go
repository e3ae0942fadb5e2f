package training_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/training"
)

// TestClassifyRealExits classifies the log tails of real failed runs
// (testdata/exits/SOURCES.txt).
func TestClassifyRealExits(t *testing.T) {
	tests := []struct {
		file     string
		code     int
		class    training.ExitClass
		evidence string
	}{
		{"cuda-oom-torch2.1.log", 1, training.ExitCUDAOutOfMemory, "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 32.00 MiB."},
		{"cuda-oom-torch1.0.log", 1, training.ExitCUDAOutOfMemory, "RuntimeError: CUDA out of memory. Tried to allocate 12.50 MiB"},
		{"nccl-watchdog-timeout.log", 1, training.ExitNCCL, "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1580, OpType=ALLREDUCE"},
		{"nccl-system-error.log", 1, training.ExitNCCL, "unhandled system error"},
		{"nccl-cuda-error.log", 1, training.ExitNCCL, "unhandled cuda error"},
		{"worker-sigkill.log", 1, training.ExitOOMKilled, "Signal 9 (SIGKILL) received by PID 14750"},
		{"user-import-error.log", 1, training.ExitUserError, "ImportError: cannot import name 'flash_attn_unpadded_qkvpacked_func'"},
		{"torchrun-exitcode-1.log", 1, training.ExitFailed, "exit code 1: E0801 13:23:20.000000 32974 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			log, err := os.ReadFile(filepath.Join("testdata", "exits", tt.file))
			require.NoError(t, err)
			v := training.ClassifyExit(training.ExitInput{Exit: &isolation.ExitStatus{Code: tt.code, Reason: isolation.ReasonExited}, Checkpointing: true, Log: log})
			assert.Equal(t, tt.class, v.Class, "%v", v)
			assert.Contains(t, v.Evidence, tt.evidence)
			if tt.class != training.ExitFailed {
				assert.NotEmpty(t, v.Advice)
			}
		})
	}
}

// TestClassifyByStatus: what the exit status alone decides.
func TestClassifyByStatus(t *testing.T) {
	oomLog := []byte("torch.cuda.OutOfMemoryError: CUDA out of memory.\n")
	tests := []struct {
		name string
		in   training.ExitInput
		want training.ExitClass
	}{
		{"preempted, saved in grace", training.ExitInput{Stopped: true, Checkpointing: true, Saved: true, Exit: &isolation.ExitStatus{Reason: isolation.ReasonStopped}}, training.ExitPreemptedWithCheckpoint},
		{"preempted, killed without a save", training.ExitInput{Stopped: true, Checkpointing: true, Exit: &isolation.ExitStatus{Code: 137, Reason: isolation.ReasonKilled}}, training.ExitPreemptedNoCheckpoint},
		{"a stop wins over the log", training.ExitInput{Stopped: true, Checkpointing: true, Saved: true, Log: oomLog, Exit: &isolation.ExitStatus{Code: 1}}, training.ExitPreemptedWithCheckpoint},
		{"a server stopped", training.ExitInput{Stopped: true, Exit: &isolation.ExitStatus{Reason: isolation.ReasonStopped}}, training.ExitStopped},
		{"finished", training.ExitInput{Checkpointing: true, Exit: &isolation.ExitStatus{Reason: isolation.ReasonExited}}, training.ExitSuccess},
		{"container memory limit", training.ExitInput{Exit: &isolation.ExitStatus{Code: 137, Reason: isolation.ReasonOOMKilled, OOMKilled: true}}, training.ExitOOMKilled},
		{"vanished", training.ExitInput{}, training.ExitFailed},
		{"argparse", training.ExitInput{Exit: &isolation.ExitStatus{Code: 2}, Log: []byte("usage: train.py [-h]\ntrain.py: error: unrecognized arguments: --lr\n")}, training.ExitUserError},
		{"CUDA OOM found before NCCL errors it caused", training.ExitInput{Exit: &isolation.ExitStatus{Code: 1},
			Log: append(oomLog, "[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=3, OpType=ALLREDUCE)\n"...)}, training.ExitCUDAOutOfMemory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, training.ClassifyExit(tt.in).Class)
		})
	}
}
