// Package training runs customers' training jobs and inference servers
// on a node the way their frameworks expect, and holds them to a
// checkpoint contract the node can prove.
//
// # Launch
//
// A Job names a launcher (torchrun, Accelerate or DeepSpeed), the script
// and the GPUs, and Build turns it, against the node's inventory, into a
// workload.Spec ready for workload.Manager.Submit: the launcher's command
// for N GPUs on one node, or for one node's share of a job on several
// (node rank, rendezvous address; a control plane builds it once per
// node), the checkpoint folder mounted, and NCCL's settings from what the
// inventory tells of the GPUs: no peer-to-peer or NVLink (GeForce, CMP)
// gives NCCL_P2P_DISABLE=1, no InfiniBand NCCL_IB_DISABLE=1. Plan.Workers
// lists the environment each process gets (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). The GPUs reach the
// container in the order of Workload.GPUs; the Adapter sets
// CUDA_VISIBLE_DEVICES to their UUIDs in that order, so LOCAL_RANK i runs
// on Workload.GPUs[i] (DeepSpeed sets its own list: it gets PCI order,
// named in GPUFARM_GPU_UUIDS).
//
// Data-parallel training exchanges gradients every step, so a job of
// several GPUs is refused (ErrUnfit) on GPUs whose host link readiness
// rates too slow for it, an x1 mining riser, with the link and what an
// all-reduce of the job's gradients would cost on it; ForceDataParallel
// runs it anyway.
//
// # Memory fit
//
// With Job.Model (a gpu.MemoryNeed: parameters, precision, method, sequence
// length, batch), each GPU's need comes from the one formula in gpu, the
// one readiness uses, and becomes the request's minimum memory; a model
// that fits none of the GPUs asked for is refused before anything is
// displaced, with the numbers and the lighter methods that would fit.
// For a Server, the same formula gives the longest context that fits
// beside the weights.
//
// # Checkpoints and preemption
//
// A job's checkpoint folder stays on the host across attempts. When the
// manager preempts the job it sends the job's stop signal (SIGTERM, or
// SIGUSR1 for Lightning's requeue handler), waits its grace, then kills.
// The Adapter, which serves as the Manager's AttemptHook and ExitReporter,
// then reads the folder (package checkpoint) and notes on the record and
// on the preempted event "checkpoint saved at step N during grace" or "no
// checkpoint written during grace (last at step M)", from the files'
// completion times against the time of the stop, never from what the job
// printed. The next attempt gets the resume arguments of the newest
// complete checkpoint (Checkpoint.Resume); a partial one, cut short by a
// kill, is skipped.
//
// # Progress and exits
//
// While a job runs, the Adapter's Run reads its log or metrics file
// (package progress) and reports step, total, loss, epoch, throughput and
// time left through Manager.ReportProgress, so Get shows the last
// progress. When a container ends, ClassifyExit says how: success,
// preempted with or without a checkpoint, CUDA out of memory, an NCCL
// failure, killed for host memory, or the user's own error, from the exit
// status and patterns of real PyTorch and NCCL messages.
//
// # Inference
//
// A Server (vLLM or Text Generation Inference) is built the same way: the
// model, the tensor parallel size from the GPU count, the port, the context
// length from the memory fit. It runs on the tenant network by default
// (isolation.NetworkBridge, which the default policy allows), where the
// host reaches it at the workload's Address, and the Adapter probes its
// health endpoint there (Probe): the workload is marked ready only when
// the server answers.
package training
