package gpu

import (
	"fmt"
	"math"
)

// Use is what a GPU is best rented for.
type Use int

const (
	UseNone      Use = iota // unhealthy: repair before any use
	UseMining               // keep mining: AI customers would be poorly served
	UseInference            // rent for inference (and single-GPU QLoRA)
	UseTraining             // rent for training and fine-tuning
)

func (u Use) String() string {
	switch u {
	case UseMining:
		return "mining"
	case UseInference:
		return "inference"
	case UseTraining:
		return "training"
	default:
		return "none"
	}
}

// Flag marks a property that limits a GPU for AI work.
type Flag string

const (
	FlagUnhealthy    Flag = "unhealthy"
	FlagRiserX1      Flag = "x1-riser"      // one PCIe lane: a mining riser
	FlagNarrowLink   Flag = "narrow-link"   // fewer than 8 lanes
	FlagGen1Link     Flag = "gen1-link"     // the link cannot train above 2.5 GT/s
	FlagBusLimited   Flag = "bus-limited"   // host link too slow for data-parallel training
	FlagNoECC        Flag = "no-ecc"        // memory errors go undetected
	FlagCMPThrottled Flag = "cmp-throttled" // mining-only silicon with firmware-throttled FP32
	FlagNoBF16       Flag = "no-bf16"       // pre-Ampere: fp16 training needs loss scaling
	FlagSmallMemory  Flag = "small-memory"  // too little memory for useful models
	// FlagSlotLimited: the slot, its chipset or a BIOS setting runs the link
	// at a lower generation than the card supports.
	FlagSlotLimited Flag = "slot-limited"
	// FlagPersistenceOff: power limits and locked clocks do not survive the
	// driver unloading between clients.
	FlagPersistenceOff Flag = "persistence-off"
)

// LinkLimit names what holds a GPU's host link below what the card itself
// could train to.
type LinkLimit string

const (
	LinkLimitNone  LinkLimit = ""      // nothing, or the inventory cannot tell
	LinkLimitCard  LinkLimit = "card"  // the card itself, e.g. a CMP board's fused gen1 x4
	LinkLimitSlot  LinkLimit = "slot"  // the slot's lanes, its chipset or a BIOS setting
	LinkLimitRiser LinkLimit = "riser" // fewer lanes trained than slot and card both offer
)

// Fit is the largest model, in parameters, that fits one GPU for each kind
// of work. See Assess for the formula.
type Fit struct {
	InferenceFP16Params float64
	InferenceINT8Params float64
	InferenceINT4Params float64
	LoRAParams          float64 // fp16 frozen base + adapters
	QLoRAParams         float64 // 4-bit frozen base + adapters
	FullFineTuneParams  float64 // mixed precision with Adam
}

// Readiness says what one GPU is good for in AI, and why.
type Readiness struct {
	Index int
	UUID  string
	Name  string

	FP16        bool // native half precision (compute capability 6.0+)
	TensorCores bool // 7.0+
	BF16        bool // 8.0+
	TF32        bool // 8.0+
	FP8         bool // 8.9+

	// Link is the link the GPU can use: the max generation (an idle link
	// drops to gen 1 to save power, which says nothing of the slot) at the
	// trained width (which is what a riser cuts).
	Link Link
	// HostLinkGBps is the host link bandwidth per direction in GB/s.
	HostLinkGBps float64
	// GenLimit and WidthLimit say what holds the link's generation and
	// its width down. A riser shows only in the width: it wires fewer
	// lanes than slot and card offer. A riser in an x1 slot reads as the
	// slot, since the slot alone already offers one lane.
	GenLimit   LinkLimit
	WidthLimit LinkLimit
	// LoadSecondsFull is how long filling the whole GPU memory over the host
	// link takes: the cost of loading a model or swapping a job.
	LoadSecondsFull float64

	Fit   Fit
	Use   Use
	Flags []Flag
	// Notes explain the flags and the verdict in words, with their cost.
	Notes []string
}

// Has reports whether the readiness carries a flag.
func (r Readiness) Has(f Flag) bool {
	for _, g := range r.Flags {
		if g == f {
			return true
		}
	}
	return false
}

