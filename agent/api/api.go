package api

import "time"

// Spec is a workload to run: the body of POST /v1/workloads.
type Spec struct {
	// ID names the workload on the node: letters, digits and single '.',
	// '_' or '-' between them, at most 64.
	ID string `json:"id"`
	// Kind is mining, training, inference or batch.
	Kind string `json:"kind"`
	// Tenant owns the workload; a token scoped to a tenant may leave it
	// empty (it is filled in) or give its own.
	Tenant   string `json:"tenant"`
	Priority int    `json:"priority,omitempty"`
	GPUs     GPUs   `json:"gpus"`
	// Image must have been imported or pulled for the tenant.
	Image   string   `json:"image"`
	Command []string `json:"command,omitempty"`
	Env     []string `json:"env,omitempty"` // KEY=VALUE
	WorkDir string   `json:"work_dir,omitempty"`
	Mounts  []Mount  `json:"mounts,omitempty"`
	// Resources are the container's limits; zero fields take the tenant
	// policy's defaults.
	Resources Limits `json:"resources,omitzero"`
	// Network is none (the default), bridge (the tenant network) or host.
	Network     string `json:"network,omitempty"`
	Preemptible bool   `json:"preemptible,omitempty"`
	// StopSignal is a signal name ("SIGTERM", the default, "SIGUSR1").
	StopSignal        string  `json:"stop_signal,omitempty"`
	StopGraceSeconds  float64 `json:"stop_grace_seconds,omitempty"`
	MinRuntimeSeconds float64 `json:"min_runtime_seconds,omitempty"`
	// OnGPULoss is requeue or fail; empty takes the kind's default.
	OnGPULoss       string            `json:"on_gpu_loss,omitempty"`
	PricePerGPUHour float64           `json:"price_per_gpu_hour,omitempty"`
	Load            float64           `json:"load,omitempty"` // expected utilisation, 0 to 1
	Labels          map[string]string `json:"labels,omitempty"`
}

// GPUs is what a workload asks of its GPUs.
type GPUs struct {
	Count                int    `json:"count,omitempty"`
	MinMemoryBytes       uint64 `json:"min_memory_bytes,omitempty"`
	MinComputeCapability string `json:"min_compute_capability,omitempty"` // "8.6"
	MinLinkGen           int    `json:"min_link_gen,omitempty"`
	MinLinkWidth         int    `json:"min_link_width,omitempty"`
	// Models lists the allowed model names ("GeForce RTX 3090", "A40").
	Models []string `json:"models,omitempty"`
	// UUIDs pins the workload to these GPUs: how an external scheduler
	// dictates placement.
	UUIDs           []string `json:"uuids,omitempty"`
	IgnoreReadiness bool     `json:"ignore_readiness,omitempty"`
}

// Mount is a host path in the container.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Limits are a container's resource limits; zero is the policy's default.
type Limits struct {
	CPUMillis   int64 `json:"cpu_millis,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	Pids        int64 `json:"pids,omitempty"`
	CPUShares   int64 `json:"cpu_shares,omitempty"`
}

// Workload is the node's record of a workload.
type Workload struct {
	Spec  Spec   `json:"spec"`
	State string `json:"state"`
	// GPUs are the UUIDs held, or last held.
	GPUs []string `json:"gpus"`
	// Container is "tenant/id" of the current or last container.
	Container string `json:"container,omitempty"`
	// Address is the container's address on the tenant network.
	Address     string    `json:"address,omitempty"`
	Attempt     int       `json:"attempt"`
	Preemptions int       `json:"preemptions"`
	Retries     int       `json:"retries"`
	SubmittedAt time.Time `json:"submitted_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`
	StopAskedAt time.Time `json:"stop_asked_at,omitzero"`
	Exit        *Exit     `json:"exit,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	// Outcome is the final state a workload asked to stop for good will
	// reach.
	Outcome  string    `json:"outcome,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Ready    bool      `json:"ready,omitempty"`
	ExitNote string    `json:"exit_note,omitempty"`
	// Seq is the sequence number of the event that last changed it.
	Seq uint64 `json:"seq"`
}

