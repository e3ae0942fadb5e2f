package containerd

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/gpufarm/gpufarm/isolation"
)

// A tenant's slot is a small number given the first time it creates a
// container and kept in a label of its containerd namespace, so it
// survives restarts of the SDK and of containerd. It picks the tenant's
// host id range (user namespaces) and its bridge and subnet (the tenant
// network), which therefore no two tenants share. Deleting a namespace
// frees its slot for another tenant: remove or hand over the old tenant's
// files first.
const labelSlot = isolation.LabelPrefix + "slot"

// slots gives tenants their slots, one at a time, and remembers them.
type slots struct {
	mu     sync.Mutex
	known  map[string]int // namespace -> slot
	remaps sync.Map       // remapped snapshot key -> *sync.Mutex: one remap at a time
}

// maxSlots is how many tenants fit: one /24 of the tenant subnet each.
func (r *Runtime) maxSlots() int { return 1 << (24 - r.opts.network.Subnet.Bits()) }

// tenantSlot returns the tenant's slot, giving it one the first time.
// ctx carries the tenant's namespace.
func (r *Runtime) tenantSlot(ctx context.Context, tenant string) (int, error) {
	ns := isolation.Namespace(tenant)
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	if slot, ok := r.slots.known[ns]; ok {
		return slot, nil
	}
	if slot, ok, err := r.slotOf(ctx, ns); err != nil || ok {
		if ok {
			r.slots.known[ns] = slot
		}
		return slot, err
	}
	nss := r.client.NamespaceService()
	all, err := nss.List(ctx)
	if err != nil {
		return 0, mapErr(err, "list namespaces")
	}
	used := map[int]bool{}
	for _, other := range all {
		if s, ok, _ := r.slotOf(ctx, other); ok {
			used[s] = true
		}
	}
	slot := 0
	for used[slot] {
		slot++
	}
	if slot >= r.maxSlots() {
		return 0, fmt.Errorf("%w: all %d tenant slots are taken (tenant %q): give the runtime a larger tenant subnet or remove tenants", isolation.ErrUnavailable, r.maxSlots(), tenant)
	}
	value := strconv.Itoa(slot)
	err = nss.Create(ctx, ns, map[string]string{labelSlot: value})
	if errdefs.IsAlreadyExists(err) {
		err = nss.SetLabel(ctx, ns, labelSlot, value)
	}
	if err != nil {
		return 0, mapErr(err, "give tenant %q its slot", tenant)
	}
	r.slots.known[ns] = slot
	r.log.Info("tenant given its slot", "tenant", tenant, "slot", slot, "first_host_id", idBase(slot),
		"subnet", r.tenantSubnet(slot).String())
	return slot, nil
}

// slotOf reads the slot a namespace was given.
func (r *Runtime) slotOf(ctx context.Context, ns string) (int, bool, error) {
	labels, err := r.client.NamespaceService().Labels(ctx, ns)
	if errdefs.IsNotFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, mapErr(err, "labels of namespace %s", ns)
	}
	v, ok := labels[labelSlot]
	if !ok {
		return 0, false, nil
	}
	s, err := strconv.Atoi(v)
	if err != nil || s < 0 {
		return 0, false, fmt.Errorf("%w: namespace %s has a broken %s label %q: remove it", isolation.ErrInvalid, ns, labelSlot, v)
	}
	return s, true, nil
}
