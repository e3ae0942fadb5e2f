package mining

import (
	"encoding/json"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// MarshalJSON writes the stats with snake_case names and units in them;
// a reading the miner did not report is left out rather than written as 0.
func (s Stats) MarshalJSON() ([]byte, error) {
	type sharesJSON struct {
		Accepted *int64 `json:"accepted,omitempty"`
		Rejected *int64 `json:"rejected,omitempty"`
		Stale    *int64 `json:"stale,omitempty"`
		Invalid  *int64 `json:"invalid,omitempty"`
	}
	type gpuJSON struct {
		Index           int        `json:"index"`
		PCIBusID        string     `json:"pci_bus_id,omitempty"`
		UUID            string     `json:"uuid,omitempty"`
		Name            string     `json:"name,omitempty"`
		Rate            *float64   `json:"rate,omitempty"`
		Shares          sharesJSON `json:"shares"`
		PowerW          *float64   `json:"power_w,omitempty"`
		TemperatureC    *float64   `json:"temperature_c,omitempty"`
		MemTemperatureC *float64   `json:"mem_temperature_c,omitempty"`
		FanPct          *float64   `json:"fan_pct,omitempty"`
	}
	out := struct {
		Miner     string     `json:"miner"`
		Version   string     `json:"version,omitempty"`
		Algorithm string     `json:"algorithm,omitempty"`
		Pool      string     `json:"pool,omitempty"`
		User      string     `json:"user,omitempty"`
		Unit      Unit       `json:"unit"`
		Rate      *float64   `json:"rate,omitempty"`
		Shares    sharesJSON `json:"shares"`
		UptimeS   *float64   `json:"uptime_s,omitempty"`
		StartedAt *time.Time `json:"started_at,omitempty"`
		PowerW    *float64   `json:"power_w,omitempty"`
		GPUs      []gpuJSON  `json:"gpus"`
	}{Miner: s.Miner, Version: s.Version, Algorithm: s.Algorithm, Pool: s.Pool, User: s.User, Unit: s.Unit,
		Rate: ptr(s.Rate), Shares: sharesJSON{ptr(s.Shares.Accepted), ptr(s.Shares.Rejected), ptr(s.Shares.Stale), ptr(s.Shares.Invalid)},
		PowerW: ptr(s.PowerW), GPUs: []gpuJSON{}}
	if s.Uptime.Valid {
		v := s.Uptime.Value.Seconds()
		out.UptimeS = &v
	}
	if !s.StartedAt.IsZero() {
		out.StartedAt = &s.StartedAt
	}
	for _, g := range s.GPUs {
		out.GPUs = append(out.GPUs, gpuJSON{Index: g.Index, PCIBusID: g.PCIBusID, UUID: g.UUID, Name: g.Name, Rate: ptr(g.Rate),
			Shares:          sharesJSON{ptr(g.Shares.Accepted), ptr(g.Shares.Rejected), ptr(g.Shares.Stale), ptr(g.Shares.Invalid)},
			PowerW:          ptr(g.PowerW),
			TemperatureC:    ptr(g.TemperatureC),
			MemTemperatureC: ptr(g.MemTemperatureC),
			FanPct:          ptr(g.FanPct)})
	}
	return json.Marshal(out)
}

func ptr[T any](o gpu.Optional[T]) *T {
	if !o.Valid {
		return nil
	}
	return &o.Value
}