// Exit is how a container ended.
type Exit struct {
	Code int `json:"code"`
	// Reason is exited, stopped, killed or oom-killed.
	Reason    string    `json:"reason"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	ExitedAt  time.Time `json:"exited_at,omitzero"`
}

// Progress is what a running workload reports of itself.
type Progress struct {
	Step  int `json:"step"`
	Total int `json:"total,omitempty"`
	// Loss is absent when the workload did not report one.
	Loss           *float64 `json:"loss,omitempty"`
	Epoch          float64  `json:"epoch,omitempty"`
	Throughput     float64  `json:"throughput,omitempty"`
	ThroughputUnit string   `json:"throughput_unit,omitempty"`
	ETASeconds     float64  `json:"eta_seconds,omitempty"`
	Message        string   `json:"message,omitempty"`
}

// Event is one change of a workload or of the node, as the event stream
// (GET /v1/events) sends it. Seq is strictly increasing, across restarts
// of the agent too: resume with ?after=seq or a Last-Event-ID header.
type Event struct {
	Seq  uint64 `json:"seq"`
	Type string `json:"type"`
	// ID, Kind and Tenant name the workload; empty for node events
	// (cordoned, uncordoned, store-failed, store-recovered).
	ID       string    `json:"id,omitempty"`
	Kind     string    `json:"kind,omitempty"`
	Tenant   string    `json:"tenant,omitempty"`
	Attempt  int       `json:"attempt,omitempty"`
	Time     time.Time `json:"time"`
	GPUs     []string  `json:"gpus,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Exit     *Exit     `json:"exit,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Note     string    `json:"note,omitempty"`
	Handover *Handover `json:"handover,omitempty"`
}

// Handover is how long taking GPUs from other workloads took.
type Handover struct {
	From           []string `json:"from"`
	DrainSeconds   float64  `json:"drain_seconds"`
	PrepareSeconds float64  `json:"prepare_seconds"`
	HygieneSeconds float64  `json:"hygiene_seconds"`
	TotalSeconds   float64  `json:"total_seconds"`
}

