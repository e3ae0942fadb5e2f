package mining

import (
	"bytes"
	"fmt"

	"github.com/gpufarm/gpufarm/gpu"
)

// teamRedMiner is TeamRedMiner (AMD). --api_listen=127.0.0.1:<port> starts
// its read-only sgminer-compatible API (no authentication): a JSON command
// over TCP, one per connection, answered by a JSON reply (sometimes ending
// in a NUL byte) after which the miner closes the connection. A poll asks
// for "summary+devs+pools" in one request, and, until it has them, for
// devdetails (each GPU's PCI bus id) in an optional second one. Parse reads single-command
// replies ({"STATUS":...,"DEVS":[...]}) and multi-command ones
// ({"summary":{...},"devs":{...}}, sections also accepted as one-element
// arrays).
type teamRedMiner struct{ base }

func newTeamRedMiner() Adapter {
	return teamRedMiner{base{name: "teamredminer",
		endpoints: []string{"summary+devs+pools", "summary", "devs", "pools", "devdetails"},
		algos: map[string]string{
			"ethash": "ethash", "etchash": "etchash", "kawpow": "kawpow", "autolykos2": "autolykos2",
			"kheavyhash": "kas", "firopow": "firopow", "cryptonight": "cnr", "nexapow": "nexapow",
		}}}
}

func (a teamRedMiner) Args(l Launch) ([]string, error) {
	p, err := l.checkNoToken(a)
	if err != nil {
		return nil, err
	}
	args := []string{"-a", a.algos[l.Algorithm], "-o", p.url(), "-u", l.login(), "-p", l.password(),
		"-d", l.devices(","), "--api_listen=" + l.api()}
	return append(args, l.Extra...), nil
}

func (teamRedMiner) Requests(string) []Request {
	return []Request{
		{Endpoint: "summary+devs+pools", Proto: ProtoTCP, Payload: []byte(`{"command":"summary+devs+pools"}`)},
		{Endpoint: "devdetails", Proto: ProtoTCP, Payload: []byte(`{"command":"devdetails"}`), Optional: true, Once: true},
	}
}

func (teamRedMiner) Detect(body []byte) string {
	switch {
	case bytes.Contains(body, []byte(`"summary"`)) || bytes.Contains(body, []byte(`"devs"`)):
		return "summary+devs+pools"
	case bytes.Contains(body, []byte(`"DEVDETAILS"`)):
		return "devdetails"
	case bytes.Contains(body, []byte(`"DEVS"`)):
		return "devs"
	case bytes.Contains(body, []byte(`"POOLS"`)):
		return "pools"
	case bytes.Contains(body, []byte(`"SUMMARY"`)):
		return "summary"
	}
	return ""
}

// trmDoc gathers what the sections of a reply say before it is combined.
type trmDoc struct {
	seen       bool
	summary    bool // a SUMMARY section set the totals
	poolActive bool // the pool taken is the active one
	paths      []devPath
}

// devPath is a DEVDETAILS entry: the bus id of the GPU the miner numbers id.
type devPath struct {
	id   int
	path string
}

func (a teamRedMiner) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	var d trmDoc
	a.section(s, st, &d, 0)
	if err := s.end(); err != nil {
		return err
	}
	if !d.seen {
		return fmt.Errorf("%w: not an sgminer reply: no SUMMARY, DEVS, POOLS or DEVDETAILS", ErrMalformed)
	}
	if st.Unit == "" {
		st.Unit = unitOf(st.Algorithm)
	}
	// Bus ids go to the GPUs DEVS lists (in this reply or an earlier one
	// of the poll); a GPU DEVS no longer lists is not brought back.
	for _, p := range d.paths {
		for i := range st.GPUs {
			if st.GPUs[i].Index == p.id {
				st.GPUs[i].PCIBusID = p.path
			}
		}
	}
	if !d.summary && len(st.GPUs) > 0 {
		// Only devices: the totals are their sums.
		var rate float64
		var acc, rej, inv int64
		for _, g := range st.GPUs {
			rate += g.Rate.Value
			acc += g.Shares.Accepted.Value
			rej += g.Shares.Rejected.Value
			inv += g.Shares.Invalid.Value
		}
		st.Rate = gpu.Some(rate)
		if !st.Shares.Accepted.Valid {
			st.Shares.Accepted, st.Shares.Rejected = gpu.Some(acc), gpu.Some(rej)
		}
		st.Shares.Invalid = gpu.Some(inv)
	}
	return nil
}

