//go:build cgo

package nvml

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
)

// spec describes a mock GPU. Zero values mean "the card does not support
// it": the mock answers ERROR_NOT_SUPPORTED, as NVML does on such boards.
type spec struct {
	name        string
	brand       gonvml.BrandType
	arch        gonvml.DeviceArchitecture
	ccMajor     int
	ccMinor     int
	memoryBytes uint64
	serial      string // "" -> NOT_SUPPORTED (GeForce, CMP: no inforom)
	vbios       string
	pciDeviceID uint32 // device<<16 | 0x10de
	busID       string // NVML's form, e.g. "00000000:0A:00.0"; "" leaves BusId empty
	bus         uint32 // PciInfo.Bus
	linkGen     int    // current
	linkWidth   int
	maxGen      int // lower of device and system
	maxWidth    int
	gpuGen      int // the GPU's own max generation
	persistence bool
	reserved    uint64 // bytes the driver sets aside
	// Power in mW; minMW == 0 means no power management.
	powerMW, minMW, maxMW, defaultMW uint32
	energy                           bool // total energy counter supported
	ecc                              bool // ECC supported (and enabled)
	mig                              bool // MIG capable (starts disabled)
	fan                              bool
	tempC                            uint32
	clockLock                        bool
}

// state is what a mock GPU changes while the test runs. Fields are atomic:
// Sample reads them on the backend's goroutine while the test writes.
type state struct {
	limitMW     atomic.Uint32
	energyMJ    atomic.Uint64
	migMode     atomic.Int32
	memUsed     atomic.Uint64
	lockedMin   atomic.Uint32
	lockedMax   atomic.Uint32
	registered  atomic.Uint64 // event mask registered
	lost        atomic.Bool   // every call answers GPU_IS_LOST
	migPending  atomic.Bool   // SetMigMode's activation stays pending
	minor       atomic.Int32  // the /dev/nvidiaN number
	persistence atomic.Bool
	procs       []gonvml.ProcessInfo // compute
	graphics    []gonvml.ProcessInfo
	mps         []gonvml.ProcessInfo
	hangPower   chan struct{} // when set, GetPowerUsage blocks until it is closed
	hangMu      sync.Mutex
	hangStarted chan struct{} // closed when GetPowerUsage starts blocking
	stuck       chan struct{} // when set, every GetPowerUsage blocks until it is closed
}

func (st *state) hang() (release func(), started <-chan struct{}) {
	st.hangMu.Lock()
	defer st.hangMu.Unlock()
	st.hangPower = make(chan struct{})
	st.hangStarted = make(chan struct{})
	ch := st.hangPower
	return func() { close(ch) }, st.hangStarted
}

// stick makes every GetPowerUsage block, as a wedged GPU makes the driver
// block, until release is called.
func (st *state) stick() (release func()) {
	ch := make(chan struct{})
	st.hangMu.Lock()
	st.stuck = ch
	st.hangMu.Unlock()
	return sync.OnceFunc(func() {
		st.hangMu.Lock()
		st.stuck = nil
		st.hangMu.Unlock()
		close(ch)
	})
}

func (st *state) blockIfHung() {
	st.hangMu.Lock()
	ch, started, stuck := st.hangPower, st.hangStarted, st.stuck
	st.hangPower, st.hangStarted = nil, nil
	st.hangMu.Unlock()
	if ch != nil {
		close(started)
		<-ch
	}
	if stuck != nil {
		<-stuck
	}
}

// gpuMock is one mock GPU with its spec and state.
type gpuMock struct {
	*mock.Device
	// handle is what the library hands out for this GPU, and so what its
	// events carry: the mock.Device itself, or dgxa100's Device around it.
	handle gonvml.Device
	spec   spec
	state  *state
	uuid   string
}

func ns[T any]() (T, gonvml.Return) {
	var zero T
	return zero, gonvml.ERROR_NOT_SUPPORTED
}

