package mining

import (
	"bytes"
	"strconv"

	"github.com/gpufarm/gpufarm/gpu"
)

// srbMiner is SRBMiner-MULTI (CPU, AMD, NVIDIA, Intel). --api-enable and
// --api-port start its API; SRBMiner documents no bind address and no
// authentication, so keep the port closed to the outside. GET / answers in
// JSON (3.x also at /api/v2/status, same schema). Parse also reads the
// flat schema of the legacy SRBMiner-CN.
type srbMiner struct{ base }

func newSRBMiner() Adapter {
	return srbMiner{base{name: "srbminer", endpoints: []string{"status"}, algos: map[string]string{
		"ethash": "ethash", "etchash": "etchash", "kawpow": "kawpow", "autolykos2": "autolykos2",
		"kheavyhash": "kaspa", "karlsenhash": "karlsenhash", "randomx": "randomx", "verushash": "verushash",
		"firopow": "firopow", "sha512256d": "sha512_256d_radiant", "xelishashv3": "xelishashv3",
	}}}
}

func (a srbMiner) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	args := []string{"--algorithm", a.algos[l.Algorithm], "--pool", p.hostPort(), "--wallet", l.Wallet,
		"--password", l.password()}
	if l.Worker != "" {
		args = append(args, "--worker", l.Worker)
	}
	if p.tls {
		args = append(args, "--tls", "true")
	}
	args = append(args, "--disable-cpu", "--gpu-id", l.devices(","), "--api-enable", "--api-port", l.port())
	return append(args, l.Extra...), nil
}

func (srbMiner) Requests(string) []Request {
	return []Request{{Endpoint: "status", Proto: ProtoHTTP, Path: "/"}}
}

func (srbMiner) Detect(body []byte) string {
	if bytes.Contains(body, []byte(`"miner_version"`)) {
		return "status"
	}
	return ""
}

func (a srbMiner) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	var legacyNow gpu.Optional[float64]
	seen := false
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "miner_version":
			seen = true
			setString(&st.Version, s.text())
		case "mining_time":
			st.Uptime = s.seconds(1)
		case "gpu_devices":
			for d := s.array(); d.next(); {
				srbDevice(s, st)
			}
		case "algorithms": // the first is the main algorithm
			for i, al := 0, s.array(); al.next(); i++ {
				if i > 0 {
					s.skip()
					continue
				}
				srbAlgorithm(s, st)
			}
		// Legacy SRBMiner-CN.
		case "cryptonight_type":
			setString(&st.Algorithm, s.text())
		case "hashrate_total_1min":
			st.Rate = s.rate(1)
		case "hashrate_total_now":
			legacyNow = s.rate(1)
		case "devices":
			for d := s.array(); d.next(); {
				srbLegacyDevice(s, st.addGPU())
			}
		case "shares":
			srbShares(s, &st.Shares)
		case "pool":
			srbPool(s, st)
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "an SRBMiner reply: no miner_version"); err != nil {
		return err
	}
	if !st.Rate.Valid {
		st.Rate = legacyNow
	}
	st.Unit = unitOf(st.Algorithm)
	return nil
}

func srbDevice(s *scanner, st *Stats) {
	var g GPUStats
	g.Index = -1
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "id":
			g.Index = s.integer()
		case "model":
			setString(&g.Name, s.text())
		case "bus_id":
			if bus := s.integer(); bus >= 0 {
				g.PCIBusID = pciBusID(0, bus, 0, 0) // decimal
			}
		case "temperature":
			g.TemperatureC = s.sensor()
		case "fan_speed_percent":
			g.FanPct = fan(s)
		case "asic_power":
			g.PowerW = s.sensor()
		default:
			s.skip()
		}
	}
	if g.Index < 0 {
		g.Index = len(st.GPUs)
	}
	d := st.gpuWithIndex(g.Index)
	rate, shares := d.Rate, d.Shares // set by algorithms when it came first
	*d = g
	d.Rate, d.Shares = rate, shares
}

func srbAlgorithm(s *scanner, st *Stats) {
	var now gpu.Optional[float64]
	perGPU := func(set func(g *GPUStats)) {
		for m := s.object(); m.next(); {
			k := m.key()
			i, ok := srbGPUKey(k)
			if !ok {
				s.skip()
				continue
			}
			set(st.gpuWithIndex(i))
		}
	}
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "name":
			setString(&st.Algorithm, s.text())
		case "pool":
			srbPool(s, st)
		case "shares":
			srbShares(s, &st.Shares)
		case "hashrate":
			for h := s.object(); h.next(); {
				switch string(h.key()) {
				case "1min":
					st.Rate = s.rate(1)
				case "now":
					now = s.rate(1)
				case "gpu":
					perGPU(func(g *GPUStats) { g.Rate = s.rate(1) })
				default:
					s.skip()
				}
			}
		case "gpu_accepted_shares":
			perGPU(func(g *GPUStats) { g.Shares.Accepted = s.count() })
		case "gpu_rejected_shares":
			perGPU(func(g *GPUStats) { g.Shares.Rejected = s.count() })
		case "gpu_compute_errors":
			perGPU(func(g *GPUStats) { g.Shares.Invalid = s.count() })
		default:
			s.skip()
		}
	}
	if !st.Rate.Valid {
		st.Rate = now
	}
}

// srbGPUKey reads "gpu3" as 3; "total" and other keys are not GPUs.
func srbGPUKey(k []byte) (int, bool) {
	if !bytes.HasPrefix(k, []byte("gpu")) {
		return 0, false
	}
	n, err := strconv.Atoi(string(k[3:]))
	return n, err == nil && n >= 0
}

func srbShares(s *scanner, sh *Shares) {
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "accepted":
			sh.Accepted = s.count()
		case "rejected":
			sh.Rejected = s.count()
		case "accepted_stale":
			sh.Stale = s.count()
		default:
			s.skip()
		}
	}
}

func srbPool(s *scanner, st *Stats) {
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "pool":
			setString(&st.Pool, s.text())
		case "wallet":
			setString(&st.User, s.text())
		default:
			s.skip()
		}
	}
}

func srbLegacyDevice(s *scanner, g *GPUStats) {
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "device_id":
			g.Index = s.integer()
		case "model":
			setString(&g.Name, s.text())
		case "bus_id":
			if bus := s.integer(); bus >= 0 {
				g.PCIBusID = pciBusID(0, bus, 0, 0)
			}
		case "hashrate":
			g.Rate = s.rate(1)
		case "temperature":
			g.TemperatureC = s.sensor()
		case "compute_errors":
			g.Shares.Invalid = s.count()
		default:
			s.skip()
		}
	}
}
