package mining

import (
	"bytes"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// lolMiner (AMD, NVIDIA, Intel). Its API is off unless --apiport is given
// and listens on --apihost (0.0.0.0 by default since 1.21, so the adapter
// passes 127.0.0.1). GET /summary answers in one of three schemas: the
// flat one of 0.4x, v1 (Session and GPUs, up to about 1.3x) and v2
// (Workers and Algorithms, 1.4x on); Parse reads all three.
type lolMiner struct{ base }

func newLolMiner() Adapter {
	return lolMiner{base{name: "lolminer", endpoints: []string{"summary"}, algos: map[string]string{
		"ethash": "ETHASH", "etchash": "ETCHASH", "autolykos2": "AUTOLYKOS2", "beamhash": "BEAM-III",
		"equihash210_9": "EQUI210_9", "equihash144_5": "AUTO144_5", "equihash125_4": "ZEL",
		"nexapow": "NEXA", "kheavyhash": "KASPA", "ironfish": "IRONFISH",
	}}}
}

func (a lolMiner) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	algo := a.algos[l.Algorithm]
	var args []string
	if strings.HasPrefix(l.Algorithm, "equihash1") { // 144_5 and 125_4 are chosen by coin
		args = []string{"--coin", algo}
	} else {
		args = []string{"--algo", algo}
	}
	tls := "off"
	if p.tls {
		tls = "on"
	}
	args = append(args, "--pool", p.hostPort(), "--user", l.login(), "--pass", l.password(), "--tls", tls,
		"--devices", l.devices(","), "--apihost", "127.0.0.1", "--apiport", l.port())
	return append(args, l.Extra...), nil
}

func (lolMiner) Requests(string) []Request {
	return []Request{{Endpoint: "summary", Proto: ProtoHTTP, Path: "/summary"}}
}

func (lolMiner) Detect(body []byte) string {
	if bytes.Contains(body, []byte(`"Software"`)) && bytes.Contains(body, []byte("lolMiner")) {
		return "summary"
	}
	return ""
}

// lolMinerDoc is what the v1 and flat schemas say of the unit and the
// shares, which apply only once the whole reply is read.
type lolMinerDoc struct {
	v2        bool
	unit      Unit
	factor    float64
	unitKnown bool
	accepted  gpu.Optional[int64]
	submitted gpu.Optional[int64]
}

func (a lolMiner) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	var d lolMinerDoc
	seen := false
	for it := s.object(); it.next(); {
		k := it.key()
		switch string(k) {
		case "Software":
			v := s.text()
			setString(&st.Version, bytes.TrimSpace(bytes.TrimPrefix(v, []byte("lolMiner"))))
		case "Mining": // v1
			for m := s.object(); m.next(); {
				switch string(m.key()) {
				case "Algorithm":
					setString(&st.Algorithm, s.text())
				default:
					s.skip()
				}
			}
		case "Stratum": // v1
			for m := s.object(); m.next(); {
				switch string(m.key()) {
				case "Current_Pool":
					setString(&st.Pool, s.text())
				case "Current_User":
					setString(&st.User, s.text())
				default:
					s.skip()
				}
			}
		case "Session":
			seen = true
			a.session(s, st, &d)
		case "GPUs": // v1
			seen = true
			for g := s.array(); g.next(); {
				a.v1GPU(s, st.addGPU())
			}
		case "Workers": // v2
			seen, d.v2 = true, true
			for i, g := 0, s.array(); g.next(); i++ {
				a.v2Worker(s, st.gpuAt(i)) // Algorithms may have come first
			}
		case "Algorithms": // v2: the first is the main algorithm
			seen, d.v2 = true, true
			for i, g := 0, s.array(); g.next(); i++ {
				if i > 0 {
					s.skip()
					continue
				}
				a.v2Algorithm(s, st)
			}
		// The flat schema of 0.4x.
		case "Algorithm":
			setString(&st.Algorithm, s.text())
		case "ConnectedPool":
			setString(&st.Pool, s.text())
		case "ConnectedUser":
			setString(&st.User, s.text())
		case "TotalSpeed(60s)":
			if v := s.rate(1); v.Valid {
				st.Rate = v
			}
			seen = true
		case "TotalSpeed(5s)":
			if v := s.rate(1); !st.Rate.Valid {
				st.Rate = v
			}
			seen = true
		default:
			if bytes.HasPrefix(k, []byte("GPU")) && len(k) > 3 && k[3] >= '0' && k[3] <= '9' {
				a.flatGPU(s, st.addGPU())
				continue
			}
			s.skip()
		}
	}
	if err := s.finish(seen, "a lolMiner summary: no Session, GPUs or Workers"); err != nil {
		return err
	}
	if !d.v2 {
		// v1 and flat: the rates are in Performance_Unit, or, before it
		// existed, in the algorithm's own unit.
		st.Unit = unitOf(st.Algorithm)
		if d.unitKnown {
			st.Unit = d.unit
		} else {
			d.factor = 1
		}
		st.scale(d.factor)
	}
	if !st.Shares.Rejected.Valid && d.accepted.Valid && d.submitted.Valid {
		// v1 does not report rejected shares: submitted less accepted.
		st.Shares.Rejected = gpu.Some(max(d.submitted.Value-d.accepted.Value, 0))
	}
	return nil
}

