package mining

import (
	"bytes"
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// gminer is GMiner (NVIDIA, AMD). --api <port> starts its telemetry
// server; GMiner documents no bind address and no password, so the API
// listens wherever GMiner chooses: keep the port closed to the outside.
// GET /stat answers in JSON (undocumented, but what every monitor reads).
type gminer struct{ base }

func newGMiner() Adapter {
	return gminer{base{name: "gminer", endpoints: []string{"stat"}, algos: map[string]string{
		"ethash": "ethash", "etchash": "etchash", "kawpow": "kawpow", "autolykos2": "autolykos2",
		"octopus": "octopus", "beamhash": "beamhash", "equihash144_5": "equihash144_5",
		"equihash125_4": "equihash125_4", "equihash210_9": "equihash210_9", "cuckoo29": "aeternity",
		"firopow": "firo", "kheavyhash": "kaspa", "ironfish": "ironfish", "karlsenhash": "karlsen",
	}}}
}

func (a gminer) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	args := []string{"--algo", a.algos[l.Algorithm], "--server", p.hostPort(), "--user", l.login(), "--pass", l.password()}
	if p.tls {
		args = append(args, "--ssl", "1")
	}
	args = append(args, "--devices")
	for i := range l.GPUs {
		args = append(args, fmt.Sprint(i))
	}
	args = append(args, "--api", l.port(), "--watchdog", "0")
	return append(args, l.Extra...), nil
}

func (gminer) Requests(string) []Request {
	return []Request{{Endpoint: "stat", Proto: ProtoHTTP, Path: "/stat"}}
}

func (gminer) Detect(body []byte) string {
	if bytes.Contains(body, []byte(`"devices"`)) && bytes.Contains(body, []byte(`"server"`)) {
		return "stat"
	}
	return ""
}

func (a gminer) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	var unit Unit
	factor, seen := 1.0, false
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "miner":
			setString(&st.Version, bytes.TrimSpace(bytes.TrimPrefix(s.text(), []byte("GMiner"))))
		case "uptime":
			st.Uptime = s.seconds(1)
		case "server":
			setString(&st.Pool, s.text())
		case "user":
			setString(&st.User, s.text())
		case "algorithm":
			setString(&st.Algorithm, s.text())
		case "total_accepted_shares":
			st.Shares.Accepted = s.count()
		case "total_rejected_shares":
			st.Shares.Rejected = s.count()
		case "total_stale_shares":
			st.Shares.Stale = s.count()
		case "total_invalid_shares":
			st.Shares.Invalid = s.count()
		case "speed_unit", "speedUnit":
			var ok bool
			if unit, factor, ok = unitText(s.text()); !ok {
				s.fail("unknown speed unit")
			}
		case "devices":
			seen = true
			for d := s.array(); d.next(); {
				gminerDevice(s, st.addGPU())
			}
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "a GMiner stat: no devices"); err != nil {
		return err
	}
	if unit == "" {
		// Before 1.34 GMiner named no unit; it then mined Equihash
		// variants only, counted in Sol/s.
		unit = UnitSolutions
		if st.Algorithm != "" {
			unit = unitOf(st.Algorithm)
		}
	}
	st.Unit = unit
	// GMiner reports no total: it is the devices' sum, as every monitor
	// takes it. Per-device shares add up to the totals when those are
	// missing (before 1.18).
	var total float64
	var acc, rej int64
	rates, shares := false, false
	for _, g := range st.GPUs {
		if g.Rate.Valid {
			total, rates = total+g.Rate.Value, true
		}
		if g.Shares.Accepted.Valid {
			acc, shares = acc+g.Shares.Accepted.Value, true
		}
		if g.Shares.Rejected.Valid {
			rej += g.Shares.Rejected.Value
		}
	}
	if rates {
		st.Rate = gpu.Some(total)
	}
	if shares && !st.Shares.Accepted.Valid {
		st.Shares.Accepted, st.Shares.Rejected = gpu.Some(acc), gpu.Some(rej)
	}
	st.scale(factor)
	return nil
}

func gminerDevice(s *scanner, g *GPUStats) {
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "gpu_id":
			g.Index = s.integer()
		case "bus_id":
			g.PCIBusID = normBusID(s.text())
		case "name":
			setString(&g.Name, s.text())
		case "speed":
			g.Rate = s.rate(1)
		case "accepted_shares":
			g.Shares.Accepted = s.count()
		case "rejected_shares":
			g.Shares.Rejected = s.count()
		case "stale_shares":
			g.Shares.Stale = s.count()
		case "invalid_shares":
			g.Shares.Invalid = s.count()
		case "temperature":
			g.TemperatureC = s.sensor()
		case "memory_temperature":
			g.MemTemperatureC = s.sensor()
		case "fan":
			g.FanPct = s.sensor() // GMiner reports 0 for "no fan reading"
		case "power_usage":
			g.PowerW = s.sensor()
		default:
			s.skip()
		}
	}
}