// Thresholds of the verdict. They are the lines an operator would draw for
// rentals: below them a customer's job runs, but poorly enough to be refunded.
const (
	// TrainingMinMemoryBytes: LoRA of a 7B model in fp16 needs about 16 GiB.
	TrainingMinMemoryBytes = 16 << 30
	// TrainingMinLinkGBps: gen3 x8. Below it, batches and gradients queue on
	// the bus (a 1 GB fp16 gradient takes 4 s per direction at gen1 x1).
	TrainingMinLinkGBps = 7.5
	// InferenceMinMemoryBytes: a 7B model in 4-bit needs about 4 GiB plus
	// the KV cache; 8 GiB is the smallest card worth renting.
	InferenceMinMemoryBytes = 8 << 30
	// ContextReserveBytes is memory the CUDA context, the allocator and
	// fragmentation take before any model.
	ContextReserveBytes = 1 << 30
)

// laneGBps is the PCIe bandwidth per lane per direction in GB/s, by
// generation, after line encoding (8b/10b for gen 1-2, 128b/130b after).
var laneGBps = [...]float64{0, 0.25, 0.5, 0.985, 1.969, 3.938, 7.563}

// LinkGBps returns the bandwidth per direction of a PCIe link in GB/s, or 0
// when the link is unknown.
func LinkGBps(l Link) float64 {
	if l.Gen <= 0 || l.Gen >= len(laneGBps) || l.Width <= 0 {
		return 0
	}
	return laneGBps[l.Gen] * float64(l.Width)
}