func (lolMiner) session(s *scanner, st *Stats, d *lolMinerDoc) {
	for m := s.object(); m.next(); {
		switch string(m.key()) {
		case "Uptime":
			st.Uptime = s.seconds(1)
		case "Startup":
			if v, ok := s.num(); ok && v > 0 {
				st.StartedAt = time.Unix(int64(v), 0).UTC()
			}
		case "Performance_Summary":
			st.Rate = s.rate(1)
		case "Performance_Unit":
			d.unit, d.factor, d.unitKnown = unitText(s.text())
			if !d.unitKnown {
				s.fail("unknown Performance_Unit")
			}
		case "Accepted":
			d.accepted = s.count()
			st.Shares.Accepted = d.accepted
		case "Submitted":
			d.submitted = s.count()
		case "TotalPower":
			st.PowerW = s.sensor()
		default:
			s.skip()
		}
	}
}

func (lolMiner) v1GPU(s *scanner, g *GPUStats) {
	var acc, sub gpu.Optional[int64]
	for m := s.object(); m.next(); {
		switch string(m.key()) {
		case "Index":
			g.Index = s.integer()
		case "Name":
			setString(&g.Name, s.text())
		case "Performance":
			g.Rate = s.rate(1)
		case "Consumption (W)":
			g.PowerW = s.sensor()
		case "Fan Speed (%)":
			g.FanPct = s.sensor() // 0 is "no sensor" (DAG build, AMD without fan control)
		case "Temp (deg C)", "Temps (deg C)":
			g.TemperatureC = s.sensor()
		case "Mem Temp (deg C)":
			g.MemTemperatureC = s.sensor()
		case "Session_Accepted":
			acc = s.count()
		case "Session_Submitted":
			sub = s.count()
		case "Session_HWErr":
			g.Shares.Invalid = s.count()
		case "PCIE_Address":
			g.PCIBusID = lolBusID(s.text())
		default:
			s.skip()
		}
	}
	g.Shares.Accepted = acc
	if acc.Valid && sub.Valid {
		g.Shares.Rejected = gpu.Some(max(sub.Value-acc.Value, 0))
	}
}

func (lolMiner) v2Worker(s *scanner, g *GPUStats) {
	for m := s.object(); m.next(); {
		switch string(m.key()) {
		case "Index":
			g.Index = s.integer()
		case "Name":
			setString(&g.Name, s.text())
		case "Power":
			g.PowerW = s.sensor()
		case "Core_Temp":
			g.TemperatureC = s.sensor()
		case "Mem_Temp":
			g.MemTemperatureC = s.sensor()
		case "Fan_Speed":
			g.FanPct = s.sensor()
		case "PCIE_Address":
			g.PCIBusID = lolBusID(s.text())
		default:
			s.skip()
		}
	}
}

// v2Algorithm reads one entry of Algorithms: totals, and per worker
// arrays aligned with Workers.
func (lolMiner) v2Algorithm(s *scanner, st *Stats) {
	factor := 0.0
	var unit Unit
	var total gpu.Optional[float64]
	shares := func(set func(i int, v gpu.Optional[int64])) {
		for i, a := 0, s.array(); a.next(); i++ {
			set(i, s.count())
		}
	}
	for m := s.object(); m.next(); {
		switch string(m.key()) {
		case "Algorithm":
			setString(&st.Algorithm, s.text())
		case "Pool":
			setString(&st.Pool, s.text())
		case "User":
			setString(&st.User, s.text())
		case "Performance_Unit":
			unit, _, _ = unitText(s.text())
		case "Performance_Factor":
			if f, ok := s.num(); ok && f > 0 {
				factor = f
			}
		case "Total_Performance":
			total = s.rate(1)
		case "Total_Accepted":
			st.Shares.Accepted = s.count()
		case "Total_Rejected":
			st.Shares.Rejected = s.count()
		case "Total_Stales":
			st.Shares.Stale = s.count()
		case "Total_Errors":
			st.Shares.Invalid = s.count()
		case "Worker_Performance":
			for i, a := 0, s.array(); a.next(); i++ {
				st.gpuAt(i).Rate = s.rate(1)
			}
		case "Worker_Accepted":
			shares(func(i int, v gpu.Optional[int64]) { st.gpuAt(i).Shares.Accepted = v })
		case "Worker_Rejected":
			shares(func(i int, v gpu.Optional[int64]) { st.gpuAt(i).Shares.Rejected = v })
		case "Worker_Stales":
			shares(func(i int, v gpu.Optional[int64]) { st.gpuAt(i).Shares.Stale = v })
		case "Worker_Errors":
			shares(func(i int, v gpu.Optional[int64]) { st.gpuAt(i).Shares.Invalid = v })
		default:
			s.skip()
		}
	}
	if unit == "" {
		unit = unitOf(st.Algorithm)
	}
	if factor == 0 {
		factor = 1
	}
	st.Unit, st.Rate = unit, total
	st.scale(factor)
}

func (lolMiner) flatGPU(s *scanner, g *GPUStats) {
	var fast gpu.Optional[float64]
	for m := s.object(); m.next(); {
		switch string(m.key()) {
		case "Name":
			setString(&g.Name, s.text())
		case "Speed(60s)":
			g.Rate = s.rate(1)
		case "Speed(5s)":
			fast = s.rate(1)
		default:
			s.skip()
		}
	}
	if !g.Rate.Valid {
		g.Rate = fast
	}
}

// lolBusID reads lolMiner's PCIE_Address, "bus:device" with the bus in
// decimal ("16:0" is bus 0x10).
func lolBusID(b []byte) string {
	return parseBusID(bytes.TrimSpace(b), 10)
}
