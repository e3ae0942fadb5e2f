package mining

import (
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Unit is what a miner's rate counts per second.
type Unit string

const (
	// UnitHashes: hashes per second, the unit of nearly every algorithm.
	UnitHashes Unit = "H/s"
	// UnitSolutions: solutions per second, for the algorithms that count
	// solutions rather than hashes (the Equihash family: ZelHash,
	// BeamHash, ...).
	UnitSolutions Unit = "Sol/s"
	// UnitGraphs: graphs per second, for Cuckoo Cycle algorithms.
	UnitGraphs Unit = "G/s"
)

// Shares counts a miner's shares. Counts the miner does not report stay
// invalid, so "not reported" never reads as zero.
type Shares struct {
	Accepted gpu.Optional[int64]
	Rejected gpu.Optional[int64]
	Stale    gpu.Optional[int64]
	// Invalid counts shares the miner computed wrongly (T-Rex
	// invalid_count, GMiner invalid_shares, lolMiner hardware errors).
	Invalid gpu.Optional[int64]
}

// Stats is one reading of a miner, normalised from whatever its API
// reports. Every rate is in Unit per second: H/s for hashing algorithms,
// Sol/s or G/s for algorithms that count solutions or graphs. Fields the
// miner does not report are left invalid or empty.
type Stats struct {
	Miner     string // adapter name, e.g. "trex"
	Version   string // as the miner reports it, e.g. "0.26.4"
	Algorithm string // as the miner names it, e.g. "kawpow", "Equihash 150,5"
	Pool      string // the pool the miner is connected to, as it reports it
	User      string // the wallet or login (with worker) it mines for

	Unit Unit
	// Rate is the total rate of the miner in Unit, the miner's own
	// averaging window (T-Rex --hashrate-avr, XMRig 60 s, ...).
	Rate   gpu.Optional[float64]
	Shares Shares
	// Uptime is how long the miner has run. StartedAt is when it started,
	// for miners that report a start time rather than an uptime (NBMiner);
	// the Client fills Uptime from it.
	Uptime    gpu.Optional[time.Duration]
	StartedAt time.Time
	PowerW    gpu.Optional[float64] // total power the miner reports
	GPUs      []GPUStats
}

// GPUStats is one GPU as a miner reports it.
type GPUStats struct {
	// Index is the miner's own number for the GPU (its position in the
	// container's devices for the miners the SDK launches).
	Index int
	// PCIBusID is normalised as gpu.NormalizePCIBusID does
	// ("0000:0a:00.0"), so it joins to gpu.Device.PCIBusID; empty when the
	// miner does not report it. UUID is NVIDIA's form, "GPU-xxxxxxxx-...".
	PCIBusID string
	UUID     string
	Name     string

	Rate   gpu.Optional[float64] // in the Stats' Unit
	Shares Shares

	PowerW          gpu.Optional[float64]
	TemperatureC    gpu.Optional[float64]
	MemTemperatureC gpu.Optional[float64]
	FanPct          gpu.Optional[float64]
}

// HashrateHS returns the total rate in H/s; it is invalid for algorithms
// whose Unit is not UnitHashes and when the miner reported no rate.
func (s *Stats) HashrateHS() gpu.Optional[float64] {
	if s.Unit != UnitHashes {
		return gpu.Optional[float64]{}
	}
	return s.Rate
}

// GPU returns the stats of the GPU with that PCI bus id (any form
// gpu.NormalizePCIBusID takes) or UUID, and false when the miner does not
// list it.
func (s *Stats) GPU(busIDOrUUID string) (GPUStats, bool) {
	want := busIDOrUUID
	if n, err := gpu.NormalizePCIBusID(want); err == nil {
		want = n
	}
	for _, g := range s.GPUs {
		if (g.PCIBusID != "" && g.PCIBusID == want) || (g.UUID != "" && g.UUID == busIDOrUUID) {
			return g, true
		}
	}
	return GPUStats{}, false
}

// Reading is what a Client knows of its miner: the last good stats with
// their time, and how the last poll went.
type Reading struct {
	// Stats are the last good stats; zero before the first good poll.
	Stats Stats
	// At is when Stats were read; zero before the first good poll.
	At time.Time
	// Polled is when the last poll ended.
	Polled time.Time
	// Healthy reports that the last poll succeeded.
	Healthy bool
	// Err is the last poll's error: ErrUnavailable, ErrMalformed or
	// ErrRefused.
	Err error
	// Failures counts the polls that failed in a row.
	Failures int
}

// Age is how old the stats are at now; 0 before the first good poll.
func (r Reading) Age(now time.Time) time.Duration {
	if r.At.IsZero() {
		return 0
	}
	return now.Sub(r.At)
}

// scale multiplies the total and every GPU's rate by factor, for miners
// that report in a multiple of the unit.
func (st *Stats) scale(factor float64) {
	if factor == 1 {
		return
	}
	if st.Rate.Valid {
		st.Rate.Value *= factor
	}
	for i := range st.GPUs {
		if st.GPUs[i].Rate.Valid {
			st.GPUs[i].Rate.Value *= factor
		}
	}
}
