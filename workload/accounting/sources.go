package accounting

import (
	"context"
	"time"

	"github.com/gpufarm/gpufarm/workload"
)

// Timeline is the allocation timeline the meter attributes by: each GPU's
// holds, exact at handovers. *workload.Manager is one. Allocations
// returns the holds of a GPU that overlap [from, to], oldest first; a hold
// still held has a zero To.
type Timeline interface {
	Allocations(uuid string, from, to time.Time) ([]workload.Allocation, error)
}

var _ Timeline = (*workload.Manager)(nil)

// watcher is what Run uses, when the Timeline has it, to take a sample at
// once when work starts or ends: *workload.Manager's Watch.
type watcher interface {
	Watch(ctx context.Context, after uint64) <-chan workload.Event
}

// TimelineFunc adapts a function to Timeline.
type TimelineFunc func(uuid string, from, to time.Time) ([]workload.Allocation, error)

// Allocations calls f.
func (f TimelineFunc) Allocations(uuid string, from, to time.Time) ([]workload.Allocation, error) {
	return f(uuid, from, to)
}

// MiningRevenue tells what a GPU earned mining. The mining package does
// not implement it; a MiningRevenueFunc over mining.Filler.Estimate
// (RevenuePerHour times the hours) is one. Revenue is in the operator's
// currency, for the mining workload on GPU gpu over [from, to). The meter
// calls it once per mining record (a minute by default), without its
// locks.
type MiningRevenue interface {
	MiningRevenue(ctx context.Context, gpu, workload string, from, to time.Time) (float64, error)
}

// MiningRevenueFunc adapts a function to MiningRevenue.
type MiningRevenueFunc func(ctx context.Context, gpu, workload string, from, to time.Time) (float64, error)

// MiningRevenue calls f.
func (f MiningRevenueFunc) MiningRevenue(ctx context.Context, gpu, workload string, from, to time.Time) (float64, error) {
	return f(ctx, gpu, workload, from, to)
}
