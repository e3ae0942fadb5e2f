package accounting

import (
	"iter"
	"sort"
)

// GroupBy says what Summarize adds records up by.
type GroupBy int

const (
	ByWorkload GroupBy = iota // workload ID; idle and gap records under their kind
	ByTenant                  // tenant; idle and gap records under their kind
	ByKind                    // mining, training, ..., idle, gap
	ByGPU                     // GPU UUID
)

// Row is the sum of a group of records.
type Row struct {
	Key string
	// GPUHours is the time the records cover, summed over GPUs.
	GPUHours         float64
	Records          int
	EnergyMJ         int64
	FacilityEnergyMJ int64
	Cost, Revenue    Amount
	// Flags is the union of the records' flags: what is estimated or
	// missing somewhere in the group.
	Flags Flags
}

// Margin is Revenue - Cost.
func (r Row) Margin() Amount { return r.Revenue - r.Cost }

// MarginPerGPUHour is the margin earned per GPU-hour, 0 for no time.
func (r Row) MarginPerGPUHour() float64 {
	if r.GPUHours == 0 {
		return 0
	}
	return r.Margin().Float() / r.GPUHours
}

// KWh is the facility energy in kilowatt-hours.
func (r Row) KWh() float64 { return float64(r.FacilityEnergyMJ) / mJPerKWh }

// Summarize adds up records by group, for a range of time or anything a
// Query selects: energy, cost, revenue and margin per workload, tenant,
// kind or GPU. Rows come sorted by key.
func Summarize(recs iter.Seq2[Record, error], by GroupBy) ([]Row, error) {
	rows := map[string]*Row{}
	for r, err := range recs {
		if err != nil {
			return nil, err
		}
		key := groupKey(r, by)
		row := rows[key]
		if row == nil {
			row = &Row{Key: key}
			rows[key] = row
		}
		row.GPUHours += r.Duration().Hours()
		row.Records++
		row.EnergyMJ += r.EnergyMJ
		row.FacilityEnergyMJ += r.FacilityEnergyMJ
		row.Cost += r.Cost
		row.Revenue += r.Revenue
		row.Flags |= r.Flags
	}
	out := make([]Row, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func groupKey(r Record, by GroupBy) string {
	switch by {
	case ByGPU:
		return r.GPU
	case ByKind:
		return string(r.Kind)
	case ByTenant:
		if r.Kind == KindIdle || r.Kind == KindGap {
			return "(" + string(r.Kind) + ")"
		}
		return r.Tenant
	default:
		if r.Workload == "" {
			return "(" + string(r.Kind) + ")"
		}
		return r.Workload
	}
}
