package mining

import (
	"bytes"

	"github.com/gpufarm/gpufarm/gpu"
)

// bzMiner is BzMiner (NVIDIA, AMD, Intel). Its HTTP API is on by default
// on 0.0.0.0:4014; the adapter binds it to 127.0.0.1 and sets
// --http_password when a token is given. GET /status answers in JSON:
// pools[] (one per algorithm slot; from 9.0.0 an unused second slot is
// always there) and devices[] whose counters are arrays by slot. Parse
// also reads one element of pools[] on its own (endpoint "pool"), the only
// form a real capture exists of.
type bzMiner struct{ base }

func newBzMiner() Adapter {
	return bzMiner{base{name: "bzminer", endpoints: []string{"status", "pool"}, algos: map[string]string{
		"ethash": "ethash", "etchash": "etchash", "kawpow": "rvn", "autolykos2": "ergo",
		"kheavyhash": "kaspa", "karlsenhash": "karlsen", "nexapow": "nexa", "ironfish": "ironfish",
		"octopus": "cfx", "sha512256d": "radiant",
	}}}
}

func (a bzMiner) Args(l Launch) ([]string, error) {
	p, err := l.check(a)
	if err != nil {
		return nil, err
	}
	// BzMiner mines every GPU it sees; in its container those are l.GPUs.
	args := []string{"-a", a.algos[l.Algorithm], "-w", l.Wallet, "-p", p.url(), "--pool_password", l.password()}
	if l.Worker != "" {
		args = append(args, "-r", l.Worker)
	}
	args = append(args, "--nc", "1", "--no_watchdog", "--http_enabled", "1", "--http_address", "127.0.0.1", "--http_port", l.port())
	if l.APIToken != "" {
		args = append(args, "--http_password", l.APIToken)
	}
	return append(args, l.Extra...), nil
}

func (bzMiner) Requests(string) []Request {
	return []Request{{Endpoint: "status", Proto: ProtoHTTP, Path: "/status"}}
}

func (bzMiner) Detect(body []byte) string {
	switch {
	case bytes.Contains(body, []byte(`"bzminer_version"`)) || bytes.Contains(body, []byte(`"devices"`)) && bytes.Contains(body, []byte(`"pools"`)):
		return "status"
	case bytes.Contains(body, []byte(`"current_url"`)) && bytes.Contains(body, []byte(`"valid_solutions"`)):
		return "pool"
	}
	return ""
}

func (a bzMiner) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	if ep == "pool" {
		if err := s.finish(bzPool(s, st), "a BzMiner pool: no algorithm"); err != nil {
			return err
		}
		st.Unit = unitOf(st.Algorithm)
		return nil
	}
	seen := false
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "bzminer_version":
			setString(&st.Version, s.text())
		case "uptime_s":
			st.Uptime = s.seconds(1)
		case "pools":
			seen = true
			for i, p := 0, s.array(); p.next(); i++ {
				if i > 0 { // slot 0 is the main algorithm
					s.skip()
					continue
				}
				bzPool(s, st)
			}
		case "devices":
			seen = true
			for d := s.array(); d.next(); {
				bzDevice(s, st.addGPU())
			}
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "a BzMiner status: no pools and no devices"); err != nil {
		return err
	}
	if !st.Rate.Valid && len(st.GPUs) > 0 {
		var total float64
		for _, g := range st.GPUs {
			total += g.Rate.Value
		}
		st.Rate = gpu.Some(total)
	}
	st.Unit = unitOf(st.Algorithm)
	return nil
}

// bzPool reads one element of pools[] into st; it reports whether it named
// an algorithm.
func bzPool(s *scanner, st *Stats) bool {
	named := false
	var user, worker []byte
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "algorithm":
			setString(&st.Algorithm, s.text())
			named = true
		case "current_url":
			setString(&st.Pool, s.text())
		case "wallet":
			user = s.text()
		case "username":
			worker = s.text()
		case "hashrate":
			st.Rate = s.rate(1)
		case "valid_solutions":
			st.Shares.Accepted = s.count()
		case "rejected_solutions":
			st.Shares.Rejected = s.count()
		case "stale_solutions":
			st.Shares.Stale = s.count()
		case "invalid_solutions":
			st.Shares.Invalid = s.count()
		case "uptime_s":
			if !st.Uptime.Valid {
				st.Uptime = s.seconds(1)
			} else {
				s.skip()
			}
		default:
			s.skip()
		}
	}
	st.User = joinLogin(user, worker)
	return named
}

// bzDevice reads a device; its counters are arrays by algorithm slot, of
// which slot 0 is read.
func bzDevice(s *scanner, g *GPUStats) {
	first := func(read func()) {
		if s.peek() != '[' { // a single slot, as a plain value
			read()
			return
		}
		for i, a := 0, s.array(); a.next(); i++ {
			if i == 0 {
				read()
			} else {
				s.skip()
			}
		}
	}
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "id", "index":
			g.Index = s.integer()
		case "name":
			setString(&g.Name, s.text())
		case "pci_bus_id":
			if bus := s.integer(); bus >= 0 {
				g.PCIBusID = pciBusID(0, bus, 0, 0) // decimal
			}
		case "hashrate":
			first(func() { g.Rate = s.rate(1) })
		case "valid_solutions":
			first(func() { g.Shares.Accepted = s.count() })
		case "rejected_solutions":
			first(func() { g.Shares.Rejected = s.count() })
		case "stale_solutions":
			first(func() { g.Shares.Stale = s.count() })
		case "invalid_solutions":
			first(func() { g.Shares.Invalid = s.count() })
		case "core_temp":
			g.TemperatureC = s.sensor()
		case "mem_temp":
			g.MemTemperatureC = s.sensor()
		case "fan":
			g.FanPct = fan(s)
		case "power":
			g.PowerW = s.sensor()
		default:
			s.skip()
		}
	}
}