// Assess says what a GPU is good for. The memory fit of each kind of work
// is the memory formula (see MemoryNeed) solved for the parameter count
// when activations take their default share (MaxParams):
//
//	params = (MemoryBytes - ContextReserveBytes) * share / bytesPerParam
//
// A healthy GPU goes to training when it has tensor cores, at least
// TrainingMinMemoryBytes and a host link of at least TrainingMinLinkGBps; to
// inference when it has tensor cores and at least InferenceMinMemoryBytes;
// otherwise, and always for CMP cards, to mining.
func Assess(d Device, h Health) Readiness {
	r := Readiness{Index: d.Index, UUID: d.UUID, Name: d.Name}
	cc := d.ComputeCapability
	r.FP16 = cc.AtLeast(6, 0)
	r.TensorCores = cc.AtLeast(7, 0)
	r.BF16 = cc.AtLeast(8, 0)
	r.TF32 = cc.AtLeast(8, 0)
	r.FP8 = cc.AtLeast(8, 9)

	r.Link = Link{Gen: d.LinkMax.Gen, Width: d.LinkCurrent.Width}
	if r.Link.Width == 0 {
		r.Link.Width = d.LinkMax.Width
	}
	if r.Link.Gen == 0 {
		r.Link.Gen = d.LinkCurrent.Gen
	}
	r.HostLinkGBps = LinkGBps(r.Link)
	r.GenLimit, r.WidthLimit = linkLimits(d)
	if r.HostLinkGBps > 0 {
		r.LoadSecondsFull = float64(d.MemoryBytes) / (r.HostLinkGBps * 1e9)
	}

	r.Fit = Fit{
		InferenceFP16Params: MaxParams(d.MemoryBytes, MethodInference, PrecisionFP16),
		InferenceINT8Params: MaxParams(d.MemoryBytes, MethodInference, PrecisionINT8),
		InferenceINT4Params: MaxParams(d.MemoryBytes, MethodInference, PrecisionINT4),
		LoRAParams:          MaxParams(d.MemoryBytes, MethodLoRA, PrecisionFP16),
		QLoRAParams:         MaxParams(d.MemoryBytes, MethodQLoRA, PrecisionINT4),
		FullFineTuneParams:  MaxParams(d.MemoryBytes, MethodFullFineTune, PrecisionFP16),
	}

	flag := func(f Flag, format string, args ...any) {
		r.Flags = append(r.Flags, f)
		r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
	}
	if !h.Healthy {
		flag(FlagUnhealthy, "unhealthy (%s): repair or reset before renting or mining", h.Reason)
	}
	if d.Class == ClassMining {
		flag(FlagCMPThrottled, "CMP mining card: FP32 throughput is throttled in firmware and the bus is capped; AI work runs far below a gaming card of the same chip")
	}
	if r.Link.Width == 1 {
		flag(FlagRiserX1, "x1 link (%s): %.2f GB/s to the host, a sixteenth of a x16 slot; filling %s takes %.0f s",
			widthCause(r.WidthLimit, d), r.HostLinkGBps, bytesText(d.MemoryBytes), r.LoadSecondsFull)
	} else if r.Link.Width > 0 && r.Link.Width < 8 {
		flag(FlagNarrowLink, "x%d link (%s): %.2f GB/s to the host", r.Link.Width, widthCause(r.WidthLimit, d), r.HostLinkGBps)
	}
	if d.LinkMax.Gen == 1 {
		flag(FlagGen1Link, "link cannot train above gen1 (2.5 GT/s), %s: a quarter of gen3's bandwidth per lane", genCause(r.GenLimit))
	}
	if r.GenLimit == LinkLimitSlot {
		host, own := d.LinkMax.Gen, d.LinkMaxGPUGen
		flag(FlagSlotLimited, "the slot allows gen%d, the card gen%d: the link runs at %.0f%% of the card's own speed; set the slot's PCIe generation to its highest in the BIOS (risers may need it lower to stay stable) or move the card",
			host, own, 100*laneGBps[host]/laneGBps[own])
	}
	if r.HostLinkGBps > 0 && r.HostLinkGBps < TrainingMinLinkGBps {
		// A gradient exchange without P2P goes through host memory: up and
		// down the link once each per step.
		flag(FlagBusLimited, "host link %.2f GB/s: exchanging 1 GB of fp16 gradients takes %.1f s per step; data-parallel training is bus-bound",
			r.HostLinkGBps, 2/r.HostLinkGBps)
	}
	if d.ECC != FeatureEnabled {
		flag(FlagNoECC, "no ECC: memory errors go undetected; acceptable for inference and mining, a risk for long training runs")
	}
	if r.TensorCores && !r.BF16 {
		flag(FlagNoBF16, "no bf16 (compute capability %s): mixed precision needs fp16 with loss scaling", cc)
	}
	if d.MemoryBytes < InferenceMinMemoryBytes {
		flag(FlagSmallMemory, "%s of memory: too little for current models", bytesText(d.MemoryBytes))
	}
	if d.Persistence == FeatureDisabled {
		flag(FlagPersistenceOff, "persistence mode off: power limits and clock locks set on this GPU are lost when the driver unloads between clients, and each job start waits for the driver; enable it (nvidia-smi -pm 1, or the nvidia-persistenced service)")
	}

	switch {
	case !h.Healthy:
		r.Use = UseNone
	case d.Class == ClassMining || !r.TensorCores:
		r.Use = UseMining
		r.Notes = append(r.Notes, "keep mining: the card lacks the tensor throughput AI renters pay for")
	case d.MemoryBytes >= TrainingMinMemoryBytes && r.HostLinkGBps >= TrainingMinLinkGBps:
		r.Use = UseTraining
		r.Notes = append(r.Notes, fmt.Sprintf("rent for training: full fine-tune up to %s, LoRA up to %s parameters",
			paramsText(r.Fit.FullFineTuneParams), paramsText(r.Fit.LoRAParams)))
	case d.MemoryBytes >= InferenceMinMemoryBytes:
		r.Use = UseInference
		r.Notes = append(r.Notes, fmt.Sprintf("rent for inference: up to %s parameters at fp16, %s at int4; QLoRA up to %s",
			paramsText(r.Fit.InferenceFP16Params), paramsText(r.Fit.InferenceINT4Params), paramsText(r.Fit.QLoRAParams)))
	default:
		r.Use = UseMining
		r.Notes = append(r.Notes, "keep mining: too little memory for models renters run")
	}
	return r
}

