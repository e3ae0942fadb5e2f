package gpu_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu"
)

var healthy = gpu.Health{Healthy: true}

// TestAssessRealCards assesses the cards of real nvidia-smi dumps. Several
// were captured idle, with the link dropped to gen 1 at x16 by power saving:
// that must not read as a riser or a gen1 slot.
func TestAssessRealCards(t *testing.T) {
	tests := []struct {
		file     string
		devices  int
		use      gpu.Use
		flags    []gpu.Flag
		notFlags []gpu.Flag
		linkGBps float64
	}{
		{"a40_x10_driver550.127.05.txt", 10, gpu.UseTraining, nil,
			[]gpu.Flag{gpu.FlagGen1Link, gpu.FlagRiserX1, gpu.FlagBusLimited, gpu.FlagNoECC, gpu.FlagPersistenceOff}, 31.5},
		{"rtx3090_x2_driver560.35.03.txt", 2, gpu.UseTraining, []gpu.Flag{gpu.FlagNoECC},
			[]gpu.Flag{gpu.FlagGen1Link, gpu.FlagRiserX1, gpu.FlagBusLimited, gpu.FlagPersistenceOff}, 31.5},
		// The host allows gen5, the A100 gen4: the card is the lower one,
		// which is no limit of the slot.
		{"a100-sxm4-80gb_x4_driver555.42.02.txt", 4, gpu.UseTraining, nil, []gpu.Flag{gpu.FlagNoECC, gpu.FlagBusLimited}, 31.5},
		{"h100-sxm5-80gb-hbm3_x8_driver565.57.01.txt", 8, gpu.UseTraining, nil, []gpu.Flag{gpu.FlagNoECC}, 63},
		{"h100-nvl_x2_driver550.54.14.txt", 2, gpu.UseTraining, nil, nil, 63},
		// Consumer cards as shipped: persistence mode off.
		{"rtx3080_driver550.54.14.txt", 1, gpu.UseInference, []gpu.Flag{gpu.FlagNoECC, gpu.FlagPersistenceOff}, []gpu.Flag{gpu.FlagBusLimited}, 31.5},
		{"rtx3070_driver550.54.14.txt", 1, gpu.UseInference, []gpu.Flag{gpu.FlagNoECC, gpu.FlagPersistenceOff}, nil, 31.5},
		{"gtx1050ti_driver535.161.07_power-draw-NA.txt", 1, gpu.UseMining, []gpu.Flag{gpu.FlagSmallMemory, gpu.FlagPersistenceOff}, nil, 15.76},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			devs := smiDevices(t, filepath.Join("testdata", "nvidia-smi", tt.file))
			require.Len(t, devs, tt.devices)
			for _, d := range devs {
				r := gpu.Assess(d, healthy)
				assert.Equal(t, tt.use, r.Use, "%s: %v", d.Name, r.Notes)
				for _, f := range tt.flags {
					assert.True(t, r.Has(f), "%s: want flag %s, got %v", d.Name, f, r.Flags)
				}
				for _, f := range append([]gpu.Flag{gpu.FlagSlotLimited}, tt.notFlags...) {
					assert.False(t, r.Has(f), "%s: unwanted flag %s: %v", d.Name, f, r.Notes)
				}
				assert.InDelta(t, tt.linkGBps, r.HostLinkGBps, 0.1, "%s: link %v", d.Name, r.Link)
				// Every card sits in a slot as good as itself: nothing
				// holds its link down, idle gen 1 included.
				assert.Equal(t, gpu.LinkLimitNone, r.GenLimit, "%s: %v", d.Name, r.Notes)
				assert.Equal(t, gpu.LinkLimitNone, r.WidthLimit, "%s: %v", d.Name, r.Notes)
				assert.Positive(t, d.LinkMaxGPUGen, "%s: the dump names the card's own generation", d.Name)
				assert.True(t, d.ReservedMemoryBytes.Valid, "%s: reserved memory", d.Name)
			}
		})
	}
	rtx := smiDevices(t, filepath.Join("testdata", "nvidia-smi", "rtx3080_driver550.54.14.txt"))[0]
	assert.Equal(t, gpu.Some[uint64](239<<20), rtx.ReservedMemoryBytes, "an idle RTX 3080 has 239 MiB reserved, not used")
}