// rtx3080 is an RTX 3080 10 GiB on a USB x1 riser in an x16 slot the BIOS
// holds at gen 1: no serial, no ECC, no energy counter, persistence mode
// off, 239 MiB reserved (values from the rtx3080 nvidia-smi fixture,
// driver 550.54.14). NVML's max is the lower of GPU and slot, so it reads
// gen 1 (the slot) at x16 (slot and card); only the current width shows
// the riser's single lane, and only the GPU's own max shows it is gen 4.
func rtx3080(bus uint32) spec {
	return spec{
		name: "NVIDIA GeForce RTX 3080", brand: gonvml.BRAND_GEFORCE, arch: gonvml.DEVICE_ARCH_AMPERE,
		ccMajor: 8, ccMinor: 6, memoryBytes: 10240 << 20, vbios: "94.02.71.40.8A",
		pciDeviceID: 0x221610de, busID: fmt.Sprintf("00000000:%02X:00.0", bus), bus: bus,
		linkGen: 1, linkWidth: 1, maxGen: 1, maxWidth: 16, gpuGen: 4, reserved: 239 << 20,
		powerMW: 98_990, minMW: 100_000, maxMW: 350_000, defaultMW: 320_000,
		fan: true, tempC: 61, clockLock: true,
	}
}

// cmp170hx is a CMP 170HX mining board: GA100 silicon fused to gen1 x4,
// 8 GiB, a 250 W limit that cannot be changed, and the generic name some
// drivers give it.
func cmp170hx(bus uint32) spec {
	return spec{
		name: "NVIDIA Graphics Device", brand: gonvml.BRAND_NVIDIA, arch: gonvml.DEVICE_ARCH_AMPERE,
		ccMajor: 8, ccMinor: 0, memoryBytes: 8 << 30, vbios: "92.00.3A.00.01",
		pciDeviceID: 0x20c210de, busID: fmt.Sprintf("00000000:%02X:00.0", bus), bus: bus,
		linkGen: 1, linkWidth: 4, maxGen: 1, maxWidth: 4, gpuGen: 1,
		powerMW: 180_000, minMW: 250_000, maxMW: 250_000, defaultMW: 250_000,
		energy: true, fan: true, tempC: 55, clockLock: true,
	}
}

// a40 is an NVIDIA A40 (values from the a40 nvidia-smi fixture): ECC on, a
// serial, gen4 x16, 100-300 W, persistence on, 665 MiB reserved, passively
// cooled (no fan reading).
func a40(bus uint32) spec {
	return spec{
		name: "NVIDIA A40", brand: gonvml.BRAND_NVIDIA, arch: gonvml.DEVICE_ARCH_AMPERE,
		ccMajor: 8, ccMinor: 6, memoryBytes: 46068 << 20, serial: "1322221017584", vbios: "94.02.5C.00.03",
		pciDeviceID: 0x223510de, busID: fmt.Sprintf("00000000:%02X:00.0", bus), bus: bus,
		linkGen: 4, linkWidth: 16, maxGen: 4, maxWidth: 16, gpuGen: 4, persistence: true, reserved: 665 << 20,
		powerMW: 29_700, minMW: 100_000, maxMW: 300_000, defaultMW: 300_000,
		energy: true, ecc: true, tempC: 34, clockLock: true,
	}
}

// h100 is an H100 SXM5 80 GB (values from the h100-sxm5 nvidia-smi
// fixture): Hopper, CC 9.0, gen5 x16, 200-700 W, MIG capable, persistence
// on, 454 MiB reserved.
func h100(bus uint32) spec {
	return spec{
		name: "NVIDIA H100 80GB HBM3", brand: gonvml.BRAND_NVIDIA, arch: gonvml.DEVICE_ARCH_HOPPER,
		ccMajor: 9, ccMinor: 0, memoryBytes: 81559 << 20, serial: "1654423001593", vbios: "96.00.74.00.01",
		pciDeviceID: 0x233010de, busID: fmt.Sprintf("00000000:%02X:00.0", bus), bus: bus,
		linkGen: 5, linkWidth: 16, maxGen: 5, maxWidth: 16, gpuGen: 5, persistence: true, reserved: 454 << 20,
		powerMW: 100_890, minMW: 200_000, maxMW: 700_000, defaultMW: 700_000,
		energy: true, ecc: true, mig: true, tempC: 30, clockLock: true,
	}
}

