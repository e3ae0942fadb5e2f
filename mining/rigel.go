package mining

import (
	"bytes"

	"github.com/gpufarm/gpufarm/gpu"
)

// rigel is Rigel (NVIDIA). --api-bind 127.0.0.1:<port> starts its HTTP API
// (no authentication); GET / answers in JSON. Every rate and counter is a
// map keyed by algorithm name ("a+b" when dual mining); the adapter reads
// the first algorithm's.
type rigel struct{ base }

func newRigel() Adapter {
	return rigel{base{name: "rigel", endpoints: []string{"stat"}, algos: map[string]string{
		"ethash": "ethash", "etchash": "etchash", "kawpow": "kawpow", "autolykos2": "autolykos2",
		"octopus": "octopus", "kheavyhash": "kheavyhash", "karlsenhash": "karlsenhash",
		"nexapow": "nexapow", "ironfish": "ironfish", "xelishashv3": "xelishashv3", "sha512256d": "sha512256d",
	}}}
}

func (a rigel) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	args := append(l.ccminerArgs(a.algos[l.Algorithm], p), "--api-bind", l.api(), "--no-watchdog")
	return append(args, l.Extra...), nil
}

func (rigel) Requests(string) []Request {
	return []Request{{Endpoint: "stat", Proto: ProtoHTTP, Path: "/"}}
}

func (rigel) Detect(body []byte) string {
	if bytes.Contains(body, []byte(`"solution_stat"`)) {
		return "stat"
	}
	return ""
}

func (a rigel) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	seen := false
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "version":
			setString(&st.Version, s.text())
		case "uptime":
			st.Uptime = s.seconds(1)
		case "algorithm":
			// "algorithm" comes before the maps in Rigel's replies; the
			// maps are read by the first algorithm of "a+b".
			v := s.text()
			if i := bytes.IndexByte(v, '+'); i >= 0 {
				v = v[:i]
			}
			setString(&st.Algorithm, v)
		case "hashrate":
			seen = true
			st.Rate = rigelRate(s, st.Algorithm)
		case "solution_stat":
			rigelShares(s, st.Algorithm, &st.Shares)
		case "power_usage":
			st.PowerW = s.sensor()
		case "pools":
			rigelPool(s, st)
		case "devices":
			seen = true
			for d := s.array(); d.next(); {
				rigelDevice(s, st.addGPU(), st.Algorithm)
			}
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "a Rigel reply: no hashrate and no devices"); err != nil {
		return err
	}
	st.Unit = unitOf(st.Algorithm)
	return nil
}

// rigelRate reads {"<algo>": rate}; without a known algorithm the first
// entry counts.
func rigelRate(s *scanner, algo string) gpu.Optional[float64] {
	var out gpu.Optional[float64]
	for m := s.object(); m.next(); {
		k := m.key()
		if r := s.rate(1); !out.Valid && (algo == "" || string(k) == algo) {
			out = r
		}
	}
	return out
}

func rigelShares(s *scanner, algo string, sh *Shares) {
	taken := false
	for m := s.object(); m.next(); {
		k := m.key()
		if taken || (algo != "" && string(k) != algo) {
			s.skip()
			continue
		}
		taken = true
		for f := s.object(); f.next(); {
			switch string(f.key()) {
			case "accepted":
				sh.Accepted = s.count()
			case "rejected":
				sh.Rejected = s.count()
			case "invalid":
				sh.Invalid = s.count()
			default:
				s.skip()
			}
		}
	}
}

// rigelPool reads {"<algo>": [{connection_details: {...}}]}: the first
// pool of the first algorithm.
func rigelPool(s *scanner, st *Stats) {
	for m := s.object(); m.next(); {
		m.key()
		for p := s.array(); p.next(); {
			if st.Pool != "" {
				s.skip()
				continue
			}
			var host, port, user, worker []byte
			for f := s.object(); f.next(); {
				if string(f.key()) != "connection_details" {
					s.skip()
					continue
				}
				for c := s.object(); c.next(); {
					switch string(c.key()) {
					case "hostname":
						host = s.text()
					case "port":
						port = s.text()
					case "username":
						user = s.text()
					case "worker":
						worker = s.text()
					default:
						s.skip()
					}
				}
			}
			if len(host) > 0 {
				st.Pool = string(host) + ":" + string(port)
			}
			st.User = joinLogin(user, worker)
		}
	}
}

func rigelDevice(s *scanner, g *GPUStats, algo string) {
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "id":
			g.Index = s.integer()
		case "name":
			setString(&g.Name, s.text())
		case "pci_address":
			g.PCIBusID = normBusID(s.text()) // hex "bus:device", "0b:0"
		case "hashrate":
			g.Rate = rigelRate(s, algo)
		case "solution_stat":
			rigelShares(s, algo, &g.Shares)
		case "monitoring_info":
			for m := s.object(); m.next(); {
				switch string(m.key()) {
				case "core_temperature":
					g.TemperatureC = s.sensor()
				case "memory_temperature":
					g.MemTemperatureC = s.sensor()
				case "fan_speed":
					g.FanPct = fan(s)
				case "power_usage":
					g.PowerW = s.sensor()
				default:
					s.skip()
				}
			}
		default:
			s.skip()
		}
	}
}
