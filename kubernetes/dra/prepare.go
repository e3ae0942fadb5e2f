package dra

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
)

// ClaimPriority is the priority of a claim's workload: above the node's
// own paid work, since the cluster's scheduler already gave it the GPUs.
const ClaimPriority = 1000

// WorkloadID is the ID of a claim's workload on the node: the claim's
// name and a digest of its UID, so the ledger is readable and two claims
// of the same name never share one.
func WorkloadID(name string, uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	u := hex.EncodeToString(sum[:5])
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	if len(n) > 50 {
		n = strings.TrimRight(n[:50], "-")
	}
	if n == "" {
		n = "claim"
	}
	return n + "-" + u
}

// claimWork is one claim being prepared: its workload and devices.
type claimWork struct {
	claim   *resourceapi.ResourceClaim
	id      string
	devices []kubeletplugin.Device
	err     error
}

// PrepareResourceClaims takes each claim's GPUs from mining through the
// manager, which hands them over with hygiene and holds them for the
// claim, and returns the CDI devices to inject. A claim that cannot be
// prepared (an unknown GPU, one held by another claim, cordoned or
// unhealthy) gets its own error; the others go on. Preparing a claim
// again finds its workload and returns the same devices.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	works := make([]*claimWork, len(claims))
	taken := map[string]string{} // device -> the claim of this request that has it
	// Every claim is submitted first, so their handovers run at once.
	for i, c := range claims {
		works[i] = d.submit(ctx, c, taken)
	}
	out := map[types.UID]kubeletplugin.PrepareResult{}
	for _, w := range works {
		if w.err == nil && w.id != "" {
			w.err = d.waitHeld(ctx, w.id)
		}
		if w.err != nil {
			d.o.log.Warn("claim not prepared", "claim", w.claim.Namespace+"/"+w.claim.Name, "uid", w.claim.UID, "err", w.err)
			out[w.claim.UID] = kubeletplugin.PrepareResult{Err: w.err}
			continue
		}
		d.o.log.Info("claim prepared", "claim", w.claim.Namespace+"/"+w.claim.Name, "workload", w.id, "devices", len(w.devices))
		out[w.claim.UID] = kubeletplugin.PrepareResult{Devices: w.devices}
	}
	d.poke()
	return out, nil
}

// submit checks a claim's devices and submits its workload, or finds the
// one an earlier Prepare submitted.
func (d *Driver) submit(ctx context.Context, c *resourceapi.ResourceClaim, taken map[string]string) *claimWork {
	w := &claimWork{claim: c}
	var results []resourceapi.DeviceRequestAllocationResult
	if a := c.Status.Allocation; a != nil {
		for _, r := range a.Devices.Results {
			if r.Driver == DriverName {
				results = append(results, r)
			}
		}
	}
	if len(results) == 0 {
		return w // nothing of this driver's: nothing to do
	}
	gpus := map[string]workload.GPU{}
	for _, g := range d.m.GPUs() {
		gpus[deviceName(g.Device.Index)] = g
	}
	w.id = WorkloadID(c.Name, c.UID)
	var problems []string
	var uuids []string
	for _, r := range results {
		g, ok := gpus[r.Device]
		switch {
		case r.Pool != d.node || !ok:
			problems = append(problems, fmt.Sprintf("device %s/%s is not a GPU of node %s", r.Pool, r.Device, d.node))
			continue
		case taken[r.Device] != "":
			problems = append(problems, fmt.Sprintf("%s is also allocated to claim %s in this request", r.Device, taken[r.Device]))
		case !g.Healthy:
			problems = append(problems, fmt.Sprintf("%s is unhealthy: %s", r.Device, g.Health))
		case g.Quarantine != "":
			problems = append(problems, fmt.Sprintf("%s is quarantined: %s", r.Device, g.Quarantine))
		case g.Cordoned != "":
			problems = append(problems, fmt.Sprintf("%s is cordoned: %s", r.Device, g.Cordoned))
		case g.Workload != "" && g.Workload != w.id && g.Kind != workload.KindMining:
			if other, err := d.m.Get(g.Workload); err == nil && other.Spec.External {
				problems = append(problems, fmt.Sprintf("%s is prepared for claim %s", r.Device, other.Spec.Labels[LabelClaim]))
			} else if err == nil && !other.Spec.Preemptible {
				problems = append(problems, fmt.Sprintf("%s is held by the node's workload %s, which cannot be preempted", r.Device, g.Workload))
			}
		}
		w.devices = append(w.devices, kubeletplugin.Device{Requests: []string{r.Request}, PoolName: r.Pool, DeviceName: r.Device,
			CDIDeviceIDs: []string{d.o.cdiKind + "=" + g.Device.UUID}})
		uuids = append(uuids, g.Device.UUID)
	}
	if len(problems) > 0 {
		w.err = fmt.Errorf("claim %s/%s: %s", c.Namespace, c.Name, strings.Join(problems, "; "))
		return w
	}
	for _, r := range results {
		taken[r.Device] = c.Namespace + "/" + c.Name
	}
	if prev, err := d.m.Get(w.id); err == nil {
		if prev.Spec.Labels[LabelClaimUID] != uidString(c.UID) {
			w.err = fmt.Errorf("claim %s/%s: workload %s belongs to claim UID %s", c.Namespace, c.Name, w.id, prev.Spec.Labels[LabelClaimUID])
			return w
		}
		if !prev.State.Final() {
			return w // prepared, or being prepared: Prepare again is the same
		}
		// An earlier attempt ended (it failed, or was unprepared): start
		// afresh.
		if err := d.m.Forget(ctx, w.id); err != nil {
			w.err = err
			return w
		}
	}
	spec, err := claimSpec(c, w.id, uuids)
	if err == nil {
		_, err = d.m.Submit(ctx, spec)
	}
	if err != nil {
		w.err = fmt.Errorf("claim %s/%s: %w", c.Namespace, c.Name, err)
	}
	return w
}

