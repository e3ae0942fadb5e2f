package mining

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/gpufarm/gpufarm/gpu"
)

// excavator is NiceHash Excavator (NVIDIA). It takes its work through its
// API, not its command line: the adapter starts it with the TCP API on
// 127.0.0.1:<port> (-i, -p; no authentication) and the Filler sends the
// StartRequests (subscribe, algorithm.add, worker.add per GPU) once it
// answers. A poll is five newline-terminated JSON calls: info,
// devices.get, algorithm.list, worker.list (per-GPU rates) and
// subscribe.info.
type excavator struct{ base }

func newExcavator() Adapter {
	return excavator{base{name: "excavator",
		endpoints: []string{"info", "devices.get", "device.get", "algorithm.list", "worker.list", "subscribe.info"},
		algos: map[string]string{
			"ethash": "daggerhashimoto", "kawpow": "kawpow", "autolykos2": "autolykos", "octopus": "octopus",
			"kheavyhash": "kheavyhash", "beamhash": "beamv3", "etchash": "etchash",
		}}}
}

func (a excavator) Args(l Launch) ([]string, error) {
	if _, err := l.checkNoToken(a); err != nil {
		return nil, err
	}
	return append([]string{"-i", "127.0.0.1", "-p", l.port(), "-wp", "0"}, l.Extra...), nil
}

func excavatorCall(method string, params ...string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":1,"method":"` + method + `","params":[`)
	for i, p := range params {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(p))
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

// StartRequests subscribe to the pool, add the algorithm and give it the
// container's GPUs.
func (a excavator) StartRequests(l Launch) ([]Request, error) {
	p, err := l.check(a)
	if err != nil {
		return nil, err
	}
	algo := a.algos[l.Algorithm]
	reqs := []Request{
		{Endpoint: "subscribe", Proto: ProtoTCP, Lines: 1, Payload: excavatorCall("subscribe", p.hostPort(), l.login())},
		{Endpoint: "algorithm.add", Proto: ProtoTCP, Lines: 1, Payload: excavatorCall("algorithm.add", algo)},
	}
	for i := range l.GPUs {
		reqs = append(reqs, Request{Endpoint: "worker.add", Proto: ProtoTCP, Lines: 1,
			Payload: excavatorCall("worker.add", algo, strconv.Itoa(i))})
	}
	return reqs, nil
}

func (excavator) Requests(string) []Request {
	var reqs []Request
	for _, m := range []string{"info", "devices.get", "algorithm.list", "worker.list", "subscribe.info"} {
		reqs = append(reqs, Request{Endpoint: m, Proto: ProtoTCP, Lines: 1, Payload: excavatorCall(m)})
	}
	return reqs
}

func (excavator) Detect(body []byte) string {
	for _, d := range []struct{ key, ep string }{
		{`"workers"`, "worker.list"}, {`"algorithms"`, "algorithm.list"}, {`"devices"`, "devices.get"},
		{`"device"`, "device.get"}, {`"build_platform"`, "info"}, {`"server_status"`, "subscribe.info"},
	} {
		if bytes.Contains(body, []byte(d.key)) {
			return d.ep
		}
	}
	return ""
}

func (a excavator) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	s := newScanner(body)
	seen := false
	var login []byte
	for it := s.object(); it.next(); {
		k := it.key()
		switch {
		case string(k) == "error":
			if s.peek() == 'n' {
				s.skip()
				continue
			}
			start := s.i
			s.skip()
			return fmt.Errorf("%w: %s: %s", ErrRefused, ep, bytes.TrimSpace(s.b[start:s.i]))
		case ep == "info" && string(k) == "version":
			seen = true
			setString(&st.Version, s.text())
		case ep == "info" && string(k) == "uptime":
			st.Uptime = s.seconds(1)
		case ep == "devices.get" && string(k) == "devices":
			seen = true
			for d := s.array(); d.next(); {
				excavatorDevice(s, st)
			}
		case ep == "device.get" && string(k) == "device":
			seen = true
			excavatorDevice(s, st)
		case ep == "algorithm.list" && string(k) == "algorithms":
			seen = true
			excavatorAlgorithms(s, st)
		case ep == "worker.list" && string(k) == "workers":
			seen = true
			for w := s.array(); w.next(); {
				excavatorWorker(s, st)
			}
		case ep == "subscribe.info" && string(k) == "address":
			seen = true
			setString(&st.Pool, s.text())
		case ep == "subscribe.info" && string(k) == "login":
			login = s.text()
		default:
			s.skip()
		}
	}
	if err := s.finish(seen, "an Excavator "+ep+" reply"); err != nil {
		return err
	}
	if login != nil {
		user, _, _ := bytes.Cut(login, []byte(":")) // "wallet.worker:password"
		setString(&st.User, user)
	}
	if st.Algorithm != "" {
		st.Unit = unitOf(st.Algorithm)
	} else if st.Unit == "" {
		st.Unit = UnitHashes
	}
	return nil
}

// excavatorAlgorithms reads algorithm.list; the first algorithm is the
// main one.
func excavatorAlgorithms(s *scanner, st *Stats) {
	for i, al := 0, s.array(); al.next(); i++ {
		if i > 0 {
			s.skip()
			continue
		}
		for f := s.object(); f.next(); {
			switch string(f.key()) {
			case "name":
				setString(&st.Algorithm, s.text())
			case "speed":
				st.Rate = s.rate(1)
			case "accepted_shares":
				st.Shares.Accepted = s.count()
			case "rejected_shares":
				st.Shares.Rejected = s.count()
			default:
				s.skip()
			}
		}
	}
}

func excavatorDevice(s *scanner, st *Stats) {
	var g GPUStats
	g.Index = -1
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "device_id":
			g.Index = s.integer()
		case "name":
			setString(&g.Name, s.text())
		case "uuid":
			g.UUID = nvidiaUUID(s.text())
		case "details":
			for d := s.object(); d.next(); {
				switch string(d.key()) {
				case "bus_id":
					if bus := s.integer(); bus >= 0 {
						g.PCIBusID = pciBusID(0, bus, 0, 0) // decimal
					}
				default:
					s.skip()
				}
			}
		case "gpu_temp":
			g.TemperatureC = s.sensor()
		case "gpu_power_usage":
			g.PowerW = s.sensor()
		case "gpu_fan_speed":
			g.FanPct = fan(s)
		default:
			s.skip()
		}
	}
	if g.Index < 0 {
		g.Index = len(st.GPUs)
	}
	d := st.gpuWithIndex(g.Index)
	rate := d.Rate // from worker.list, when it came first
	*d = g
	d.Rate = rate
}

func excavatorWorker(s *scanner, st *Stats) {
	index := -1
	var uuid string
	var rate gpu.Optional[float64]
	for f := s.object(); f.next(); {
		switch string(f.key()) {
		case "device_id":
			index = s.integer()
		case "device_uuid":
			uuid = nvidiaUUID(s.text())
		case "algorithms":
			for i, a := 0, s.array(); a.next(); i++ {
				for af := s.object(); af.next(); {
					if string(af.key()) == "speed" && i == 0 {
						rate = s.rate(1)
					} else {
						s.skip()
					}
				}
			}
		default:
			s.skip()
		}
	}
	if index < 0 {
		return
	}
	g := st.gpuWithIndex(index)
	g.Rate = rate
	if uuid != "" {
		g.UUID = uuid
	}
}
