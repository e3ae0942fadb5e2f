package mining

import (
	"bytes"

	"github.com/gpufarm/gpufarm/gpu"
)

// xmrig is XMRig (CPU, CUDA and OpenCL backends). Its HTTP API is off by
// default; the adapter enables it on 127.0.0.1 with an access token when
// one is given (sent as "Authorization: Bearer <token>"). A poll reads
// /2/summary (totals; /1/summary adds per-thread rates that a bug of
// 6.20-6.22 truncates) and /2/backends (the GPUs, with their PCI bus ids).
// Legacy xmrig-nvidia and xmrig-amd builds answered at / with a health
// list per GPU; Parse reads that too.
type xmrig struct{ base }

func newXMRig() Adapter {
	return xmrig{base{name: "xmrig", endpoints: []string{"2/summary", "1/summary", "2/backends", "summary"}, algos: map[string]string{
		"randomx": "rx/0", "kawpow": "kawpow", "cryptonight": "cn/r", "cryptonight-gpu": "cn/gpu",
		"argon2-chukwa": "argon2/chukwav2", "ghostrider": "gr",
	}}}
}

func (a xmrig) Args(l Launch) ([]string, error) {
	p, err := l.check(a)
	if err != nil {
		return nil, err
	}
	args := []string{"-a", a.algos[l.Algorithm], "-o", p.hostPort(), "-u", l.Wallet, "-p", l.password()}
	if l.Worker != "" {
		args = append(args, "--rig-id", l.Worker)
	}
	if p.tls {
		args = append(args, "--tls")
	}
	args = append(args, "--no-cpu", "--cuda", "--cuda-devices="+l.devices(","),
		"--http-host", "127.0.0.1", "--http-port", l.port())
	if l.APIToken != "" {
		args = append(args, "--http-access-token", l.APIToken)
	}
	return append(args, l.Extra...), nil
}

func (xmrig) Requests(token string) []Request {
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	return []Request{
		{Endpoint: "2/summary", Proto: ProtoHTTP, Path: "/2/summary", Auth: auth},
		{Endpoint: "2/backends", Proto: ProtoHTTP, Path: "/2/backends", Auth: auth, Optional: true},
	}
}

func (xmrig) Detect(body []byte) string {
	t := bytes.TrimSpace(body)
	switch {
	case bytes.HasPrefix(t, []byte("[")) && bytes.Contains(t, []byte(`"type"`)):
		return "2/backends"
	case bytes.Contains(t, []byte(`"health"`)) && bytes.Contains(t, []byte(`"hashrate"`)):
		return "summary" // legacy xmrig-nvidia / xmrig-amd at /
	case bytes.Contains(t, []byte(`"threads": [`)) || bytes.Contains(t, []byte(`"threads":[`)):
		return "1/summary"
	case bytes.Contains(t, []byte(`"hashrate"`)) && bytes.Contains(t, []byte(`"results"`)):
		return "2/summary"
	}
	return ""
}

func (a xmrig) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	st.Unit = UnitHashes
	if ep == "2/backends" {
		return a.backends(body, st)
	}
	return a.summary(body, st)
}

// window picks XMRig's 60 s average, else the 10 s one: [10s, 60s, 15m],
// null until a window has filled.
func window(s *scanner) gpu.Optional[float64] {
	var w [3]gpu.Optional[float64]
	for i, it := 0, s.array(); it.next(); i++ {
		if i < len(w) {
			w[i] = s.rate(1)
		} else {
			s.skip()
		}
	}
	if w[1].Valid {
		return w[1]
	}
	return w[0]
}

