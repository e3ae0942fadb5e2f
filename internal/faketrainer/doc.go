// Command faketrainer is a fake training job for tests of the checkpoint and
// preemption contract: it counts steps, checkpoints, resumes and logs
// progress the way the common frameworks do, without a GPU.
//
// Behaviour:
//
//   - Every -step-interval it completes one step of -steps, with a
//     deterministic loss curve (the same step always has the same loss).
//   - Every -logging-steps it prints its progress as the -layout's
//     framework does (below); with -metrics-file it also appends a JSON
//     line {"step", "total_steps", "loss", "epoch", "learning_rate"}.
//   - Every -checkpoint-every steps, and at the end, it saves a checkpoint
//     and prints "Saving model checkpoint to <path>". Each save takes
//     -save-delay.
//   - On SIGTERM, SIGINT or SIGUSR1 it prints "received SIGTERM, saving
//     checkpoint", saves the current step, prints "checkpoint saved
//     step=N" and exits 0. With -ignore-sigterm it logs SIGTERM and goes
//     on (until SIGKILL; SIGINT and SIGUSR1 still save). With
//     -partial-on-signal it writes half a checkpoint instead, prints
//     "dying mid-save at step=N, leaving <path>" and exits 1, as a job
//     killed in the middle of a save.
//   - At the end it prints the train summary dict
//     {'train_runtime': ..., 'train_samples_per_second': ..., 'train_steps_per_second': ..., 'train_loss': ..., 'epoch': ...}
//     and exits 0.
//
// Layouts (-layout):
//
//   - file (the default): <dir>/checkpoint-<step> = {"step":N,"loss":L},
//     written atomically; on start it resumes by itself from the newest
//     valid one ("resumed from step=N"), skipping corrupt ones with a
//     line. Progress: the HF Trainer log dict, a Python dict repr,
//     {'loss': 1.2345, 'grad_norm': 0.87, 'learning_rate': 4.9e-05, 'epoch': 0.12}.
//   - hf: checkpoint-<step>/ folders with model.safetensors, optimizer.pt
//     and scheduler.pt, then trainer_state.json (global_step, max_steps,
//     epoch, log_history); progress: a tqdm bar and the log dict.
//   - lightning: epoch=<e>-step=<n>.ckpt archives laid out as torch.save
//     writes them (archive/data.pkl, a protocol 2 pickle with epoch and
//     global_step), written straight to the file; progress: Lightning's
//     "Epoch E: ...| n/N [..., v_num=0, train_loss=L]" bar.
//   - deepspeed: global_step<n>/ with mp_rank_00_model_states.pt and the
//     optimizer states, then the latest file; progress: log_dist step lines
//     and throughput timer lines.
//   - marker: step-<n>/ with __0_0.distcp, then the .metadata marker;
//     progress: the log dict (use -metrics-file for JSON lines).
//
// In every layout but file, it resumes only when told, each framework's
// way: -resume_from_checkpoint PATH (hf), -ckpt_path PATH (lightning),
// -load_dir DIR [-ckpt_id TAG] (deepspeed, the tag latest names by
// default), -resume PATH (marker); a checkpoint it cannot read fails the
// run, as it fails a framework.
//
// Launchers: when the first argument is torchrun, "accelerate launch" or
// deepspeed, it parses that launcher's flags (both - and _ spellings),
// checks them (processes per node no more than the GPU device nodes
// /dev/nvidiaN it sees, node rank within the nodes; DeepSpeed across nodes
// only with --no_ssh), prints one line per worker with the environment
// the launcher would give it ("[torchrun] worker local_rank=0 rank=0
// world_size=2 local_world_size=2 group_rank=0 master_addr=...
// master_port=... cuda_visible_devices=..."), then runs the training
// script's arguments (after its path) itself, as rank 0. It reads the
// environment only there, to report CUDA_VISIBLE_DEVICES,
// CUDA_DEVICE_ORDER and the NCCL variables it was given.
//
// Exit codes: 0 done or checkpointed on a signal, 1 runtime error (or a
// launcher's flags that do not fit), 2 bad flags.
package main