// linkLimits works out what holds the link down from what NVML reports:
// the lower of GPU and host (LinkMax), the GPU's own generation and the
// width trained now.
func linkLimits(d Device) (gen, width LinkLimit) {
	host := d.LinkMaxHostGen
	if host == 0 && d.LinkMax.Gen > 0 && d.LinkMax.Gen < d.LinkMaxGPUGen {
		host = d.LinkMax.Gen // NVML's max is the lower of the two
	}
	switch own := d.LinkMaxGPUGen; {
	case own > 0 && host > 0 && host < own:
		gen = LinkLimitSlot
	case own > 0 && own <= 2:
		gen = LinkLimitCard
	case own == 0 && d.Class == ClassMining && d.LinkMax.Gen > 0 && d.LinkMax.Gen <= 2:
		gen = LinkLimitCard // CMP boards are fused below gen3
	}
	trained, offered := d.LinkCurrent.Width, d.LinkMax.Width
	switch {
	case trained > 0 && offered > 0 && trained < offered:
		width = LinkLimitRiser
	case offered > 0 && offered < 8 && d.Class == ClassMining:
		width = LinkLimitCard
	case offered > 0 && offered < 8:
		width = LinkLimitSlot
	}
	return gen, width
}

// widthCause says in words what narrows the link.
func widthCause(l LinkLimit, d Device) string {
	switch l {
	case LinkLimitRiser:
		return fmt.Sprintf("a riser or a badly seated card: %d of the %d lanes slot and card offer trained", d.LinkCurrent.Width, d.LinkMax.Width)
	case LinkLimitSlot:
		return fmt.Sprintf("the slot offers %d: an x%d slot, or a riser in one", d.LinkMax.Width, d.LinkMax.Width)
	case LinkLimitCard:
		return fmt.Sprintf("the card has %d lanes", d.LinkMax.Width)
	default:
		return "card or slot: the inventory does not tell which"
	}
}

// genCause says in words what holds the generation down.
func genCause(l LinkLimit) string {
	switch l {
	case LinkLimitSlot:
		return "held there by the slot or a BIOS setting"
	case LinkLimitCard:
		return "a limit of the card itself"
	default:
		return "by the card or its slot (this driver does not tell which)"
	}
}

// HostReadiness sums up a node.
type HostReadiness struct {
	Devices             int
	ByUse               map[Use]int
	MemoryBytes         uint64 // all GPUs
	TrainingMemoryBytes uint64 // GPUs fit for training
	// SlowestTrainingLinkGBps is the slowest host link among training GPUs;
	// it paces every data-parallel step.
	SlowestTrainingLinkGBps float64
	// AllReduceSecondsPerGB estimates a ring all-reduce of 1 GB of gradients
	// across all training GPUs through host memory (no NVLink or P2P
	// assumed, as on consumer cards): each GPU moves 2(N-1)/N GB over its
	// link in each direction.
	AllReduceSecondsPerGB float64
	Notes                 []string
}

// AssessHost sums up the readiness of a node's GPUs.
func AssessHost(rs []Readiness, devs []Device) HostReadiness {
	h := HostReadiness{Devices: len(rs), ByUse: map[Use]int{}}
	mem := map[string]uint64{}
	for _, d := range devs {
		mem[d.UUID] = d.MemoryBytes
		h.MemoryBytes += d.MemoryBytes
	}
	n := 0
	slowest := math.Inf(1)
	for _, r := range rs {
		h.ByUse[r.Use]++
		if r.Use != UseTraining {
			continue
		}
		n++
		h.TrainingMemoryBytes += mem[r.UUID]
		slowest = math.Min(slowest, r.HostLinkGBps)
	}
	if n > 0 {
		h.SlowestTrainingLinkGBps = slowest
		if n > 1 && slowest > 0 {
			h.AllReduceSecondsPerGB = 2 * float64(n-1) / float64(n) / slowest
		}
	}
	switch {
	case n == 0:
		h.Notes = append(h.Notes, "no GPU fit for training on this node")
	case n == 1:
		h.Notes = append(h.Notes, "one training GPU: single-GPU fine-tuning only")
	default:
		h.Notes = append(h.Notes, fmt.Sprintf("%d training GPUs, %s in all: data-parallel all-reduce of 1 GB takes about %.2f s",
			n, bytesText(h.TrainingMemoryBytes), h.AllReduceSecondsPerGB))
	}
	return h
}