// claimSpec is the external workload that holds a claim's GPUs.
func claimSpec(c *resourceapi.ResourceClaim, id string, uuids []string) (workload.Spec, error) {
	kind := workload.KindTraining
	if k := c.Annotations[AnnotationKind]; k != "" {
		kind = workload.Kind(k)
	}
	var price float64
	if p := c.Annotations[AnnotationPrice]; p != "" {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 {
			return workload.Spec{}, fmt.Errorf("%w: annotation %s %q: give a price, 0 or more", workload.ErrInvalid, AnnotationPrice, p)
		}
		price = v
	}
	labels := map[string]string{LabelClaim: c.Namespace + "/" + c.Name, LabelClaimUID: uidString(c.UID)}
	for _, r := range c.Status.ReservedFor {
		if r.Resource == "pods" {
			labels[LabelPod] = c.Namespace + "/" + r.Name
		}
	}
	return workload.Spec{ID: id, Kind: kind, Tenant: c.Namespace, Priority: ClaimPriority, External: true,
		GPUs: workload.GPURequest{UUIDs: uuids, IgnoreReadiness: true}, PricePerGPUHour: price, Labels: labels}, nil
}

// waitHeld waits until the claim's workload holds its GPUs. If it cannot
// (it failed, or the wait ran out), it is cancelled, so that nothing is
// left half-prepared: kubelet will ask again.
func (d *Driver) waitHeld(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.prepare)
	defer cancel()
	events := d.watchFrom(ctx, id)
	for {
		w, err := d.m.Get(id)
		if err != nil {
			return err
		}
		switch {
		case w.State == workload.StateRunning:
			return nil
		case w.State.Final():
			return fmt.Errorf("the GPUs could not be handed over: %s %s", w.State, w.Reason)
		}
		select {
		case <-events:
		case <-ctx.Done():
			cerr := d.m.Cancel(context.WithoutCancel(ctx), id)
			return errors.Join(fmt.Errorf("the GPUs were not handed over within %v (%s: %s): try again", d.o.prepare, w.State, w.Reason), cerr)
		}
	}
}

// watchFrom wakes on the events after the workload's last recorded one,
// so a wait never reads back the whole event log.
func (d *Driver) watchFrom(ctx context.Context, id string) <-chan workload.Event {
	var after uint64
	if w, err := d.m.Get(id); err == nil && w.Seq > 0 {
		after = w.Seq - 1
	}
	return d.m.Watch(ctx, after)
}

// UnprepareResourceClaims gives each claim's GPUs back: its workload is
// cancelled, and once it has ended the filler may mine on them again. A
// claim that is not prepared is fine.
func (d *Driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := map[types.UID]error{}
	for _, c := range claims {
		id := WorkloadID(c.Name, c.UID)
		err := d.m.Cancel(ctx, id)
		if errors.Is(err, workload.ErrNotFound) {
			out[c.UID] = nil
			continue
		}
		if err == nil {
			err = d.waitEnded(ctx, id)
		}
		if err != nil {
			err = fmt.Errorf("claim %s/%s: %w", c.Namespace, c.Name, err)
		} else {
			d.o.log.Info("claim unprepared", "claim", c.Namespace+"/"+c.Name, "workload", id)
		}
		out[c.UID] = err
	}
	d.poke()
	return out, nil
}

// waitEnded waits until the workload has ended.
func (d *Driver) waitEnded(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.prepare)
	defer cancel()
	events := d.watchFrom(ctx, id)
	for {
		w, err := d.m.Get(id)
		if err != nil || w.State.Final() {
			return err
		}
		select {
		case <-events:
		case <-ctx.Done():
			return fmt.Errorf("%w: the GPUs of %s were not given back within %v: try again", isolation.ErrUnavailable, id, d.o.prepare)
		}
	}
}
