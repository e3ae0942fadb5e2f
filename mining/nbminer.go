package mining

import (
	"bytes"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// nbminer is NBMiner (NVIDIA, AMD; discontinued in 2022). --api host:port
// serves GET /api/v1/status without authentication. Its rates are in the
// *_raw fields (H/s); the others are display strings. It reports a start
// time, not an uptime.
type nbminer struct{ base }

func newNBMiner() Adapter {
	return nbminer{base{name: "nbminer", endpoints: []string{"status"}, algos: map[string]string{
		"ethash": "ethash", "etchash": "etchash", "kawpow": "kawpow", "autolykos2": "ergo",
		"octopus": "octopus", "beamhash": "beamv3", "cuckoo29": "cuckoo_ae", "kheavyhash": "kaspa",
	}}}
}

func (a nbminer) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	args := []string{"-a", a.algos[l.Algorithm], "-o", p.url(), "-u", l.login(), "-d", l.devices(","),
		"--api", l.api(), "--no-watchdog"}
	return append(args, l.Extra...), nil
}

func (nbminer) Requests(string) []Request {
	return []Request{{Endpoint: "status", Proto: ProtoHTTP, Path: "/api/v1/status"}}
}

func (nbminer) Detect(body []byte) string {
	if bytes.Contains(body, []byte(`"stratum"`)) && bytes.Contains(body, []byte(`"miner"`)) {
		return "status"
	}
	return ""
}

func (a nbminer) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	seen := false
	var display gpu.Optional[float64]
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "version":
			setString(&st.Version, s.text())
		case "start_time":
			if v, ok := s.num(); ok && v > 0 {
				st.StartedAt = time.Unix(int64(v), 0).UTC()
			}
		case "miner":
			seen = true
			for m := s.object(); m.next(); {
				switch string(m.key()) {
				case "total_hashrate_raw":
					st.Rate = s.rate(1)
				case "total_hashrate":
					display = s.siRate()
				case "total_power_consume":
					st.PowerW = s.sensor()
				case "devices":
					for d := s.array(); d.next(); {
						nbDevice(s, st.addGPU())
					}
				default:
					s.skip()
				}
			}
		case "stratum":
			for m := s.object(); m.next(); {
				switch string(m.key()) {
				case "algorithm":
					setString(&st.Algorithm, s.text())
				case "url":
					setString(&st.Pool, s.text())
				case "user":
					setString(&st.User, s.text())
				case "accepted_shares":
					st.Shares.Accepted = s.count()
				case "rejected_shares":
					st.Shares.Rejected = s.count()
				case "invalid_shares":
					st.Shares.Invalid = s.count()
				default:
					s.skip()
				}
			}
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "an NBMiner status: no miner"); err != nil {
		return err
	}
	if !st.Rate.Valid { // before the _raw fields (v10 and older)
		st.Rate = display
	}
	st.Unit = unitOf(st.Algorithm)
	return nil
}

func nbDevice(s *scanner, g *GPUStats) {
	var display gpu.Optional[float64]
	defer func() {
		if !g.Rate.Valid {
			g.Rate = display
		}
	}()
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "id":
			g.Index = s.integer()
		case "info":
			setString(&g.Name, s.text())
		case "pci_bus_id":
			if bus := s.integer(); bus >= 0 {
				g.PCIBusID = pciBusID(0, bus, 0, 0)
			}
		case "hashrate_raw":
			g.Rate = s.rate(1)
		case "hashrate":
			display = s.siRate()
		case "accepted_shares":
			g.Shares.Accepted = s.count()
		case "rejected_shares":
			g.Shares.Rejected = s.count()
		case "invalid_shares":
			g.Shares.Invalid = s.count()
		case "power":
			g.PowerW = s.sensor()
		case "temperature":
			g.TemperatureC = s.sensor()
		case "memTemperature":
			g.MemTemperatureC = s.sensor() // -1 when the card has no sensor
		case "fan":
			g.FanPct = fan(s)
		default:
			s.skip()
		}
	}
}