// section reads one reply object: upper-case sections are data, lower-case
// ones (a multi-command reply) hold replies of their own.
func (a teamRedMiner) section(s *scanner, st *Stats, d *trmDoc, depth int) {
	for it := s.object(); it.next(); {
		switch k := it.key(); string(k) {
		case "STATUS":
			for e := s.array(); e.next(); {
				for f := s.object(); f.next(); {
					switch string(f.key()) {
					case "STATUS":
						if string(s.text()) == "E" {
							s.fail("the miner answered with an error status")
						}
					case "Description":
						v := s.text()
						setString(&st.Version, bytes.TrimSpace(bytes.TrimPrefix(v, []byte("TeamRedMiner"))))
					default:
						s.skip()
					}
				}
			}
		case "SUMMARY":
			d.seen, d.summary = true, true
			for e := s.array(); e.next(); {
				var g GPUStats
				trmCounters(s, &g, func(key []byte) bool {
					if string(key) == "Elapsed" {
						st.Uptime = s.seconds(1)
						return true
					}
					return false
				})
				st.Rate, st.Shares.Accepted, st.Shares.Rejected, st.Shares.Invalid =
					g.Rate, g.Shares.Accepted, g.Shares.Rejected, g.Shares.Invalid
			}
		case "DEVS":
			d.seen = true
			for e := s.array(); e.next(); {
				g := &GPUStats{Index: -1}
				trmCounters(s, g, func(key []byte) bool {
					switch string(key) {
					case "GPU":
						g.Index = s.integer()
					case "Temperature":
						g.TemperatureC = s.sensor()
					case "TemperatureMem":
						g.MemTemperatureC = s.sensor()
					case "Fan Percent":
						g.FanPct = fan(s)
					default:
						return false
					}
					return true
				})
				if g.Index < 0 {
					g.Index = len(st.GPUs)
				}
				*st.gpuWithIndex(g.Index) = *g
			}
		case "POOLS":
			d.seen = true
			for e := s.array(); e.next(); {
				a.pool(s, st, d)
			}
		case "DEVDETAILS":
			d.seen = true
			for e := s.array(); e.next(); {
				id, path := -1, ""
				for f := s.object(); f.next(); {
					switch string(f.key()) {
					case "ID", "DEVDETAILS":
						if v := s.integer(); v >= 0 {
							id = v
						}
					case "Device Path":
						path = normBusID(s.text())
					default:
						s.skip()
					}
				}
				if id >= 0 && path != "" {
					d.paths = append(d.paths, devPath{id, path})
				}
			}
		case "summary", "devs", "pools", "devdetails", "summary2", "devs2", "pools2":
			if depth > 0 || (len(k) > 0 && k[len(k)-1] == '2') {
				s.skip()
				continue
			}
			if s.peek() == '[' {
				for e := s.array(); e.next(); {
					a.section(s, st, d, depth+1)
				}
			} else {
				a.section(s, st, d, depth+1)
			}
		default:
			s.skip()
		}
	}
}

func (teamRedMiner) pool(s *scanner, st *Stats, d *trmDoc) {
	var url, user, algo []byte
	var stale gpu.Optional[int64]
	active := false
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "URL":
			url = s.text()
		case "User":
			user = s.text()
		case "Algorithm":
			algo = s.text()
		case "Stale":
			stale = s.count()
		case "Stratum Active":
			active = s.boolean()
		default:
			s.skip()
		}
	}
	if d.poolActive || (st.Pool != "" && !active) {
		return
	}
	d.poolActive = active
	setString(&st.Pool, url)
	setString(&st.User, user)
	setString(&st.Algorithm, algo)
	st.Shares.Stale = stale
}

// trmCounters reads the sgminer counters shared by SUMMARY and DEVS
// entries into g, giving other members to more first.
func trmCounters(s *scanner, g *GPUStats, more func(key []byte) bool) {
	best := -1 // score of the rate key taken
	for f := s.object(); f.next(); {
		k := f.key()
		if more(k) {
			continue
		}
		switch string(k) {
		case "Accepted":
			g.Shares.Accepted = s.count()
		case "Rejected":
			g.Shares.Rejected = s.count()
		case "Hardware Errors":
			g.Shares.Invalid = s.count()
		default:
			factor, score, ok := sgminerRateKey(k)
			if !ok {
				s.skip()
				continue
			}
			r := s.rate(factor)
			if score > best && r.Valid {
				g.Rate, best = r, score
			}
		}
	}
}

// sgminerRateKey reads a rate key of the sgminer family, "<prefix>HS
// <window>" ("KHS 30s", "MHS av"), as its factor to H/s and a score: a
// windowed rate beats the session average, and a smaller prefix (more
// digits) beats a larger one.
func sgminerRateKey(k []byte) (factor float64, score int, ok bool) {
	unit, win, found := bytes.Cut(k, []byte(" "))
	if !found || !bytes.HasSuffix(unit, []byte("HS")) {
		return 0, 0, false
	}
	f, ok := siFactor(string(bytes.TrimSuffix(unit, []byte("HS"))))
	if !ok {
		return 0, 0, false
	}
	switch {
	case string(win) == "av":
		score = 0
	case len(win) > 1 && win[len(win)-1] == 's':
		score = 100
	default:
		return 0, 0, false
	}
	switch f {
	case 1:
		score += 4
	case 1e3:
		score += 3
	case 1e6:
		score += 2
	case 1e9:
		score++
	}
	return f, score, true
}

// gpuWithIndex returns the GPU the miner numbers i, appending it when the
// reply did not list it yet.
func (st *Stats) gpuWithIndex(i int) *GPUStats {
	for j := range st.GPUs {
		if st.GPUs[j].Index == i {
			return &st.GPUs[j]
		}
	}
	st.GPUs = append(st.GPUs, GPUStats{Index: i})
	return &st.GPUs[len(st.GPUs)-1]
}