func bytesText(b uint64) string {
	return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30))
}

// paramsText prints a parameter count the way model cards do: 7.2B, 350M.
func paramsText(p float64) string {
	switch {
	case p >= 1e9:
		return fmt.Sprintf("%.1fB", p/1e9)
	case p >= 1e6:
		return fmt.Sprintf("%.0fM", p/1e6)
	default:
		return fmt.Sprintf("%.0f", p)
	}
}

// Readiness assesses one GPU with its current health.
func (m *Manager) Readiness(uuid string) (Readiness, error) {
	i, err := m.index(uuid)
	if err != nil {
		return Readiness{}, err
	}
	m.mu.RLock()
	d, h := m.devices[i], m.health[i]
	m.mu.RUnlock()
	return Assess(d, h), nil
}

// HostReadiness assesses every GPU of the node and sums them up.
func (m *Manager) HostReadiness() ([]Readiness, HostReadiness) {
	m.mu.RLock()
	devs := append([]Device(nil), m.devices...)
	hs := append([]Health(nil), m.health...)
	m.mu.RUnlock()
	rs := make([]Readiness, len(devs))
	for i, d := range devs {
		rs[i] = Assess(d, hs[i])
	}
	return rs, AssessHost(rs, devs)
}

// Method is how a model uses a GPU, for the memory formula (MemoryNeed).
type Method int

const (
	MethodInference    Method = iota + 1 // serving: the weights and a KV cache
	MethodLoRA                           // the base frozen at its precision, small adapters trained
	MethodQLoRA                          // the base frozen in 4 bits (NF4), small adapters trained
	MethodFullFineTune                   // every weight trained, mixed precision with Adam
)

func (m Method) String() string {
	switch m {
	case MethodInference:
		return "inference"
	case MethodLoRA:
		return "LoRA"
	case MethodQLoRA:
		return "QLoRA"
	case MethodFullFineTune:
		return "full fine-tune"
	}
	return "Method(" + itoa(int(m)) + ")"
}

// Precision is the number format of a model's weights. The zero value is
// half precision, what models are shipped in.
type Precision int

const (
	PrecisionFP16 Precision = iota // fp16 or bf16: 2 bytes a weight
	PrecisionFP32                  // 4 bytes
	PrecisionINT8                  // int8 or fp8: 1 byte
	PrecisionINT4                  // 4-bit (GPTQ, AWQ, NF4): half a byte
)

func (p Precision) String() string {
	switch p {
	case PrecisionFP16:
		return "fp16"
	case PrecisionFP32:
		return "fp32"
	case PrecisionINT8:
		return "int8"
	case PrecisionINT4:
		return "int4"
	}
	return "Precision(" + itoa(int(p)) + ")"
}

func (p Precision) bytes() float64 {
	switch p {
	case PrecisionFP32:
		return 4
	case PrecisionINT8:
		return 1
	case PrecisionINT4:
		return 0.5
	}
	return 2
}

// bytesPerParam is what the model state takes per parameter: the weights
// at their precision for inference and LoRA (the adapters and their
// optimizer are about 1% of the model); NF4 weights plus quantisation
// constants for QLoRA; for a full fine-tune fp16 weights and gradients
// (2+2) and fp32 master weights, Adam momentum and variance (4+4+4), as in
// the ZeRO paper.
func bytesPerParam(m Method, p Precision) float64 {
	switch m {
	case MethodQLoRA:
		return 0.55
	case MethodFullFineTune:
		return 16
	}
	return p.bytes()
}

// share is the part of the memory after the context reserve that the
// model state takes when activations are not worked out: 20% is left for
// the KV cache and activations of inference and of a full fine-tune with
// activation checkpointing, 30% for LoRA and QLoRA.
func share(m Method) float64 {
	if m == MethodLoRA || m == MethodQLoRA {
		return 0.7
	}
	return 0.8
}

// MaxParams is the largest model, in parameters, that one GPU of
// memoryBytes holds for method at precision, activations taking their
// default share: the memory formula of MemoryNeed solved for Params.
// Assess's Fit is this for each kind of work.
func MaxParams(memoryBytes uint64, m Method, p Precision) float64 {
	if memoryBytes <= ContextReserveBytes {
		return 0
	}
	return float64(memoryBytes-ContextReserveBytes) * share(m) / bytesPerParam(m, p)
}

