package training

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"github.com/gpufarm/gpufarm/isolation"
)

// ExitClass says how a workload's container ended, as a customer or an
// operator acts on it.
type ExitClass string

const (
	ExitSuccess ExitClass = "success"
	// ExitPreemptedWithCheckpoint: stopped, and a checkpoint landed during
	// the stop grace: the next attempt resumes from it.
	ExitPreemptedWithCheckpoint ExitClass = "preempted-with-checkpoint"
	// ExitPreemptedNoCheckpoint: stopped, and no checkpoint landed during
	// the grace: the next attempt resumes from an older one, or starts over.
	ExitPreemptedNoCheckpoint ExitClass = "preempted-without-checkpoint"
	// ExitStopped: a workload without checkpoints (a server) was stopped.
	ExitStopped ExitClass = "stopped"
	// ExitCUDAOutOfMemory: a GPU ran out of memory.
	ExitCUDAOutOfMemory ExitClass = "cuda-out-of-memory"
	// ExitNCCL: a collective failed or timed out.
	ExitNCCL ExitClass = "nccl-failure"
	// ExitOOMKilled: the kernel killed the container, or a worker in it,
	// for host memory.
	ExitOOMKilled ExitClass = "oom-killed"
	// ExitUserError: the script failed on its own (an exception, a bad
	// argument): running it again will not help.
	ExitUserError ExitClass = "user-error"
	// ExitFailed: it failed, and the log does not say why.
	ExitFailed ExitClass = "failed"
)

// ExitInput is what ClassifyExit judges by.
type ExitInput struct {
	// Exit is how the container ended; nil when it vanished.
	Exit *isolation.ExitStatus
	// Stopped says the manager asked it to stop (preemption, a drain, a
	// cancel, a power cap).
	Stopped bool
	// Checkpointing says the workload keeps checkpoints; Saved that one
	// landed during the stop grace.
	Checkpointing, Saved bool
	// Log is the tail of its output.
	Log []byte
}

// Verdict is the class of an exit, with the line of the log that shows it
// and what to do.
type Verdict struct {
	Class    ExitClass
	Evidence string
	Advice   string
}

func (v Verdict) String() string {
	s := string(v.Class)
	if v.Evidence != "" {
		s += ": " + v.Evidence
	}
	if v.Advice != "" {
		s += " (" + v.Advice + ")"
	}
	return s
}

// Patterns of real PyTorch and NCCL messages (testdata/exits/SOURCES.txt).
var (
	cudaOOM = regexp.MustCompile(`torch\.cuda\.OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED`)
	ncclErr = regexp.MustCompile(`NCCL error|DistBackendError|nccl(System|Internal|UnhandledCuda|Remote|InvalidUsage)Error|Watchdog caught collective operation timeout|NCCL communicator was aborted`)
	// torchrun's summary of a worker killed by SIGKILL, which the kernel's
	// OOM killer sends when the host runs out of memory.
	workerKilled = regexp.MustCompile(`exitcode\s*:\s*-9\b|\(exitcode: -9\)|Signal 9 \(SIGKILL\) received by PID`)
	// The last line of a Python traceback, or argparse's complaint.
	pyException = regexp.MustCompile(`^(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt): `)
	argparseErr = regexp.MustCompile(`: error: (unrecognized arguments|the following arguments are required|argument )`)
)

// ClassifyExit says how a workload ended, from its exit status and the tail
// of its log.
func ClassifyExit(in ExitInput) Verdict {
	lines := logLines(in.Log)
	switch {
	case in.Stopped && !in.Checkpointing:
		return Verdict{Class: ExitStopped}
	case in.Stopped && in.Saved:
		return Verdict{Class: ExitPreemptedWithCheckpoint}
	case in.Stopped:
		return Verdict{Class: ExitPreemptedNoCheckpoint, Advice: "give it a longer StopGrace, or make it save on its stop signal"}
	case in.Exit == nil:
		return Verdict{Class: ExitFailed, Evidence: "the container vanished"}
	case in.Exit.OOMKilled || in.Exit.Reason == isolation.ReasonOOMKilled:
		return Verdict{Class: ExitOOMKilled, Evidence: "the container went over its memory limit",
			Advice: "raise Resources.MemoryBytes or use fewer dataloader workers"}
	case in.Exit.Code == 0:
		return Verdict{Class: ExitSuccess}
	}
	if l := last(lines, cudaOOM.MatchString); l != "" {
		return Verdict{Class: ExitCUDAOutOfMemory, Evidence: l,
			Advice: "lower the batch size or sequence length, or ask for more or larger GPUs (see gpu.MemoryNeed)"}
	}
	if l := first(lines, ncclErr.MatchString); l != "" {
		return Verdict{Class: ExitNCCL, Evidence: l,
			Advice: "a timeout often follows another rank's death; otherwise check the links and the NCCL_P2P_DISABLE and NCCL_IB_DISABLE settings"}
	}
	if l := last(lines, workerKilled.MatchString); l != "" {
		return Verdict{Class: ExitOOMKilled, Evidence: l,
			Advice: "a worker got SIGKILL, most often from the kernel's OOM killer: give the job more host memory or fewer dataloader workers"}
	}
	isUser := func(l string) bool {
		return (pyException.MatchString(l) && !strings.Contains(l, "ChildFailedError")) || argparseErr.MatchString(l)
	}
	if l := last(lines, isUser); l != "" {
		return Verdict{Class: ExitUserError, Evidence: l, Advice: "fix the script or the image; a retry will fail the same way"}
	}
	ev := fmt.Sprintf("exit code %d", in.Exit.Code)
	if n := len(lines); n > 0 {
		ev += ": " + lines[n-1]
	}
	return Verdict{Class: ExitFailed, Evidence: ev}
}

// maxEvidence bounds a line quoted as evidence.
const maxEvidence = 300

// logLines splits a log into its non-empty lines, trimmed.
func logLines(b []byte) []string {
	var out []string
	for _, l := range bytes.FieldsFunc(b, func(r rune) bool { return r == '\n' || r == '\r' }) {
		s := strings.TrimSpace(string(l))
		if s == "" {
			continue
		}
		if len(s) > maxEvidence {
			s = s[:maxEvidence] + "..."
		}
		out = append(out, s)
	}
	return out
}

func first(lines []string, match func(string) bool) string {
	for _, l := range lines {
		if match(l) {
			return l
		}
	}
	return ""
}

func last(lines []string, match func(string) bool) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if match(lines[i]) {
			return lines[i]
		}
	}
	return ""
}