// TestLinkLimits: readiness names what holds a link down, since the fix
// differs: a BIOS setting or another slot for the slot, another riser for
// the riser, nothing for a CMP board.
func TestLinkLimits(t *testing.T) {
	rtx := func(max, cur gpu.Link, own, host int) gpu.Device {
		return gpu.Device{Name: "NVIDIA GeForce RTX 3080", Class: gpu.ClassConsumer, ComputeCapability: gpu.ComputeCapability{8, 6},
			MemoryBytes: 10 << 30, LinkMax: max, LinkCurrent: cur, LinkMaxGPUGen: own, LinkMaxHostGen: host}
	}
	cmp := func(own int) gpu.Device {
		return gpu.Device{Name: "NVIDIA Graphics Device", Class: gpu.ClassMining, ComputeCapability: gpu.ComputeCapability{8, 0},
			MemoryBytes: 8 << 30, LinkMax: gpu.Link{Gen: 1, Width: 4}, LinkCurrent: gpu.Link{Gen: 1, Width: 4}, LinkMaxGPUGen: own}
	}
	tests := []struct {
		name       string
		dev        gpu.Device
		gen, width gpu.LinkLimit
		flags      []gpu.Flag
		notFlags   []gpu.Flag
		notes      []string
	}{
		{"USB riser in an x16 slot, BIOS at gen1", rtx(gpu.Link{Gen: 1, Width: 16}, gpu.Link{Gen: 1, Width: 1}, 4, 0),
			gpu.LinkLimitSlot, gpu.LinkLimitRiser,
			[]gpu.Flag{gpu.FlagRiserX1, gpu.FlagGen1Link, gpu.FlagSlotLimited, gpu.FlagBusLimited}, nil,
			[]string{"a riser or a badly seated card: 1 of the 16 lanes", "the slot allows gen1, the card gen4", "13% of the card's own speed", "BIOS"}},
		{"riser in an x1 slot: NVML sees the slot", rtx(gpu.Link{Gen: 1, Width: 1}, gpu.Link{Gen: 1, Width: 1}, 4, 1),
			gpu.LinkLimitSlot, gpu.LinkLimitSlot,
			[]gpu.Flag{gpu.FlagRiserX1, gpu.FlagGen1Link, gpu.FlagSlotLimited}, nil,
			[]string{"the slot offers 1: an x1 slot, or a riser in one", "held there by the slot or a BIOS setting"}},
		{"old driver: the card's own generation unknown", rtx(gpu.Link{Gen: 1, Width: 16}, gpu.Link{Gen: 1, Width: 1}, 0, 0),
			gpu.LinkLimitNone, gpu.LinkLimitRiser,
			[]gpu.Flag{gpu.FlagRiserX1, gpu.FlagGen1Link}, []gpu.Flag{gpu.FlagSlotLimited},
			[]string{"by the card or its slot (this driver does not tell which)"}},
		{"gen3 slot holds a gen4 card, idle at gen1", rtx(gpu.Link{Gen: 3, Width: 16}, gpu.Link{Gen: 1, Width: 16}, 4, 0),
			gpu.LinkLimitSlot, gpu.LinkLimitNone,
			[]gpu.Flag{gpu.FlagSlotLimited}, []gpu.Flag{gpu.FlagGen1Link, gpu.FlagRiserX1, gpu.FlagNarrowLink, gpu.FlagBusLimited},
			[]string{"the slot allows gen3, the card gen4: the link runs at 50%"}},
		{"x4 slot", rtx(gpu.Link{Gen: 4, Width: 4}, gpu.Link{Gen: 4, Width: 4}, 4, 0),
			gpu.LinkLimitNone, gpu.LinkLimitSlot,
			[]gpu.Flag{gpu.FlagNarrowLink}, []gpu.Flag{gpu.FlagSlotLimited, gpu.FlagGen1Link},
			[]string{"x4 link (the slot offers 4: an x4 slot, or a riser in one)"}},
		{"CMP 170HX: fused gen1 x4", cmp(1), gpu.LinkLimitCard, gpu.LinkLimitCard,
			[]gpu.Flag{gpu.FlagNarrowLink, gpu.FlagGen1Link, gpu.FlagCMPThrottled}, []gpu.Flag{gpu.FlagSlotLimited},
			[]string{"the card has 4 lanes", "a limit of the card itself"}},
		{"CMP 170HX on a driver without the card's own generation", cmp(0), gpu.LinkLimitCard, gpu.LinkLimitCard,
			[]gpu.Flag{gpu.FlagNarrowLink, gpu.FlagGen1Link}, []gpu.Flag{gpu.FlagSlotLimited}, nil},
		{"A100 SXM: host gen5, card gen4", gpu.Device{Class: gpu.ClassDatacenter, ComputeCapability: gpu.ComputeCapability{8, 0}, MemoryBytes: 80 << 30,
			LinkMax: gpu.Link{Gen: 4, Width: 16}, LinkCurrent: gpu.Link{Gen: 4, Width: 16}, LinkMaxGPUGen: 4},
			gpu.LinkLimitNone, gpu.LinkLimitNone, nil, []gpu.Flag{gpu.FlagSlotLimited, gpu.FlagNarrowLink}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gpu.Assess(tt.dev, healthy)
			assert.Equal(t, tt.gen, r.GenLimit, "generation held by: %v", r.Notes)
			assert.Equal(t, tt.width, r.WidthLimit, "width held by: %v", r.Notes)
			for _, f := range tt.flags {
				assert.True(t, r.Has(f), "want flag %s: %v", f, r.Notes)
			}
			for _, f := range tt.notFlags {
				assert.False(t, r.Has(f), "unwanted flag %s: %v", f, r.Notes)
			}
			all := strings.Join(r.Notes, "\n")
			for _, n := range tt.notes {
				assert.Contains(t, all, n)
			}
			assert.Len(t, r.Notes, len(r.Flags)+1, "every flag and the verdict are explained")
		})
	}
}

