// Package progress reads a training job's progress from what it writes:
// its log (Hugging Face Trainer log dicts and progress bars, PyTorch
// Lightning progress bars, DeepSpeed step and throughput lines) or a
// metrics file of JSON lines. A Parser is fed lines, in order, and keeps
// the newest value of each field: step, total steps, loss, epoch,
// learning rate, throughput and the time left. Lines that say nothing of
// progress are skipped, so a whole log tail can be fed as it is.
//
// # Formats
//
//   - FormatHF: the dicts the Trainer prints at every logging step,
//     {'loss': 2.1, 'grad_norm': 0.8, 'learning_rate': 5e-05, 'epoch': 0.5},
//     and its tqdm bar, " 8%|█ | 1999/24128 [1:52:09<20:27:23, 3.33s/it]",
//     whose counts are optimizer steps of the whole run.
//   - FormatLightning: the TQDMProgressBar line, "Epoch 0:  22%|██▏ |
//     4/18 [00:17<01:02,  4.47s/it, loss=10.072, v_num=193315]". Its
//     counts are batches of the current epoch: Step and Total count them,
//     unless the bar shows global_step; Epoch is the epoch plus the part
//     of it done.
//   - FormatDeepSpeed: "[Rank 0] step=35, skipped=0, lr=[2.1e-06], ..."
//     and the throughput timer, "epoch=0/micro_step=34/global_step=34,
//     RunningAvgSamplesPerSec=7.86, ..." (older releases: "0/40,
//     SamplesPerSec=83.5"), and Megatron-DeepSpeed's "iteration 34/ 10000
//     | ... | lm_loss: 1.118665E+01 |".
//   - FormatJSONLines: one JSON object a line, as a job's own logger
//     writes to a metrics file; the keys read are step (or global_step),
//     total_steps (max_steps, total), loss (train_loss), epoch,
//     learning_rate (lr), steps_per_second, samples_per_second and
//     eta_seconds.
//
// A Tracker fills in the throughput and the time left from successive
// observations when the job's output does not say them.
package progress
