package agent

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// specOf turns the wire spec into the manager's, reporting every field it
// cannot read at once.
func specOf(s api.Spec) (workload.Spec, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	seconds := func(field string, v float64) time.Duration {
		if v < 0 || math.IsNaN(v) || v > math.MaxInt64/float64(time.Second) {
			bad(field, "%v: give seconds, 0 or more", v)
			return 0
		}
		return time.Duration(v * float64(time.Second))
	}
	out := workload.Spec{
		ID: s.ID, Kind: workload.Kind(s.Kind), Tenant: s.Tenant, Priority: s.Priority,
		GPUs: workload.GPURequest{
			Count: s.GPUs.Count, MinMemoryBytes: s.GPUs.MinMemoryBytes,
			MinLink: gpu.Link{Gen: s.GPUs.MinLinkGen, Width: s.GPUs.MinLinkWidth},
			Models:  s.GPUs.Models, UUIDs: s.GPUs.UUIDs, IgnoreReadiness: s.GPUs.IgnoreReadiness,
		},
		Image: s.Image, Command: s.Command, Env: s.Env, WorkDir: s.WorkDir,
		Resources: isolation.Limits{CPUMillis: s.Resources.CPUMillis, MemoryBytes: s.Resources.MemoryBytes,
			Pids: s.Resources.Pids, CPUShares: s.Resources.CPUShares},
		Network: isolation.Network(s.Network), Preemptible: s.Preemptible,
		StopGrace:  seconds("stop_grace_seconds", s.StopGraceSeconds),
		MinRuntime: seconds("min_runtime_seconds", s.MinRuntimeSeconds),
		OnGPULoss:  workload.GPULoss(s.OnGPULoss), PricePerGPUHour: s.PricePerGPUHour, Load: s.Load, Labels: s.Labels,
	}
	if c := s.GPUs.MinComputeCapability; c != "" {
		major, minor, ok := strings.Cut(c, ".")
		ma, err1 := strconv.Atoi(major)
		mi, err2 := strconv.Atoi(minor)
		if !ok || err1 != nil || err2 != nil || ma < 0 || mi < 0 {
			bad("gpus.min_compute_capability", "%q: want major.minor, e.g. \"8.6\"", c)
		}
		out.GPUs.MinComputeCapability = gpu.ComputeCapability{Major: ma, Minor: mi}
	}
	for _, m := range s.Mounts {
		out.Mounts = append(out.Mounts, isolation.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	if s.StopSignal != "" {
		sig, err := parseSignal(s.StopSignal)
		if err != nil {
			bad("stop_signal", "%v", err)
		}
		out.StopSignal = sig
	}
	if len(errs) > 0 {
		// The manager's own checks too, so every problem is named at once.
		if err := out.Validate(); err != nil {
			errs = append(errs, err)
		}
		return workload.Spec{}, fmt.Errorf("%w: %w", workload.ErrInvalid, errors.Join(errs...))
	}
	return out, nil
}

// parseSignal reads "SIGTERM", "TERM" or "15".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("%q is not a signal: give a name such as SIGTERM or SIGUSR1", s)
}

func signalName(sig syscall.Signal) string {
	if sig == 0 {
		return ""
	}
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return strconv.Itoa(int(sig))
}

func apiSpec(s workload.Spec) api.Spec {
	out := api.Spec{
		ID: s.ID, Kind: string(s.Kind), Tenant: s.Tenant, Priority: s.Priority,
		GPUs: api.GPUs{Count: s.GPUs.Count, MinMemoryBytes: s.GPUs.MinMemoryBytes,
			MinLinkGen: s.GPUs.MinLink.Gen, MinLinkWidth: s.GPUs.MinLink.Width,
			Models: s.GPUs.Models, UUIDs: s.GPUs.UUIDs, IgnoreReadiness: s.GPUs.IgnoreReadiness},
		Image: s.Image, Command: s.Command, Env: s.Env, WorkDir: s.WorkDir,
		Resources: api.Limits{CPUMillis: s.Resources.CPUMillis, MemoryBytes: s.Resources.MemoryBytes,
			Pids: s.Resources.Pids, CPUShares: s.Resources.CPUShares},
		Network: string(s.Network), Preemptible: s.Preemptible, StopSignal: signalName(s.StopSignal),
		StopGraceSeconds: s.StopGrace.Seconds(), MinRuntimeSeconds: s.MinRuntime.Seconds(),
		OnGPULoss: string(s.OnGPULoss), PricePerGPUHour: s.PricePerGPUHour, Load: s.Load, Labels: s.Labels,
	}
	if c := s.GPUs.MinComputeCapability; c != (gpu.ComputeCapability{}) {
		out.GPUs.MinComputeCapability = fmt.Sprintf("%d.%d", c.Major, c.Minor)
	}
	for _, m := range s.Mounts {
		out.Mounts = append(out.Mounts, api.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	return out
}

func apiWorkload(w workload.Workload) api.Workload {
	out := api.Workload{
		Spec: apiSpec(w.Spec), State: string(w.State), GPUs: w.GPUs, Attempt: w.Attempt,
		Preemptions: w.Preemptions, Retries: w.Retries, SubmittedAt: w.SubmittedAt, StartedAt: w.StartedAt,
		EndedAt: w.EndedAt, StopAskedAt: w.StopAskedAt, Exit: apiExit(w.Exit), Reason: w.Reason,
		Outcome: string(w.Outcome), Progress: apiProgress(w.Progress), Ready: w.Ready, ExitNote: w.ExitNote, Seq: w.Seq,
	}
	if out.GPUs == nil {
		out.GPUs = []string{}
	}
	if w.Container != (isolation.Ref{}) {
		out.Container = w.Container.String()
	}
	if w.Address.IsValid() {
		out.Address = w.Address.String()
	}
	return out
}

func apiExit(e *isolation.ExitStatus) *api.Exit {
	if e == nil {
		return nil
	}
	return &api.Exit{Code: e.Code, Reason: string(e.Reason), OOMKilled: e.OOMKilled, ExitedAt: e.ExitedAt}
}

func apiProgress(p *workload.Progress) *api.Progress {
	if p == nil {
		return nil
	}
	out := &api.Progress{Step: p.Step, Total: p.Total, Epoch: p.Epoch, Throughput: p.Throughput,
		ThroughputUnit: p.ThroughputUnit, ETASeconds: p.ETA.Seconds(), Message: p.Message}
	if p.HasLoss {
		loss := p.Loss
		out.Loss = &loss
	}
	return out
}

func apiEvent(ev workload.Event) api.Event {
	out := api.Event{Seq: ev.Seq, Type: string(ev.Type), ID: ev.ID, Kind: string(ev.Kind), Tenant: ev.Tenant,
		Attempt: ev.Attempt, Time: ev.Time, GPUs: ev.GPUs, Reason: ev.Reason, Exit: apiExit(ev.Exit),
		Progress: apiProgress(ev.Progress), Note: ev.Note}
	if h := ev.Handover; h != nil {
		out.Handover = &api.Handover{From: h.From, DrainSeconds: h.Drain.Seconds(), PrepareSeconds: h.Prepare.Seconds(),
			HygieneSeconds: h.Hygiene.Seconds(), TotalSeconds: h.Total.Seconds()}
	}
	return out
}

func apiGPU(g workload.GPU, r gpu.Readiness) api.GPU {
	d := g.Device
	out := api.GPU{
		Index: d.Index, UUID: d.UUID, Name: d.Name, Architecture: string(d.Architecture),
		ComputeCapability: d.ComputeCapability.String(), MemoryBytes: d.MemoryBytes, PCIBusID: d.PCIBusID,
		LinkGen: r.Link.Gen, LinkWidth: r.Link.Width, HostLinkGBps: r.HostLinkGBps, Use: r.Use.String(),
		Fit: api.Fit{InferenceFP16Params: r.Fit.InferenceFP16Params, InferenceINT8Params: r.Fit.InferenceINT8Params,
			InferenceINT4Params: r.Fit.InferenceINT4Params, LoRAParams: r.Fit.LoRAParams, QLoRAParams: r.Fit.QLoRAParams,
			FullFineTuneParams: r.Fit.FullFineTuneParams},
		Notes: r.Notes, Healthy: g.Healthy, Health: g.Health, Workload: g.Workload, Next: g.Next, Kind: string(g.Kind),
		Tenant: g.Tenant, Quarantine: g.Quarantine, Cordoned: g.Cordoned,
	}
	for _, f := range r.Flags {
		out.Flags = append(out.Flags, string(f))
	}
	if pl, ok := d.PowerLimit.Value, d.PowerLimit.Valid; ok {
		cur := pl.CurrentW
		out.PowerLimitW = &cur
		if pl.DefaultW > 0 {
			def := pl.DefaultW
			out.DefaultPowerLimitW = &def
		}
	}
	return out
}

func apiNode(st workload.Status, h gpu.HostReadiness) api.Node {
	out := api.Node{Running: st.Running, Queued: st.Queued, Live: st.Live, Finished: st.Finished, Cordoned: st.Cordoned,
		DrawW: st.DrawW, BudgetW: st.BudgetW, GPUs: h.Devices, ByUse: map[string]int{}, MemoryBytes: h.MemoryBytes,
		TrainingMemoryBytes: h.TrainingMemoryBytes, SlowestTrainingLinkGBps: h.SlowestTrainingLinkGBps,
		AllReduceSecondsPerGB: h.AllReduceSecondsPerGB, Notes: h.Notes}
	if st.StoreErr != nil {
		out.StoreError = st.StoreErr.Error()
	}
	for use, n := range h.ByUse {
		out.ByUse[use.String()] = n
	}
	return out
}

func apiCurtail(r workload.CurtailReport) api.CurtailReport {
	out := api.CurtailReport{TargetW: r.TargetW, StartW: r.StartW, FinalW: r.FinalW, Met: r.Met, TookSeconds: r.Took.Seconds()}
	for _, s := range r.Steps {
		out.Steps = append(out.Steps, api.CurtailStep{Action: s.Action, Workloads: s.Workloads, DrawW: s.DrawW, AfterSeconds: s.After.Seconds()})
	}
	return out
}

func apiRow(r accounting.Row) api.Row {
	return api.Row{Key: r.Key, GPUHours: r.GPUHours, Records: r.Records, EnergyMJ: r.EnergyMJ, FacilityEnergyMJ: r.FacilityEnergyMJ,
		Cost: r.Cost.String(), Revenue: r.Revenue.String(), Margin: r.Margin().String(), Flags: r.Flags.String()}
}