// Defaults of the model shape in MemoryNeed.
const (
	// DefaultVocab is the vocabulary assumed for training logits (Llama 2's).
	DefaultVocab = 32000
	// paramsPerLayerCubed: decoder LLMs have P ≈ 12·L·h² with h ≈ 128·L
	// (7B: 32 layers of 4096; 13B: 40 of 5120), so P ≈ 196,608·L³.
	paramsPerLayerCubed = 12 * 128 * 128
)

// MemoryNeed describes a model and how it runs, for the one memory
// formula of the SDK: readiness uses it for what fits a GPU (MaxParams,
// Assess), the training package for the GPU request of a job and the
// context length of an inference server.
//
// The memory one GPU needs is
//
//	PerGPUBytes = ContextReserveBytes + state + activations
//	state       = Params * bytesPerParam / Shards
//
// with bytesPerParam 2 at fp16 (4 fp32, 1 int8, 0.5 int4) for inference
// and LoRA (the frozen base; adapters and their optimizer are about 1%),
// 0.55 for QLoRA (NF4 weights and quantisation constants), and 16 for a
// full fine-tune (fp16 weights and gradients, fp32 master weights and
// Adam's two moments, as in the ZeRO paper). When SeqLen or Batch is 0,
// activations take the default share, as readiness assumes:
//
//	activations = state * (1/share - 1)     share 0.8, or 0.7 for (Q)LoRA
//
// otherwise, with s = SeqLen, b = Batch, L layers of width h and a
// vocabulary of V,
//
//	inference   (4*L*h*s*b + 34*s*b*h) / Shards
//	            an fp16 KV cache of every layer (2 tensors of 2 bytes)
//	            and one layer's working activations;
//	training    s*b*h*(2*L + 34) + 8*s*b*V
//	            activation checkpointing keeps each layer's fp16 input
//	            (2 bytes), one layer is recomputed at a time (34 bytes per
//	            token and width, Korthikanti et al. 2022, with flash
//	            attention), and the logits and their gradient in fp32.
//
// Grouped-query attention shrinks the real KV cache below this estimate
// (8 times for Llama 2 70B): the formula errs on the safe side.
type MemoryNeed struct {
	// Params is the parameter count, e.g. 7e9.
	Params    float64
	Method    Method
	Precision Precision
	// SeqLen is the tokens of one sequence and Batch the sequences each
	// GPU holds at once (micro-batch). When either is 0, activations take
	// the default share.
	SeqLen int
	Batch  int
	// Layers and Hidden are the model's shape; when 0 they are derived
	// from Params as decoder LLMs are built (P ≈ 12·L·h², h ≈ 128·L).
	Layers int
	Hidden int
	// Vocab is the vocabulary for the training logits; DefaultVocab when 0.
	Vocab int
	// Shards splits the model over GPUs: tensor parallelism for inference
	// (weights and KV cache split), fully sharded data parallelism
	// (ZeRO-3, FSDP) for training (weights, gradients and optimizer state
	// split; each GPU keeps its own activations). 0 or 1: each GPU holds
	// the whole model.
	Shards int
}

// MemoryEstimate is what one GPU needs for a MemoryNeed, by part.
type MemoryEstimate struct {
	PerGPUBytes     uint64 // the sum of the parts
	ReserveBytes    uint64 // CUDA context, allocator, fragmentation
	StateBytes      uint64 // weights and, in training, gradients and optimizer state
	ActivationBytes uint64 // activations, logits and KV cache
	// Layers and Hidden are the shape the activations were worked out for.
	Layers, Hidden int
}

