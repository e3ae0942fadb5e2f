package accounting

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/workload"
)

// Kinds of records that no workload holds. Records of workloads carry the
// workload's own kind (workload.KindMining, KindTraining, ...).
const (
	// KindIdle: no workload held the GPU. Its energy and cost are the
	// operator's own.
	KindIdle workload.Kind = "idle"
	// KindGap: nobody can say who held the GPU: samples were missing for
	// longer than the meter's maximum gap (the agent was down), or the
	// allocation timeline could not be read. Its energy is the counter's
	// difference across the gap when the GPU has a counter, and unknown
	// (FlagEnergyUnknown) otherwise. It is never attributed to anyone.
	KindGap workload.Kind = "gap"
)

// Flags say how a record's numbers were obtained and what is missing.
type Flags uint16

const (
	// FlagCounter: the energy is the difference of the device's energy
	// counter, and EndCounterMJ is the counter at End.
	FlagCounter Flags = 1 << iota
	// FlagIntegrated: some of the energy was integrated from power samples
	// (trapezoids), because the device has no energy counter or it reset.
	FlagIntegrated
	// FlagCounterReset: the counter went backwards within the record (the
	// driver was reloaded); the interval across the reset was integrated
	// from power, or, without power readings, counted from zero.
	FlagCounterReset
	// FlagEnergyUnknown: some of the interval had no energy reading at all;
	// the energy is a lower bound.
	FlagEnergyUnknown
	// FlagNoSamples: the record covers a gap in the samples.
	FlagNoSamples
	// FlagNoTimeline: the allocation timeline could not be read.
	FlagNoTimeline
	// FlagSplit: the record shares a sample interval with another holder
	// at a handover; its share was weighted by the power before and after.
	FlagSplit
	// FlagCostUnknown: no price was known for some of the interval (no
	// tariff, or a price series that ends); Cost counts the priced part.
	FlagCostUnknown
	// FlagRevenueUnknown: mining revenue could not be told (no
	// MiningRevenue source, or it failed).
	FlagRevenueUnknown
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{FlagCounter, "counter"}, {FlagIntegrated, "integrated"}, {FlagCounterReset, "counter-reset"},
	{FlagEnergyUnknown, "energy-unknown"}, {FlagNoSamples, "no-samples"}, {FlagNoTimeline, "no-timeline"},
	{FlagSplit, "split"}, {FlagCostUnknown, "cost-unknown"}, {FlagRevenueUnknown, "revenue-unknown"},
}

// String lists the flags joined by '|', or "" for none.
func (f Flags) String() string {
	var parts []string
	for _, n := range flagNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, "|")
}

// ParseFlags reads what String writes.
func ParseFlags(s string) (Flags, error) {
	var f Flags
	if s == "" {
		return 0, nil
	}
next:
	for _, p := range strings.Split(s, "|") {
		for _, n := range flagNames {
			if p == n.name {
				f |= n.f
				continue next
			}
		}
		return 0, Errorf(ErrInvalid, "unknown record flag %q", p)
	}
	return f, nil
}

// Amount is money in the operator's currency, in millionths, so that
// sums over many records are exact.
type Amount int64

// AmountOf rounds v (in currency units) to the millionth.
func AmountOf(v float64) Amount { return Amount(math.Round(v * 1e6)) }

// Float returns the amount in currency units.
func (a Amount) Float() float64 { return float64(a) / 1e6 }

// String prints the amount in currency units with six decimals.
func (a Amount) String() string {
	neg := a < 0
	u := uint64(a)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u/1e6, 10) + "." + fmt.Sprintf("%06d", u%1e6)
	if neg {
		return "-" + s
	}
	return s
}

// ParseAmount reads what String writes.
func ParseAmount(s string) (Amount, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, Errorf(ErrInvalid, "amount %q: want a decimal number", s)
	}
	return AmountOf(v), nil
}

// Record is one GPU's account for one interval: who held it, the energy
// it drew, what that cost and what it earned. Records of one GPU follow
// each other without holes or overlaps, and never cross a boundary of the
// meter's record interval (a minute by default), so ranges on those
// boundaries sum exactly. For every GPU, the records' EnergyMJ add up to
// the energy metered, to the millijoule.
type Record struct {
	// Seq is the ledger's sequence number, dense and increasing; 0 until a
	// ledger has stored the record.
	Seq   uint64    `json:"seq"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	GPU   string    `json:"gpu"` // UUID
	// Workload and Attempt name the holder; empty and 0 for KindIdle and
	// KindGap.
	Workload string        `json:"workload"`
	Attempt  int           `json:"attempt"`
	Tenant   string        `json:"tenant"`
	Kind     workload.Kind `json:"kind"`
	// EnergyMJ is the board energy in millijoules, as the GPU reports it.
	EnergyMJ int64 `json:"energy_mj"`
	// FacilityEnergyMJ is EnergyMJ times the wall-meter factor and the
	// PUE: what the site drew for it, and what Cost prices.
	FacilityEnergyMJ int64 `json:"facility_energy_mj"`
	// EndCounterMJ is the device's energy counter at End (FlagCounter);
	// where End falls between two samples it is the counter at the start
	// of that interval plus the energy booked before End.
	EndCounterMJ uint64 `json:"end_counter_mj,omitempty"`
	Cost         Amount `json:"cost"`
	Revenue      Amount `json:"revenue"`
	Flags        Flags  `json:"flags"`
}

// Duration is End - Start.
func (r Record) Duration() time.Duration { return r.End.Sub(r.Start) }

// Margin is Revenue - Cost.
func (r Record) Margin() Amount { return r.Revenue - r.Cost }

// Equal reports whether r and o are the same record, Seq aside: what a
// ledger compares when the same record is delivered twice.
func (r Record) Equal(o Record) bool {
	r.Seq, o.Seq = 0, 0
	return r.Start.Equal(o.Start) && r.End.Equal(o.End) && r.GPU == o.GPU && r.Workload == o.Workload &&
		r.Attempt == o.Attempt && r.Tenant == o.Tenant && r.Kind == o.Kind && r.EnergyMJ == o.EnergyMJ &&
		r.FacilityEnergyMJ == o.FacilityEnergyMJ && r.EndCounterMJ == o.EndCounterMJ && r.Cost == o.Cost &&
		r.Revenue == o.Revenue && r.Flags == o.Flags
}

// Validate reports what makes r unfit for a ledger.
func (r Record) Validate() error {
	var bad []string
	if r.GPU == "" {
		bad = append(bad, "no GPU")
	}
	if !r.End.After(r.Start) {
		bad = append(bad, fmt.Sprintf("end %s is not after start %s", r.End.Format(time.RFC3339Nano), r.Start.Format(time.RFC3339Nano)))
	}
	if r.Kind == "" {
		bad = append(bad, "no kind")
	}
	if r.EnergyMJ < 0 || r.FacilityEnergyMJ < 0 {
		bad = append(bad, "negative energy")
	}
	if (r.Kind == KindIdle || r.Kind == KindGap) && r.Workload != "" {
		bad = append(bad, fmt.Sprintf("kind %s with workload %q", r.Kind, r.Workload))
	}
	if len(bad) == 0 {
		return nil
	}
	return Errorf(ErrInvalid, "record of GPU %s from %s: %s", r.GPU, r.Start.Format(time.RFC3339Nano), strings.Join(bad, "; "))
}