// newGPU builds a hand-made mock GPU from s.
func newGPU(index int, s spec) *gpuMock {
	g := &gpuMock{Device: &mock.Device{}, spec: s, state: &state{}, uuid: fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", index+1, s.pciDeviceID)}
	g.handle = g.Device
	d := g.Device
	d.GetUUIDFunc = func() (string, gonvml.Return) { return g.uuid, g.ret() }
	d.GetNameFunc = func() (string, gonvml.Return) { return s.name, g.ret() }
	d.GetBrandFunc = func() (gonvml.BrandType, gonvml.Return) { return s.brand, g.ret() }
	d.GetArchitectureFunc = func() (gonvml.DeviceArchitecture, gonvml.Return) { return s.arch, g.ret() }
	d.GetCudaComputeCapabilityFunc = func() (int, int, gonvml.Return) { return s.ccMajor, s.ccMinor, g.ret() }
	g.state.minor.Store(int32(index))
	d.GetMinorNumberFunc = func() (int, gonvml.Return) { return int(g.state.minor.Load()), g.ret() }
	d.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) {
		p := gonvml.PciInfo{Bus: s.bus, PciDeviceId: s.pciDeviceID}
		for i := 0; i < len(s.busID) && i < len(p.BusId)-1; i++ {
			p.BusId[i] = s.busID[i] // element-wise: BusId is [32]uint8 here, [32]int8 in later go-nvml
		}
		return p, g.ret()
	}
	d.GetMigModeFunc = func() (int, int, gonvml.Return) {
		if !s.mig {
			return 0, 0, gonvml.ERROR_NOT_SUPPORTED
		}
		m := int(g.state.migMode.Load())
		return m, m, g.ret()
	}
	d.SetMigModeFunc = func(mode int) (gonvml.Return, gonvml.Return) {
		if !s.mig {
			return gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_NOT_SUPPORTED
		}
		g.state.migMode.Store(int32(mode))
		if g.state.migPending.Load() {
			return gonvml.ERROR_IN_USE, gonvml.SUCCESS
		}
		return gonvml.SUCCESS, g.ret()
	}
	extend(index, d, s, g.state, g.ret)
	return g
}

// ret is SUCCESS, or GPU_IS_LOST once the test pulled the card off the bus.
func (g *gpuMock) ret() gonvml.Return {
	if g.state.lost.Load() {
		return gonvml.ERROR_GPU_IS_LOST
	}
	return gonvml.SUCCESS
}

