// Package checkpoint finds the newest complete checkpoint in a training
// job's checkpoint folder, by the layout its framework writes, and tells
// the partial ones (a save cut short by a kill or a crash) apart, so a
// resume never starts from half a checkpoint.
//
// # Layouts
//
//   - LayoutHF: the Hugging Face Trainer's checkpoint-<step> folders. The
//     Trainer writes trainer_state.json after the weights, optimizer and
//     scheduler, so a folder is complete when that file is whole JSON
//     and its global_step is the folder's step.
//   - LayoutLightning: PyTorch Lightning's .ckpt files at the top of the
//     folder. Each is a torch.save archive (a zip file, whose directory
//     is written last), complete when the archive opens and holds its
//     data.pkl; the step is the global_step inside it, else step=N in the
//     name.
//   - LayoutDeepSpeed: DeepSpeed's <tag> folders (global_step<N>) and the
//     latest file it rewrites once every rank has saved. The folder latest
//     names is the newest complete checkpoint; a tag folder newer than
//     it is a save that did not finish.
//   - LayoutMarker: any framework that marks a finished save with a file:
//     step folders (a name ending in the step) holding the marker, by
//     default .metadata, the file PyTorch Distributed Checkpoint writes
//     last.
//
// A Finder reads a folder and returns a Scan: the complete checkpoints,
// newest first, with the time each was completed (the modification time
// of what the framework writes last), and the partial ones with the
// reason. Nothing is written or removed.
package checkpoint