func TestPersistenceFlag(t *testing.T) {
	tests := []struct {
		mode gpu.Feature
		want bool
	}{
		{gpu.FeatureDisabled, true},
		{gpu.FeatureEnabled, false},
		{gpu.FeatureUnsupported, false}, // Windows, or a backend that cannot tell
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			r := gpu.Assess(gpu.Device{ComputeCapability: gpu.ComputeCapability{8, 6}, MemoryBytes: 24 << 30, Persistence: tt.mode}, healthy)
			assert.Equal(t, tt.want, r.Has(gpu.FlagPersistenceOff))
			if tt.want {
				assert.Contains(t, strings.Join(r.Notes, "\n"), "nvidia-smi -pm 1", "the note says how to fix it")
			}
		})
	}
}

func TestAssessMiningCards(t *testing.T) {
	rtx3080 := gpu.Device{
		Name: "NVIDIA GeForce RTX 3080", Class: gpu.ClassConsumer, ComputeCapability: gpu.ComputeCapability{8, 6},
		MemoryBytes: 10 << 30, LinkMax: gpu.Link{Gen: 1, Width: 16}, LinkCurrent: gpu.Link{Gen: 1, Width: 1},
	}
	cmp := gpu.Device{
		Name: "NVIDIA CMP 170HX", Class: gpu.ClassMining, ComputeCapability: gpu.ComputeCapability{8, 0},
		MemoryBytes: 8 << 30, LinkMax: gpu.Link{Gen: 1, Width: 4}, LinkCurrent: gpu.Link{Gen: 1, Width: 4},
	}
	rtx3090 := gpu.Device{
		Name: "NVIDIA GeForce RTX 3090", Class: gpu.ClassConsumer, ComputeCapability: gpu.ComputeCapability{8, 6},
		MemoryBytes: 24 << 30, LinkMax: gpu.Link{Gen: 3, Width: 16}, LinkCurrent: gpu.Link{Gen: 3, Width: 1},
	}
	tests := []struct {
		name  string
		dev   gpu.Device
		h     gpu.Health
		use   gpu.Use
		flags []gpu.Flag
		gbps  float64
	}{
		{"3080 on gen1 x1 riser", rtx3080, healthy, gpu.UseInference,
			[]gpu.Flag{gpu.FlagRiserX1, gpu.FlagGen1Link, gpu.FlagBusLimited, gpu.FlagNoECC}, 0.25},
		{"CMP 170HX gen1 x4", cmp, healthy, gpu.UseMining,
			[]gpu.Flag{gpu.FlagCMPThrottled, gpu.FlagNarrowLink, gpu.FlagGen1Link, gpu.FlagBusLimited, gpu.FlagNoECC}, 1.0},
		{"24 GiB 3090 on a gen3 x1 riser is not a training card", rtx3090, healthy, gpu.UseInference,
			[]gpu.Flag{gpu.FlagRiserX1, gpu.FlagBusLimited, gpu.FlagNoECC}, 0.985},
		{"lost device", rtx3090, gpu.Health{Reason: "xid 79"}, gpu.UseNone,
			[]gpu.Flag{gpu.FlagUnhealthy, gpu.FlagRiserX1, gpu.FlagBusLimited, gpu.FlagNoECC}, 0.985},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gpu.Assess(tt.dev, tt.h)
			assert.Equal(t, tt.use, r.Use, "%v", r.Notes)
			assert.ElementsMatch(t, tt.flags, r.Flags, "%v", r.Notes)
			assert.InDelta(t, tt.gbps, r.HostLinkGBps, 0.01)
			assert.Len(t, r.Notes, len(r.Flags)+boolInt(tt.use != gpu.UseNone), "every flag and the verdict are explained")
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestFitFormula(t *testing.T) {
	// 10 GiB card: 9 GiB usable after the context reserve.
	r := gpu.Assess(gpu.Device{MemoryBytes: 10 << 30, ComputeCapability: gpu.ComputeCapability{8, 6}}, healthy)
	usable := float64(9 << 30)
	assert.InDelta(t, usable*0.8/2, r.Fit.InferenceFP16Params, 1)
	assert.InDelta(t, usable*0.8, r.Fit.InferenceINT8Params, 1)
	assert.InDelta(t, usable*1.6, r.Fit.InferenceINT4Params, 1)
	assert.InDelta(t, usable*0.7/2, r.Fit.LoRAParams, 1)
	assert.InDelta(t, usable*0.7/0.55, r.Fit.QLoRAParams, 1)
	assert.InDelta(t, usable*0.8/16, r.Fit.FullFineTuneParams, 1)
	// Sanity against common knowledge: a 7B model runs at int4 but not at
	// fp16 on a 10 GiB card; an 80 GiB card fully fine-tunes about 4B.
	assert.Greater(t, r.Fit.InferenceINT4Params, 7e9)
	assert.Less(t, r.Fit.InferenceFP16Params, 7e9)
	h100 := gpu.Assess(gpu.Device{MemoryBytes: 80 << 30, ComputeCapability: gpu.ComputeCapability{9, 0}}, healthy)
	assert.InDelta(t, 4.2e9, h100.Fit.FullFineTuneParams, 0.1e9)
	assert.True(t, h100.FP8 && h100.BF16 && h100.TF32)
}

func TestPrecisionFromComputeCapability(t *testing.T) {
	tests := []struct {
		cc                            gpu.ComputeCapability
		fp16, tensor, bf16, tf32, fp8 bool
	}{
		{gpu.ComputeCapability{6, 1}, true, false, false, false, false},
		{gpu.ComputeCapability{7, 0}, true, true, false, false, false},
		{gpu.ComputeCapability{7, 5}, true, true, false, false, false},
		{gpu.ComputeCapability{8, 0}, true, true, true, true, false},
		{gpu.ComputeCapability{8, 9}, true, true, true, true, true},
		{gpu.ComputeCapability{9, 0}, true, true, true, true, true},
	}
	for _, tt := range tests {
		r := gpu.Assess(gpu.Device{ComputeCapability: tt.cc}, healthy)
		assert.Equal(t, [5]bool{tt.fp16, tt.tensor, tt.bf16, tt.tf32, tt.fp8},
			[5]bool{r.FP16, r.TensorCores, r.BF16, r.TF32, r.FP8}, "cc %s", tt.cc)
	}
}

func TestAssessHost(t *testing.T) {
	devs := smiDevices(t, filepath.Join("testdata", "nvidia-smi", "a40_x10_driver550.127.05.txt"))
	var rs []gpu.Readiness
	for _, d := range devs {
		rs = append(rs, gpu.Assess(d, healthy))
	}
	h := gpu.AssessHost(rs, devs)
	assert.Equal(t, 10, h.ByUse[gpu.UseTraining])
	assert.InDelta(t, 31.5, h.SlowestTrainingLinkGBps, 0.1)
	// Ring all-reduce: 2(N-1)/N GB over the slowest link.
	assert.InDelta(t, 2*9.0/10/31.504, h.AllReduceSecondsPerGB, 0.001)
}

func TestNormalizePCIBusID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"00000000:0A:00.0", "0000:0a:00.0"},
		{"0000:4f:00.0", "0000:4f:00.0"},
		{"0A:00.0", "0000:0a:00.0"},
		{"00000001:C1:1F.7\x00\x00", "0001:c1:1f.7"},
	}
	for _, tt := range tests {
		got, err := gpu.NormalizePCIBusID(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got)
	}
	for _, bad := range []string{"", "0a", "0000:zz:00.0", "0000:0a:00", "0000:0a:20.0", "1:2:3:4"} {
		_, err := gpu.NormalizePCIBusID(bad)
		assert.ErrorIs(t, err, gpu.ErrInvalid, "%q", bad)
	}
}