// extend sets every function that go-nvml's dgxa100 mock lacks: serial,
// VBIOS, memory with its reserve, links, power, energy, temperature,
// utilization, clocks, PCIe throughput, fan, ECC, persistence, processes,
// clock locks and events.
func extend(index int, d *mock.Device, s spec, st *state, ok func() gonvml.Return) {
	st.limitMW.Store(s.defaultMW)
	st.energyMJ.Store(1_000_000_000)
	st.persistence.Store(s.persistence)
	// Version 1 counts the driver's reserve as used, version 2 apart.
	d.GetMemoryInfoFunc = func() (gonvml.Memory, gonvml.Return) {
		used := s.reserved + st.memUsed.Load()
		return gonvml.Memory{Total: s.memoryBytes, Used: used, Free: s.memoryBytes - used}, ok()
	}
	d.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
		used := st.memUsed.Load()
		return gonvml.Memory_v2{Version: 2, Total: s.memoryBytes, Reserved: s.reserved, Used: used,
			Free: s.memoryBytes - s.reserved - used}, ok()
	}
	orNS := func(supported bool) gonvml.Return {
		if !supported {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		return ok()
	}
	d.GetSerialFunc = func() (string, gonvml.Return) {
		if s.serial == "" {
			return ns[string]()
		}
		return s.serial, ok()
	}
	d.GetVbiosVersionFunc = func() (string, gonvml.Return) { return s.vbios, orNS(s.vbios != "") }
	d.GetCurrPcieLinkGenerationFunc = func() (int, gonvml.Return) { return s.linkGen, orNS(s.linkGen != 0) }
	d.GetCurrPcieLinkWidthFunc = func() (int, gonvml.Return) { return s.linkWidth, orNS(s.linkWidth != 0) }
	d.GetMaxPcieLinkGenerationFunc = func() (int, gonvml.Return) { return s.maxGen, orNS(s.maxGen != 0) }
	d.GetMaxPcieLinkWidthFunc = func() (int, gonvml.Return) { return s.maxWidth, orNS(s.maxWidth != 0) }
	d.GetGpuMaxPcieLinkGenerationFunc = func() (int, gonvml.Return) { return s.gpuGen, orNS(s.gpuGen != 0) }
	d.GetPersistenceModeFunc = func() (gonvml.EnableState, gonvml.Return) {
		if st.persistence.Load() {
			return gonvml.FEATURE_ENABLED, ok()
		}
		return gonvml.FEATURE_DISABLED, ok()
	}
	d.GetPowerUsageFunc = func() (uint32, gonvml.Return) {
		st.blockIfHung()
		return s.powerMW, orNS(s.powerMW != 0)
	}
	d.GetPowerManagementLimitConstraintsFunc = func() (uint32, uint32, gonvml.Return) {
		return s.minMW, s.maxMW, orNS(s.minMW != 0)
	}
	d.GetPowerManagementLimitFunc = func() (uint32, gonvml.Return) { return st.limitMW.Load(), orNS(s.minMW != 0) }
	d.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { return st.limitMW.Load(), orNS(s.minMW != 0) }
	d.GetPowerManagementDefaultLimitFunc = func() (uint32, gonvml.Return) { return s.defaultMW, orNS(s.minMW != 0) }
	d.SetPowerManagementLimitFunc = func(mw uint32) gonvml.Return {
		if s.minMW == 0 {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		if mw < s.minMW || mw > s.maxMW {
			return gonvml.ERROR_INVALID_ARGUMENT
		}
		st.limitMW.Store(mw)
		return ok()
	}
	d.GetTotalEnergyConsumptionFunc = func() (uint64, gonvml.Return) {
		if !s.energy {
			return ns[uint64]()
		}
		// The counter moves by the energy of one 100 ms interval per read.
		return st.energyMJ.Add(uint64(s.powerMW) / 10), ok()
	}
	d.GetTemperatureFunc = func(sensor gonvml.TemperatureSensors) (uint32, gonvml.Return) {
		if sensor != gonvml.TEMPERATURE_GPU {
			return ns[uint32]()
		}
		return s.tempC, orNS(s.tempC != 0)
	}
	d.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
		if st.migMode.Load() == gonvml.DEVICE_MIG_ENABLE {
			return ns[gonvml.Utilization]() // NVML: not supported on MIG-enabled GPUs
		}
		return gonvml.Utilization{Gpu: 97, Memory: 41}, ok()
	}
	d.GetClockInfoFunc = func(c gonvml.ClockType) (uint32, gonvml.Return) {
		switch c {
		case gonvml.CLOCK_SM:
			return 1710, ok()
		case gonvml.CLOCK_MEM:
			return 9501, ok()
		}
		return ns[uint32]()
	}
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) {
		return gonvml.ClocksEventReasonSwPowerCap | gonvml.ClocksThrottleReasonHwThermalSlowdown, ok()
	}
	d.GetCurrentClocksThrottleReasonsFunc = d.GetCurrentClocksEventReasonsFunc // same bits, older name
	d.GetPcieThroughputFunc = func(c gonvml.PcieUtilCounter) (uint32, gonvml.Return) {
		switch c {
		case gonvml.PCIE_UTIL_TX_BYTES:
			return 150, ok()
		case gonvml.PCIE_UTIL_RX_BYTES:
			return 240_000, ok()
		}
		return ns[uint32]()
	}
	d.GetFanSpeedFunc = func() (uint32, gonvml.Return) { return 72, orNS(s.fan) }
	d.GetEccModeFunc = func() (gonvml.EnableState, gonvml.EnableState, gonvml.Return) {
		if !s.ecc {
			return 0, 0, gonvml.ERROR_NOT_SUPPORTED
		}
		return gonvml.FEATURE_ENABLED, gonvml.FEATURE_ENABLED, ok()
	}
	d.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return append([]gonvml.ProcessInfo{}, st.procs...), ok()
	}
	d.GetGraphicsRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return append([]gonvml.ProcessInfo{}, st.graphics...), ok()
	}
	d.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return append([]gonvml.ProcessInfo{}, st.mps...), ok()
	}
	d.SetGpuLockedClocksFunc = func(minMHz, maxMHz uint32) gonvml.Return {
		if !s.clockLock {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		st.lockedMin.Store(minMHz)
		st.lockedMax.Store(maxMHz)
		return ok()
	}
	d.ResetGpuLockedClocksFunc = func() gonvml.Return {
		if !s.clockLock {
			return gonvml.ERROR_NOT_SUPPORTED
		}
		st.lockedMin.Store(0)
		st.lockedMax.Store(0)
		return ok()
	}
	d.GetSupportedEventTypesFunc = func() (uint64, gonvml.Return) {
		mask := uint64(gonvml.EventTypeXidCriticalError | gonvml.EventTypePState | gonvml.EventTypeClock)
		if s.ecc {
			mask |= gonvml.EventTypeSingleBitEccError | gonvml.EventTypeDoubleBitEccError
		}
		return mask, ok()
	}
	d.RegisterEventsFunc = func(mask uint64, set gonvml.EventSet) gonvml.Return {
		if r := ok(); r != gonvml.SUCCESS {
			return r
		}
		st.registered.Store(mask)
		if es, isMock := set.(*eventSet); isMock {
			es.add(index)
		}
		return gonvml.SUCCESS
	}
}

