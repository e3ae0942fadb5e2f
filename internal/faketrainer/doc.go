// Command faketrainer is a fake training job for tests of the checkpoint and
// preemption contract: it counts steps, checkpoints, resumes and logs
// progress the way a Hugging Face Trainer script does, without a GPU.
//
// Behaviour:
//
//   - Every -step-interval it completes one step of -steps, with a
//     deterministic loss curve (the same step always has the same loss).
//   - Every -logging-steps it prints the HF Trainer log dict, a Python dict
//     repr: {'loss': 1.2345, 'grad_norm': 0.87, 'learning_rate': 4.9e-05, 'epoch': 0.12}
//     ('loss' is the mean over the logging window, rounded to 4 places).
//   - Every -checkpoint-every steps, and at the end, it writes
//     <dir>/checkpoint-<step> = {"step":N,"loss":L} atomically (temp file,
//     fsync, rename) and prints "Saving model checkpoint to <path>". Each save
//     takes -save-delay.
//   - On start it resumes from the newest valid checkpoint and prints
//     "resumed from step=N"; corrupt or partial ones are skipped with a line.
//   - On SIGTERM or SIGINT it prints "received SIGTERM, saving checkpoint",
//     saves the current step, prints "checkpoint saved step=N" and exits 0.
//     With -ignore-sigterm it logs SIGTERM and goes on (until SIGKILL).
//   - At the end it prints the train summary dict
//     {'train_runtime': ..., 'train_samples_per_second': ..., 'train_steps_per_second': ..., 'train_loss': ..., 'epoch': ...}
//     and exits 0.
//
// Exit codes: 0 done or checkpointed on a signal, 1 runtime error, 2 bad
// flags. It reads flags only, never the environment.
package main
