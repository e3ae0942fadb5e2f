// Package metrics exposes a node to Prometheus: the dcgm-exporter series
// of every GPU, so that dashboards built on dcgm-exporter work unchanged,
// and gpufarm_* series of the accounting and the workload manager.
//
// # dcgm-exporter series
//
// DCGM_FI_DEV_POWER_USAGE (W), DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION
// (counter, mJ; GPUs without an energy counter have none),
// DCGM_FI_DEV_GPU_UTIL (%), DCGM_FI_DEV_GPU_TEMP (C), DCGM_FI_DEV_FB_USED
// and DCGM_FI_DEV_FB_FREE (MiB), DCGM_FI_DEV_SM_CLOCK and
// DCGM_FI_DEV_MEM_CLOCK (MHz), DCGM_FI_DEV_XID_ERRORS (the last Xid) and
// DCGM_FI_DEV_POWER_MGMT_LIMIT (W), each with the labels gpu, UUID,
// pci_bus_id (00000000:0A:00.0), device (nvidiaN), modelName and Hostname
// (WithHostnameLabel("hostname") for exporters built after May 2026). The
// values are the meter's own samples: the numbers the accounting booked.
// The tests compare names, types and labels with real scrapes.
//
// # gpufarm series
//
// Energy (J), facility energy, cost, revenue and GPU-seconds per tenant
// and kind (idle and gap included), and energy, cost and revenue per
// workload, as counters since the meter started; per GPU the metered
// energy, counter resets, sample gaps and whether its power limit is
// lowered; workloads per state, queue depth, the GPUs' draw and the power
// budget, the workload store's and the ledger's health; and
// gpufarm_handover_duration_seconds, a histogram of handover times.
package metrics