// rig is a mock NVML library over some mock GPUs, with an event queue, a
// driver version and the symbols its library exports.
type rig struct {
	*mock.Interface
	gpus      []*gpuMock
	events    chan gonvml.EventData
	shutdowns atomic.Int32
	creates   atomic.Int32 // event sets created
	frees     atomic.Int32
	waitErr   atomic.Int32 // a Return the next Wait answers with, 0 for none
	names     map[uint32]string
	driver    string          // what SystemGetDriverVersion answers
	hidden    map[string]bool // symbols this library does not export
	setsMu    sync.Mutex
	sets      []*eventSet // every event set created, in order
}

func newRig(specs ...spec) *rig {
	r := &rig{Interface: &mock.Interface{}, events: make(chan gonvml.EventData, 16), names: map[uint32]string{},
		driver: "550.54.14", hidden: map[string]bool{}}
	for i, s := range specs {
		r.gpus = append(r.gpus, newGPU(i, s))
	}
	r.InitFunc = func() gonvml.Return { return gonvml.SUCCESS }
	r.ShutdownFunc = func() gonvml.Return { r.shutdowns.Add(1); return gonvml.SUCCESS }
	r.DeviceGetCountFunc = func() (int, gonvml.Return) { return len(r.gpus), gonvml.SUCCESS }
	r.DeviceGetHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i < 0 || i >= len(r.gpus) {
			return nil, gonvml.ERROR_INVALID_ARGUMENT
		}
		return r.gpus[i].handle, gonvml.SUCCESS
	}
	r.ExtensionsFunc = func() gonvml.ExtendedInterface {
		return &mock.ExtendedInterface{LookupSymbolFunc: func(name string) error {
			if r.hidden[name] {
				return fmt.Errorf("undefined symbol: %s", name)
			}
			return nil
		}}
	}
	r.SystemGetDriverVersionFunc = func() (string, gonvml.Return) { return r.driver, gonvml.SUCCESS }
	r.SystemGetProcessNameFunc = func(pid int) (string, gonvml.Return) {
		if n, ok := r.names[uint32(pid)]; ok {
			return n, gonvml.SUCCESS
		}
		return "", gonvml.ERROR_NOT_FOUND
	}
	r.EventSetCreateFunc = r.newEventSet
	return r
}