// TestMemoryNeedIsReadinessFormula: readiness's fit and the memory need are
// one formula: the largest model readiness admits needs exactly the card.
func TestMemoryNeedIsReadinessFormula(t *testing.T) {
	for _, mem := range []uint64{10 << 30, 24 << 30, 48 << 30, 80 << 30} {
		for _, c := range []struct {
			m gpu.Method
			p gpu.Precision
		}{
			{gpu.MethodInference, gpu.PrecisionFP16}, {gpu.MethodInference, gpu.PrecisionINT4},
			{gpu.MethodLoRA, gpu.PrecisionFP16}, {gpu.MethodQLoRA, gpu.PrecisionINT4}, {gpu.MethodFullFineTune, gpu.PrecisionFP16},
		} {
			p := gpu.MaxParams(mem, c.m, c.p)
			e, err := gpu.MemoryNeed{Params: p, Method: c.m, Precision: c.p}.Estimate()
			require.NoError(t, err)
			assert.InDelta(t, float64(mem), float64(e.PerGPUBytes), 2, "%s %s on %d GiB", c.m, c.p, mem>>30)
		}
	}
	r := gpu.Assess(gpu.Device{MemoryBytes: 24 << 30, ComputeCapability: gpu.ComputeCapability{8, 6}}, healthy)
	assert.Equal(t, gpu.MaxParams(24<<30, gpu.MethodQLoRA, gpu.PrecisionINT4), r.Fit.QLoRAParams)
}