func (xmrig) summary(body []byte, st *Stats) error {
	s := newScanner(body)
	var good, total gpu.Optional[int64]
	seen := false
	// Legacy GPU builds list a health entry per GPU, aligned with
	// hashrate.threads; for CPU builds the threads are CPU threads.
	var threads [64]gpu.Optional[float64]
	nthreads, health := 0, 0
	for it := s.object(); it.next(); {
		switch string(it.key()) {
		case "version":
			setString(&st.Version, s.text())
		case "algo":
			setString(&st.Algorithm, s.text())
		case "uptime":
			st.Uptime = s.seconds(1)
		case "worker_id":
			s.skip()
		case "results":
			for r := s.object(); r.next(); {
				switch string(r.key()) {
				case "shares_good":
					good = s.count()
				case "shares_total":
					total = s.count()
				default:
					s.skip()
				}
			}
		case "connection":
			for r := s.object(); r.next(); {
				switch string(r.key()) {
				case "pool":
					setString(&st.Pool, s.text())
				default:
					s.skip()
				}
			}
		case "hashrate":
			seen = true
			for h := s.object(); h.next(); {
				switch string(h.key()) {
				case "total":
					st.Rate = window(s)
				case "threads": // per CPU thread, or per GPU in legacy GPU builds
					for t := s.array(); t.next(); {
						if r := window(s); nthreads < len(threads) {
							threads[nthreads] = r
							nthreads++
						}
					}
				default:
					s.skip()
				}
			}
		case "health":
			for i, h := 0, s.array(); h.next(); i++ {
				health++
				g := st.gpuAt(i)
				for f := s.object(); f.next(); {
					switch string(f.key()) {
					case "name":
						setString(&g.Name, s.text())
					case "power":
						g.PowerW = s.sensor()
					case "temp":
						g.TemperatureC = s.sensor()
					case "fan":
						g.FanPct = fan(s)
					default:
						s.skip()
					}
				}
			}
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "an XMRig summary: no hashrate"); err != nil {
		return err
	}
	for i := 0; i < health && i < nthreads; i++ {
		st.GPUs[i].Rate = threads[i]
	}
	st.Shares.Accepted = good
	if good.Valid && total.Valid {
		st.Shares.Rejected = gpu.Some(max(total.Value-good.Value, 0))
	}
	return nil
}

// backends reads /2/backends: the GPUs are the threads of the enabled
// cuda and opencl backends, one per device (a GPU with two threads
// appears twice and is summed).
func (xmrig) backends(body []byte, st *Stats) error {
	s := newScanner(body)
	seen := false
	for b := s.array(); b.next(); {
		seen = true
		gpuBackend := false
		var threads []byte // read once the type is known, which may come after
		for f := s.object(); f.next(); {
			switch string(f.key()) {
			case "type":
				t := s.text()
				gpuBackend = string(t) == "cuda" || string(t) == "opencl"
			case "threads":
				start := s.i
				s.skip()
				threads = s.b[start:s.i]
			default:
				s.skip()
			}
		}
		if gpuBackend && threads != nil && s.err == nil {
			ts := scanner{b: threads}
			for t := ts.array(); t.next(); {
				xmrigThread(&ts, st)
			}
			if ts.err != nil {
				s.err = ts.err
			}
		}
	}
	if err := s.finish(seen, "an XMRig backends list: empty"); err != nil {
		return err
	}
	return nil
}

func xmrigThread(s *scanner, st *Stats) {
	var g GPUStats
	g.Index = -1
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "index":
			g.Index = s.integer()
		case "name":
			setString(&g.Name, s.text())
		case "bus_id":
			g.PCIBusID = normBusID(s.text())
		case "hashrate":
			g.Rate = window(s)
		case "health":
			for h := s.object(); h.next(); {
				switch string(h.key()) {
				case "temperature":
					g.TemperatureC = s.sensor()
				case "power":
					g.PowerW = s.sensor()
				case "fan_speed":
					for i, a := 0, s.array(); a.next(); i++ {
						if v := fan(s); i == 0 {
							g.FanPct = v
						}
					}
				default:
					s.skip()
				}
			}
		default:
			s.skip()
		}
	}
	// A second thread of the same device adds its rate.
	for i := range st.GPUs {
		o := &st.GPUs[i]
		if o.Index == g.Index && o.PCIBusID == g.PCIBusID && o.Name == g.Name {
			if g.Rate.Valid {
				o.Rate = gpu.Some(o.Rate.Value + g.Rate.Value)
			}
			return
		}
	}
	if g.Index < 0 {
		g.Index = len(st.GPUs)
	}
	st.GPUs = append(st.GPUs, g)
}
