// Package dra is the node side of Kubernetes Dynamic Resource Allocation
// (resource.k8s.io/v1) for a gpufarm node: a kubelet plugin, built on
// k8s.io/dynamic-resource-allocation's kubeletplugin helper, that lets a
// cluster's scheduler place AI work on the node's GPUs while idle ones keep
// mining.
//
// The driver (DriverName) publishes one ResourceSlice for its node, with a
// device per GPU ("gpu-<index>") whose attributes say what the card is and
// what it is good for, from the inventory and gpu.Assess: model, class,
// architecture, computeCapability (a version), pcieGeneration and
// pcieWidth (the usable link), riser, use (training, inference, mining or
// none), inferenceFP16Params, inferenceINT4Params and qloraParams (the
// largest model that fits), ecc, persistenceMode, uuid and
// resource.kubernetes.io/pciBusID, and its memory as capacity. A
// DeviceClass selects with CEL, e.g. training-fit GPUs with 24 GiB:
//
//	device.driver == "gpu.gpufarm.io" &&
//	device.attributes["gpu.gpufarm.io"].use == "training" &&
//	device.capacity["gpu.gpufarm.io"].memory.compareTo(quantity("24Gi")) >= 0
//
// An unhealthy GPU gets a NoSchedule taint within a second (or leaves the
// slice, when the API server drops taints) and comes back when healthy;
// kubelet's health stream says the same.
//
// Preparing a claim submits an external workload (workload.Spec.External)
// pinned to the claim's GPUs: the manager takes them from the miners with
// its usual hygiene (power and clocks back to defaults, no process left),
// holds them, and accounts their energy to the claim (tenant = the claim's
// namespace, workload = WorkloadID of the claim) until the claim is
// unprepared; then the filler mines on them again. The CDI device IDs
// returned are the ones the isolation layer resolves ("nvidia.com/gpu=
// <UUID>", nvidia-ctk's names on real hosts). Both calls are idempotent,
// and the manager's store keeps the claims, so a restart of the plugin
// neither prepares twice nor forgets one.
package dra