// TestMemoryEstimates checks the formula against what practitioners
// report for Llama-class models.
func TestMemoryEstimates(t *testing.T) {
	const gb = 1e9
	tests := []struct {
		name           string
		need           gpu.MemoryNeed
		layers, hidden int
		state, act     float64 // bytes
	}{
		// 7B in fp16: 14 GB of weights; an fp16 KV cache of 4096 tokens
		// is about 2 GB (Llama 2 7B: 2.1 GB).
		{"7B inference 4k", gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodInference, SeqLen: 4096, Batch: 1}, 33, 4224,
			14 * gb, 4*33*4224*4096 + 34*4096*4224},
		// Split over 2 GPUs by tensor parallelism: half of each.
		{"7B inference 4k TP2", gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodInference, SeqLen: 4096, Batch: 1, Shards: 2}, 33, 4224,
			7 * gb, (4*33*4224*4096 + 34*4096*4224) / 2},
		// Full fine-tune with Adam: 16 bytes a parameter, 112 GB for 7B.
		{"7B full fine-tune default share", gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodFullFineTune}, 33, 4224, 112 * gb, 28 * gb},
		// ZeRO-3 over 8 GPUs: 14 GB of state each.
		{"7B full fine-tune ZeRO-3 x8", gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodFullFineTune, Shards: 8, SeqLen: 2048, Batch: 1}, 33, 4224,
			14 * gb, 2048 * (4224*(2*33+34) + 8*32000)},
		{"13B QLoRA given shape", gpu.MemoryNeed{Params: 13e9, Method: gpu.MethodQLoRA, Precision: gpu.PrecisionINT4, SeqLen: 1024, Batch: 2, Layers: 40, Hidden: 5120, Vocab: 32000}, 40, 5120,
			13e9 * 0.55, 1024 * 2 * (5120*(2*40+34) + 8*32000)},
		{"70B int4 inference", gpu.MemoryNeed{Params: 70e9, Method: gpu.MethodInference, Precision: gpu.PrecisionINT4}, 71, 9088, 35 * gb, 35 * gb / 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := tt.need.Estimate()
			require.NoError(t, err)
			assert.Equal(t, tt.layers, e.Layers)
			assert.Equal(t, tt.hidden, e.Hidden)
			assert.InDelta(t, tt.state, float64(e.StateBytes), 1)
			assert.InDelta(t, tt.act, float64(e.ActivationBytes), 1)
			assert.Equal(t, e.ReserveBytes+e.StateBytes+e.ActivationBytes, e.PerGPUBytes)
			assert.Equal(t, uint64(gpu.ContextReserveBytes), e.ReserveBytes)
		})
	}
	// A 7B LoRA at 2048 tokens and batch 4 needs about 20 GB: a 24 GB
	// card, not a 16 GB one.
	e, _ := gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodLoRA, SeqLen: 2048, Batch: 4}.Estimate()
	assert.Greater(t, e.PerGPUBytes, uint64(16<<30))
	assert.Less(t, e.PerGPUBytes, uint64(24<<30))
}