// GPU is one GPU of the node: what it is, what it is good for, and what
// holds it.
type GPU struct {
	Index             int    `json:"index"`
	UUID              string `json:"uuid"`
	Name              string `json:"name"`
	Architecture      string `json:"architecture,omitempty"`
	ComputeCapability string `json:"compute_capability"`
	MemoryBytes       uint64 `json:"memory_bytes"`
	PCIBusID          string `json:"pci_bus_id"`
	// LinkGen and LinkWidth are the PCIe link the GPU can use.
	LinkGen      int     `json:"link_gen"`
	LinkWidth    int     `json:"link_width"`
	HostLinkGBps float64 `json:"host_link_gbps"`
	// PowerLimitW and DefaultPowerLimitW are absent on boards that do not
	// report them.
	PowerLimitW        *float64 `json:"power_limit_w,omitempty"`
	DefaultPowerLimitW *float64 `json:"default_power_limit_w,omitempty"`
	// Use is what readiness admits: training, inference, mining or none.
	Use   string   `json:"use"`
	Fit   Fit      `json:"fit"`
	Flags []string `json:"flags,omitempty"`
	Notes []string `json:"notes,omitempty"`

	Healthy bool   `json:"healthy"`
	Health  string `json:"health,omitempty"`
	// Workload holds it, of Kind and Tenant; Next has reserved it.
	Workload   string `json:"workload,omitempty"`
	Next       string `json:"next,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Tenant     string `json:"tenant,omitempty"`
	Quarantine string `json:"quarantine,omitempty"`
	Cordoned   string `json:"cordoned,omitempty"`
}

// Fit is the largest model, in parameters, each task fits on one GPU.
type Fit struct {
	InferenceFP16Params float64 `json:"inference_fp16_params"`
	InferenceINT8Params float64 `json:"inference_int8_params"`
	InferenceINT4Params float64 `json:"inference_int4_params"`
	LoRAParams          float64 `json:"lora_params"`
	QLoRAParams         float64 `json:"qlora_params"`
	FullFineTuneParams  float64 `json:"full_fine_tune_params"`
}

// Node is the node's state: its manager, its power and what its GPUs are
// good for together.
type Node struct {
	// Running is false while the manager is not running (starting or
	// shutting down).
	Running bool `json:"running"`
	// StoreError is set while the manager's store fails: no new work
	// starts meanwhile.
	StoreError string `json:"store_error,omitempty"`
	Queued     int    `json:"queued"`
	Live       int    `json:"live"`
	Finished   int    `json:"finished"`
	Cordoned   string `json:"cordoned,omitempty"`
	// DrawW is the GPUs' draw at the last measurement; BudgetW the power
	// budget, 0 for none.
	DrawW   float64 `json:"draw_w"`
	BudgetW float64 `json:"budget_w"`

	GPUs                    int            `json:"gpus"`
	ByUse                   map[string]int `json:"by_use"`
	MemoryBytes             uint64         `json:"memory_bytes"`
	TrainingMemoryBytes     uint64         `json:"training_memory_bytes"`
	SlowestTrainingLinkGBps float64        `json:"slowest_training_link_gbps"`
	AllReduceSecondsPerGB   float64        `json:"all_reduce_seconds_per_gb"`
	Notes                   []string       `json:"notes,omitempty"`
}

// Cordon is the body of the cordon calls: why the GPU or the node is taken
// out of service.
type Cordon struct {
	Reason string `json:"reason"`
}

// Budget is the body of PUT /v1/power/budget: the site's power budget for
// the GPUs in watts; 0 lifts it.
type Budget struct {
	Watts float64 `json:"watts"`
}

// CurtailReport says how meeting a power budget went.
type CurtailReport struct {
	TargetW     float64       `json:"target_w"`
	StartW      float64       `json:"start_w"`
	FinalW      float64       `json:"final_w"`
	Met         bool          `json:"met"`
	TookSeconds float64       `json:"took_seconds"`
	Steps       []CurtailStep `json:"steps,omitempty"`
}

// CurtailStep is one action of a curtailment and the draw after it.
type CurtailStep struct {
	Action       string   `json:"action"`
	Workloads    []string `json:"workloads,omitempty"`
	DrawW        float64  `json:"draw_w"`
	AfterSeconds float64  `json:"after_seconds"`
}

// Record is one ledger record: energy of one GPU over a span, booked to a
// workload, to idle or to a gap. Amounts are decimal strings in the
// operator's currency, exact to the millionth.
type Record struct {
	Seq              uint64 `json:"seq"`
	Start            string `json:"start"` // RFC 3339, UTC
	End              string `json:"end"`
	GPU              string `json:"gpu"`
	Workload         string `json:"workload"`
	Attempt          int    `json:"attempt"`
	Tenant           string `json:"tenant"`
	Kind             string `json:"kind"`
	EnergyMJ         int64  `json:"energy_mj"`
	FacilityEnergyMJ int64  `json:"facility_energy_mj"`
	Cost             string `json:"cost"`
	Revenue          string `json:"revenue"`
	// Flags says what is estimated or missing, joined by '|'.
	Flags string `json:"flags"`
}

// Row is the sum of a group of ledger records.
type Row struct {
	Key              string  `json:"key"`
	GPUHours         float64 `json:"gpu_hours"`
	Records          int     `json:"records"`
	EnergyMJ         int64   `json:"energy_mj"`
	FacilityEnergyMJ int64   `json:"facility_energy_mj"`
	Cost             string  `json:"cost"`
	Revenue          string  `json:"revenue"`
	Margin           string  `json:"margin"`
	Flags            string  `json:"flags"`
}

// Error is the body of every error response.
type Error struct {
	// Code is the error's category: invalid, not_found, exists, denied,
	// unauthorized, too_large, unplaceable, unavailable, timeout,
	// internal.
	Code string `json:"code"`
	// Message says what went wrong and what to do.
	Message string `json:"message"`
}

// Error codes.
const (
	CodeInvalid      = "invalid"
	CodeNotFound     = "not_found"
	CodeExists       = "exists"
	CodeDenied       = "denied"
	CodeUnauthorized = "unauthorized"
	CodeTooLarge     = "too_large"
	CodeUnplaceable  = "unplaceable"
	CodeUnavailable  = "unavailable"
	CodeTimeout      = "timeout"
	CodeInternal     = "internal"
)

// Imported is the answer to an image import: the images now in the
// tenant.
type Imported struct {
	Images []string `json:"images"`
}