// hide makes the rig's library lack a symbol, as an older driver does.
// Calling the function behind it fails the test: on a real host the
// process would abort with "undefined symbol".
func (r *rig) hide(t *testing.T, symbol string) {
	r.hidden[symbol] = true
	abort := func() { t.Errorf("called %s, which this driver lacks: a real process would abort", symbol) }
	for _, g := range r.gpus {
		d := g.Device
		switch symbol {
		case "nvmlDeviceGetCurrentClocksEventReasons":
			d.GetCurrentClocksEventReasonsFunc = func() (uint64, gonvml.Return) { abort(); return 0, gonvml.ERROR_UNKNOWN }
		case "nvmlDeviceGetMemoryInfo_v2":
			d.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) { abort(); return gonvml.Memory_v2{}, gonvml.ERROR_UNKNOWN }
		case "nvmlDeviceGetGpuMaxPcieLinkGeneration":
			d.GetGpuMaxPcieLinkGenerationFunc = func() (int, gonvml.Return) { abort(); return 0, gonvml.ERROR_UNKNOWN }
		case "nvmlDeviceGetMPSComputeRunningProcesses":
			d.GetMPSComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { abort(); return nil, gonvml.ERROR_UNKNOWN }
		}
	}
	if symbol == "nvmlSystemGetProcessName" {
		r.SystemGetProcessNameFunc = func(int) (string, gonvml.Return) { abort(); return "", gonvml.ERROR_UNKNOWN }
	}
}

// eventSet is a mock event set that knows which GPUs registered in it, so
// that its wait fails with GPU_IS_LOST while one of them is lost, as
// NVML's does.
type eventSet struct {
	mock.EventSet
	mu      sync.Mutex
	members map[int]bool
}

func (s *eventSet) add(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members[i] = true
}

func (s *eventSet) has(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.members[i]
}

// lostMember reports whether a GPU of the set is lost.
func (s *eventSet) lostMember(gpus []*gpuMock) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.members {
		if gpus[i].state.lost.Load() {
			return true
		}
	}
	return false
}

// newEventSet returns a mock event set that delivers the rig's queued
// events, fails while a registered GPU is lost, and otherwise times out
// after the requested wait, as NVML does.
func (r *rig) newEventSet() (gonvml.EventSet, gonvml.Return) {
	r.creates.Add(1)
	s := &eventSet{members: map[int]bool{}}
	s.WaitFunc = func(ms uint32) (gonvml.EventData, gonvml.Return) {
		if code := r.waitErr.Load(); code != 0 {
			return gonvml.EventData{}, gonvml.Return(code)
		}
		select { // what the driver queued before the GPU went is delivered first
		case e := <-r.events:
			return e, gonvml.SUCCESS
		default:
		}
		if s.lostMember(r.gpus) {
			return gonvml.EventData{}, gonvml.ERROR_GPU_IS_LOST
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case e := <-r.events:
			return e, gonvml.SUCCESS
		case <-t.C:
			return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
		}
	}
	s.FreeFunc = func() gonvml.Return { r.frees.Add(1); return gonvml.SUCCESS }
	r.setsMu.Lock()
	r.sets = append(r.sets, s)
	r.setsMu.Unlock()
	return s, gonvml.SUCCESS
}