// TestMaxSeqLen: the longest context that fits is the formula solved for
// SeqLen: one token more does not fit.
func TestMaxSeqLen(t *testing.T) {
	need := gpu.MemoryNeed{Params: 7e9, Method: gpu.MethodInference, Batch: 1}
	budget := uint64(24<<30) * 9 / 10 // vLLM's default share of an RTX 3090
	n, err := need.MaxSeqLen(budget)
	require.NoError(t, err)
	assert.Greater(t, n, 8192, "a 7B model in fp16 on a 24 GiB card serves long contexts")
	need.SeqLen = n
	e, _ := need.Estimate()
	assert.LessOrEqual(t, e.PerGPUBytes, budget)
	need.SeqLen = n + 1
	e, _ = need.Estimate()
	assert.Greater(t, e.PerGPUBytes, budget)

	n, err = gpu.MemoryNeed{Params: 13e9, Method: gpu.MethodInference}.MaxSeqLen(10 << 30)
	require.NoError(t, err)
	assert.Zero(t, n, "13B in fp16 (26 GB) does not fit a 10 GiB card at all")
}

func TestMemoryNeedRejectsBadInput(t *testing.T) {
	_, err := gpu.MemoryNeed{Params: -1, Method: 9, Precision: 7, SeqLen: -2, Shards: -1}.Estimate()
	require.ErrorIs(t, err, gpu.ErrInvalid)
	for _, want := range []string{"Params -1", "Method 9", "Precision 7", "SeqLen -2", "Shards -1"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = gpu.MemoryNeed{Method: gpu.MethodLoRA}.MaxSeqLen(1 << 30)
	require.ErrorIs(t, err, gpu.ErrInvalid)
	assert.Equal(t, "full fine-tune", gpu.MethodFullFineTune.String())
	assert.Equal(t, "int4", gpu.PrecisionINT4.String())
}
