package mining

import (
	"bytes"
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// trex is T-Rex (NVIDIA). Its HTTP API (GET /summary) is on by default at
// 127.0.0.1:4067 and read-only without an API key. Old builds also answered
// "summary" on a telnet port, in JSON or ccminer-style text; Parse reads
// all three.
type trex struct{ base }

func newTRex() Adapter {
	return trex{base{name: "trex", endpoints: []string{"summary"}, algos: map[string]string{
		"ethash": "ethash", "etchash": "etchash", "kawpow": "kawpow", "autolykos2": "autolykos2",
		"octopus": "octopus", "firopow": "firopow", "mtp": "mtp", "progpow": "progpow",
	}}}
}

func (a trex) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	args := append(l.ccminerArgs(a.algos[l.Algorithm], p), "--api-bind-http", l.api(), "--api-read-only")
	return append(args, l.Extra...), nil
}

func (trex) Requests(string) []Request {
	return []Request{{Endpoint: "summary", Proto: ProtoHTTP, Path: "/summary"}}
}

func (trex) Detect(body []byte) string {
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("NAME=")) || bytes.Contains(body, []byte(`"gpu_total"`)) {
		return "summary"
	}
	return ""
}

func (a trex) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	st.Unit = UnitHashes
	if t := bytes.TrimSpace(body); bytes.HasPrefix(t, []byte("NAME=")) {
		return parseCcminerText(t, st)
	}
	s := newScanner(body)
	var minute gpu.Optional[float64]
	var user, worker []byte
	seen := false
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "hashrate":
			st.Rate, seen = s.rate(1), true
		case "hashrate_minute":
			minute = s.rate(1)
		case "accepted_count":
			st.Shares.Accepted = s.count()
		case "rejected_count":
			st.Shares.Rejected = s.count()
		case "invalid_count":
			st.Shares.Invalid = s.count()
		case "algorithm":
			setString(&st.Algorithm, s.text())
		case "version":
			setString(&st.Version, s.text())
		case "uptime":
			st.Uptime = s.seconds(1)
		case "active_pool":
			for p := s.object(); p.next(); {
				switch string(p.key()) {
				case "url":
					setString(&st.Pool, s.text())
				case "user":
					user = s.text()
				case "worker":
					worker = s.text()
				default:
					s.skip()
				}
			}
		case "gpus":
			seen = true
			for g := s.array(); g.next(); {
				trexGPU(s, st.addGPU())
			}
		case "stat_by_gpu": // API 3.2-3.3: per-GPU shares, aligned with gpus[]
			i := 0
			for g := s.array(); g.next(); i++ {
				trexShares(s, &st.gpuAt(i).Shares)
			}
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "a T-Rex summary: no hashrate and no gpus"); err != nil {
		return err
	}
	if !st.Rate.Valid {
		st.Rate = minute
	}
	st.User = joinLogin(user, worker)
	return nil
}

func trexGPU(s *scanner, g *GPUStats) {
	domain, bus, dev := -1, -1, -1
	var minute gpu.Optional[float64]
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "device_id":
			g.Index = s.integer()
		case "hashrate":
			g.Rate = s.rate(1)
		case "hashrate_minute":
			minute = s.rate(1)
		case "name":
			setString(&g.Name, s.text())
		case "power":
			g.PowerW = s.sensor()
		case "temperature":
			g.TemperatureC = s.sensor()
		case "memory_temperature":
			g.MemTemperatureC = s.sensor()
		case "fan_speed":
			g.FanPct = fan(s)
		case "pci_domain":
			domain = s.integer()
		case "pci_bus":
			bus = s.integer()
		case "pci_id":
			dev = s.integer()
		case "uuid":
			g.UUID = nvidiaUUID(s.text())
		case "shares":
			trexShares(s, &g.Shares)
		default:
			s.skip()
		}
	}
	if !g.Rate.Valid {
		g.Rate = minute
	}
	if bus >= 0 {
		g.PCIBusID = pciBusID(domain, bus, max(dev, 0), 0)
	}
}

func trexShares(s *scanner, sh *Shares) {
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "accepted_count":
			sh.Accepted = s.count()
		case "rejected_count":
			sh.Rejected = s.count()
		case "invalid_count":
			sh.Invalid = s.count()
		default:
			s.skip()
		}
	}
}

// parseCcminerText reads the ccminer-style text T-Rex's telnet API
// answered with: "NAME=t-rex;VER=0.9.2;ALGO=x16r;KHS=5798.28;ACC=5;...|".
func parseCcminerText(t []byte, st *Stats) error {
	t = bytes.TrimSuffix(t, []byte("|"))
	s := &scanner{}
	seen := false
	for len(t) > 0 {
		var field []byte
		field, t, _ = bytes.Cut(t, []byte(";"))
		k, v, ok := bytes.Cut(field, []byte("="))
		if !ok {
			return fmt.Errorf("%w: ccminer text: field %q is not KEY=VALUE", ErrMalformed, field)
		}
		*s = scanner{b: v}
		switch string(k) {
		case "VER":
			setString(&st.Version, v)
		case "ALGO":
			setString(&st.Algorithm, v)
		case "KHS":
			st.Rate, seen = s.rate(1e3), true
		case "ACC":
			st.Shares.Accepted = s.count()
		case "REJ":
			st.Shares.Rejected = s.count()
		case "UPTIME":
			st.Uptime = s.seconds(1)
		}
		if s.err != nil {
			return fmt.Errorf("ccminer text %s: %w", k, s.err)
		}
	}
	if !seen {
		return fmt.Errorf("%w: ccminer text without KHS", ErrMalformed)
	}
	return nil
}

// fan reads a fan speed in percent; miners without a fan sensor report 0,
// which the GPU's own telemetry tells apart better, so 0 is kept.
func fan(s *scanner) gpu.Optional[float64] {
	v, ok := s.num()
	if !ok || v < 0 {
		return gpu.Optional[float64]{}
	}
	return gpu.Some(v)
}

// joinLogin is "user.worker", or user alone.
func joinLogin(user, worker []byte) string {
	if n := len(user) - len(worker); len(worker) == 0 || n > 0 && user[n-1] == '.' && bytes.Equal(user[n:], worker) {
		return string(user)
	}
	return string(user) + "." + string(worker)
}

// addGPU appends a GPU numbered by its position and returns it.
func (st *Stats) addGPU() *GPUStats {
	return st.gpuAt(len(st.GPUs))
}

// gpuAt returns the GPU at position i, appending empty ones numbered by
// position up to it.
func (st *Stats) gpuAt(i int) *GPUStats {
	for len(st.GPUs) <= i {
		st.GPUs = append(st.GPUs, GPUStats{Index: len(st.GPUs)})
	}
	return &st.GPUs[i]
}

// Reset empties st for a new poll, keeping the room of its GPU list.
func (st *Stats) Reset() {
	*st = Stats{GPUs: st.GPUs[:0]}
}