// lastSet is the event set created last.
func (r *rig) lastSet() *eventSet {
	r.setsMu.Lock()
	defer r.setsMu.Unlock()
	return r.sets[len(r.sets)-1]
}

// xid queues an Xid event of GPU i.
func (r *rig) xid(i int, xid uint64) { r.events <- xidEvent(r.gpus[i], xid) }

// xidEvent is the event NVML reports for an Xid of a whole GPU (no MIG
// instance).
func xidEvent(g *gpuMock, xid uint64) gonvml.EventData {
	return gonvml.EventData{Device: g.handle, EventType: gonvml.EventTypeXidCriticalError, EventData: xid,
		GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF}
}

// dgx is go-nvml's dgxa100 mock (8x A100-SXM4-40GB) extended with the
// readings it lacks, plus the rig's event and process plumbing.
type dgx struct {
	*dgxa100.Server
	gpus      []*gpuMock
	events    chan gonvml.EventData
	shutdowns atomic.Int32
	rig       *rig // the event plumbing
}

// a100 is the spec behind the readings added to dgxa100's devices.
func a100(bus uint32) spec {
	return spec{
		name: "Mock NVIDIA A100-SXM4-40GB", brand: gonvml.BRAND_NVIDIA, arch: gonvml.DEVICE_ARCH_AMPERE,
		ccMajor: 8, ccMinor: 0, memoryBytes: 42949672960, serial: fmt.Sprintf("13240210%05d", bus), vbios: "92.00.45.00.06",
		pciDeviceID: 0x20b010de, bus: bus,
		linkGen: 4, linkWidth: 16, maxGen: 4, maxWidth: 16, gpuGen: 4, persistence: true,
		powerMW: 61_000, minMW: 100_000, maxMW: 400_000, defaultMW: 400_000,
		energy: true, ecc: true, mig: true, tempC: 31, clockLock: true,
	}
}

// dgxBus is the PCI bus of dgxa100 device i, as on a real DGX A100.
var dgxBus = [8]uint32{0x07, 0x0f, 0x47, 0x4e, 0x87, 0x90, 0xb7, 0xbd}

// newDGX builds the extended dgxa100; mods adjust the added readings.
func newDGX(mods ...func(*spec)) *dgx {
	x := &dgx{Server: dgxa100.New(), events: make(chan gonvml.EventData, 16)}
	for i, h := range x.Devices {
		d := h.(*dgxa100.Device)
		s := a100(dgxBus[i])
		for _, m := range mods {
			m(&s)
		}
		g := &gpuMock{Device: &d.Device, handle: h, spec: s, state: &state{}, uuid: d.UUID}
		extend(i, &d.Device, s, g.state, g.ret)
		d.GetUUIDFunc = func() (string, gonvml.Return) { return d.UUID, g.ret() }
		// dgxa100 fills only PciDeviceId; keep BusId empty (as it is) but
		// give the numeric bus so the fallback has something to build on.
		d.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) {
			return gonvml.PciInfo{Bus: s.bus, PciDeviceId: 0x20B010DE}, g.ret()
		}
		x.gpus = append(x.gpus, g)
	}
	x.ShutdownFunc = func() gonvml.Return { x.shutdowns.Add(1); return gonvml.SUCCESS }
	x.SystemGetProcessNameFunc = func(int) (string, gonvml.Return) { return "python3", gonvml.SUCCESS }
	x.rig = &rig{events: x.events, gpus: x.gpus}
	x.EventSetCreateFunc = x.rig.newEventSet
	return x
}

// testWait is the event wait the tests use, so that stopping is quick.
const testWait = 10 * time.Millisecond

func newTestBackend(t testing.TB, lib gonvml.Interface, opts ...Option) *Backend {
	t.Helper()
	opts = append([]Option{WithLibrary(lib), WithEventWait(testWait)}, opts...)
	b, err := New(t.Context(), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
