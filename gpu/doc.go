// Package gpu is the node's view of its GPUs: what each one is, what it
// draws, what it is good for in AI, how to cap it and when it fails.
//
// Users hold a *Manager over a Backend. Two backends ship with the SDK:
// gpu/nvml over NVIDIA's NVML (cgo, real hosts) and gpu/sim, a simulator of
// real fleets (pure Go) that drives examples and tests. The Backend
// interface is small; control features are optional interfaces
// (PowerLimiter, ClockLocker, ProcessLister, MIGController, EventSource)
// that the Manager finds at run time, so a backend grows without breaking
// the others.
//
// The data a device may lack is kept distinct from zero with Optional: a
// GeForce card on a riser has no serial, no ECC and often no energy counter,
// and none of that is a failure. Errors fall into a few categories (ErrNotFound,
// ErrUnavailable, ErrUnsupported, ErrBusy, ErrDeviceLost, ErrInvalid,
// ErrPermission) matched with errors.Is; backend codes stay reachable with
// errors.As.
//
// Assess turns an inventory record into a verdict an operator can act on:
// rent for training, rent for inference, or keep mining, with the memory fit
// of models at each precision and the cost of the PCIe link, so an ex-mining
// RTX 3080 on an x1 riser is not mistaken for an A40.
package gpu