// Validate reports every bad field at once, in an error wrapping ErrInvalid.
func (n MemoryNeed) Validate() error {
	var probs []string
	if !(n.Params > 0) || math.IsInf(n.Params, 0) {
		probs = append(probs, fmt.Sprintf("Params %v: want a parameter count, e.g. 7e9", n.Params))
	}
	if n.Method < MethodInference || n.Method > MethodFullFineTune {
		probs = append(probs, fmt.Sprintf("Method %d: want MethodInference, MethodLoRA, MethodQLoRA or MethodFullFineTune", int(n.Method)))
	}
	if n.Precision < PrecisionFP16 || n.Precision > PrecisionINT4 {
		probs = append(probs, fmt.Sprintf("Precision %d: want PrecisionFP16, PrecisionFP32, PrecisionINT8 or PrecisionINT4", int(n.Precision)))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"SeqLen", n.SeqLen}, {"Batch", n.Batch}, {"Layers", n.Layers}, {"Hidden", n.Hidden}, {"Vocab", n.Vocab}, {"Shards", n.Shards}} {
		if f.v < 0 {
			probs = append(probs, fmt.Sprintf("%s %d: want 0 (the default) or more", f.name, f.v))
		}
	}
	if len(probs) == 0 {
		return nil
	}
	msg := "memory need: " + probs[0]
	for _, p := range probs[1:] {
		msg += "; " + p
	}
	return fmt.Errorf("%w: %s", ErrInvalid, msg)
}

// shape returns the layers and width, derived from Params where not given.
func (n MemoryNeed) shape() (layers, hidden int) {
	layers, hidden = n.Layers, n.Hidden
	switch {
	case layers == 0 && hidden == 0:
		layers = int(math.Round(math.Cbrt(n.Params / paramsPerLayerCubed)))
		layers = max(layers, 1)
		hidden = 128 * layers
	case hidden == 0:
		hidden = max(int(math.Round(math.Sqrt(n.Params/(12*float64(layers))))), 1)
	case layers == 0:
		layers = max(int(math.Round(n.Params/(12*float64(hidden)*float64(hidden)))), 1)
	}
	return layers, hidden
}

func (n MemoryNeed) shards() float64 { return float64(max(n.Shards, 1)) }

// state is the model state on one GPU, in bytes.
func (n MemoryNeed) state() float64 {
	return n.Params * bytesPerParam(n.Method, n.Precision) / n.shards()
}

// perToken is the activation bytes one more token of sequence adds on one
// GPU at the need's batch (at least 1).
func (n MemoryNeed) perToken(layers, hidden int) float64 {
	b, L, h := float64(max(n.Batch, 1)), float64(layers), float64(hidden)
	if n.Method == MethodInference {
		return (4*L*h + 34*h) * b / n.shards()
	}
	v := float64(n.Vocab)
	if v == 0 {
		v = DefaultVocab
	}
	return (h*(2*L+34) + 8*v) * b
}

// Estimate works out what one GPU needs, by the formula in MemoryNeed's
// documentation.
func (n MemoryNeed) Estimate() (MemoryEstimate, error) {
	if err := n.Validate(); err != nil {
		return MemoryEstimate{}, err
	}
	layers, hidden := n.shape()
	state := n.state()
	var act float64
	if n.SeqLen == 0 || n.Batch == 0 {
		act = state * (1/share(n.Method) - 1)
	} else {
		act = float64(n.SeqLen) * n.perToken(layers, hidden)
	}
	e := MemoryEstimate{
		ReserveBytes: ContextReserveBytes, StateBytes: uint64(math.Ceil(state)),
		ActivationBytes: uint64(math.Ceil(act)), Layers: layers, Hidden: hidden,
	}
	e.PerGPUBytes = e.ReserveBytes + e.StateBytes + e.ActivationBytes
	return e, nil
}

// MaxSeqLen is the longest SeqLen at the need's Batch (at least 1) whose
// estimate fits in memoryBytes, or 0 when not even the model state fits:
// the same formula solved for SeqLen. An inference server's maximum
// context length is this for the memory it may use.
func (n MemoryNeed) MaxSeqLen(memoryBytes uint64) (int, error) {
	if err := n.Validate(); err != nil {
		return 0, err
	}
	layers, hidden := n.shape()
	left := float64(memoryBytes) - ContextReserveBytes - math.Ceil(n.state())
	if left <= 0 {
		return 0, nil
	}
	return int(left / n.perToken(layers, hidden)), nil
}
