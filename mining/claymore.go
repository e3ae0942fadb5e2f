package mining

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// The Claymore family shares one API: JSON-RPC over TCP, one request per
// connection, whose miner_getstat1 result is nine strings of
// ';'-separated numbers and miner_getstat2 adds per-GPU share counts and
// PCI buses. Rates are in kH/s for Ethash, in H/s and Sol/s for Claymore's
// CryptoNote and ZCash builds (told by the coin in the version field).
//
//   - claymore: -mport 127.0.0.1:<port> (read-only when negative),
//     password -mpsw, sent as "psw" with every request.
//   - phoenixminer: -cdm 1 -cdmport 127.0.0.1:<port>, password -cdmpass.
//   - ethminer: --api-bind 127.0.0.1:-<port> (read-only), password
//     --api-password checked by an api_authorize call first.
type claymoreFamily struct {
	base
	variant string // "claymore", "phoenixminer", "ethminer"
}

func newClaymore() Adapter {
	return claymoreFamily{base{name: "claymore", endpoints: []string{"miner_getstat2", "miner_getstat1"},
		algos: map[string]string{"ethash": "", "etchash": "etc"}}, "claymore"}
}

func newPhoenixMiner() Adapter {
	return claymoreFamily{base{name: "phoenixminer", endpoints: []string{"miner_getstat2", "miner_getstat1"},
		algos: map[string]string{"ethash": "", "etchash": "etc", "ubqhash": "ubq"}}, "phoenixminer"}
}

func newEthminer() Adapter {
	return claymoreFamily{base{name: "ethminer", endpoints: []string{"miner_getstat1"},
		algos: map[string]string{"ethash": ""}}, "ethminer"}
}

func (a claymoreFamily) Args(l Launch) ([]string, error) {
	p, err := l.check(a)
	if err != nil {
		return nil, err
	}
	var args []string
	switch a.variant {
	case "claymore":
		args = []string{"-epool", p.hostPort(), "-ewal", l.login(), "-epsw", l.password(), "-di", devDigits(l.GPUs),
			"-mport", "127.0.0.1:-" + l.port()}
		if c := a.algos[l.Algorithm]; c != "" {
			args = append(args, "-allcoins", c)
		}
		if l.APIToken != "" {
			args = append(args, "-mpsw", l.APIToken)
		}
	case "phoenixminer":
		args = []string{"-pool", p.url(), "-wal", l.login(), "-pass", l.password(), "-gpus", l.devicesFrom1(","),
			"-cdm", "1", "-cdmport", l.api()}
		if c := a.algos[l.Algorithm]; c != "" {
			args = append(args, "-coin", c)
		}
		if l.APIToken != "" {
			args = append(args, "-cdmpass", l.APIToken)
		}
	default: // ethminer
		args = []string{"-P", ethminerURL(p, l), "--cuda", "--cuda-devices"}
		for i := range l.GPUs {
			args = append(args, strconv.Itoa(i))
		}
		args = append(args, "--api-bind", "127.0.0.1:-"+l.port())
		if l.APIToken != "" {
			args = append(args, "--api-password", l.APIToken)
		}
	}
	return append(args, l.Extra...), nil
}

// devDigits is Claymore's -di: the GPU indices as one string of digits.
func devDigits(n int) string {
	var b strings.Builder
	for i := range max(n, 1) {
		b.WriteString(strconv.FormatInt(int64(i), 36)) // 10 and on are a, b, ...
	}
	return b.String()
}

// devicesFrom1 lists PhoenixMiner's GPU numbers, which start at 1.
func (l Launch) devicesFrom1(sep string) string {
	var b strings.Builder
	for i := range max(l.GPUs, 1) {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(strconv.Itoa(i + 1))
	}
	return b.String()
}

// ethminerURL is ethminer's -P: scheme://wallet.worker:password@host:port.
func ethminerURL(p pool, l Launch) string {
	scheme := "stratum1+tcp"
	if p.tls {
		scheme = "stratum1+ssl"
	}
	return scheme + "://" + l.login() + ":" + l.password() + "@" + p.hostPort()
}

func (a claymoreFamily) Requests(token string) []Request {
	switch a.variant {
	case "ethminer":
		if token == "" {
			return []Request{{Endpoint: "miner_getstat1", Proto: ProtoTCP, Lines: 1,
				Payload: []byte(`{"id":1,"jsonrpc":"2.0","method":"miner_getstat1"}` + "\n")}}
		}
		auth := `{"id":1,"jsonrpc":"2.0","method":"api_authorize","params":{"psw":` + strconv.Quote(token) + `}}` + "\n"
		return []Request{{Endpoint: "miner_getstat1", Proto: ProtoTCP, Lines: 2,
			Payload: []byte(auth + `{"id":2,"jsonrpc":"2.0","method":"miner_getstat1"}` + "\n")}}
	default:
		psw := ""
		if token != "" {
			psw = `,"psw":` + strconv.Quote(token)
		}
		return []Request{{Endpoint: "miner_getstat2", Proto: ProtoTCP, Lines: 1,
			Payload: []byte(`{"id":0,"jsonrpc":"2.0","method":"miner_getstat2"` + psw + `}` + "\n")}}
	}
}

func (a claymoreFamily) Detect(body []byte) string {
	if !bytes.Contains(body, []byte(`"result"`)) {
		return ""
	}
	// getstat2 has at least 15 fields, getstat1 nine.
	var st Stats
	if n, err := claymoreFields(body, &st, a.variant); err == nil && n >= 15 {
		return "miner_getstat2"
	}
	return "miner_getstat1"
}

func (a claymoreFamily) Parse(ep string, body []byte, st *Stats) error {
	if err := a.begin(ep, st); err != nil {
		return err
	}
	_, err := claymoreFields(body, st, a.variant)
	return err
}

// claymoreFields parses a reply (several lines for ethminer with a
// password: the api_authorize answer first) and returns how many result
// fields it had.
func claymoreFields(body []byte, st *Stats, variant string) (int, error) {
	var result [20][]byte
	n, found := 0, false
	// One JSON object, or several (ethminer answers api_authorize first),
	// one after another.
	s := newScanner(body)
	for s.peek() != 0 {
		var rpcErr []byte
		for it := s.object(); it.next(); {
			switch string(it.key()) {
			case "result":
				if s.peek() != '[' { // api_authorize answers true
					s.skip()
					continue
				}
				found, n = true, 0
				for e := s.array(); e.next(); {
					if v := s.text(); n < len(result) {
						result[n] = v
						n++
					}
				}
			case "error":
				if s.peek() == 'n' {
					s.skip()
					continue
				}
				start := s.i
				s.skip()
				rpcErr = s.b[start:s.i]
			default:
				s.skip()
			}
		}
		if rpcErr != nil && s.err == nil {
			return 0, fmt.Errorf("%w: %s", ErrRefused, bytes.TrimSpace(rpcErr))
		}
		for s.i < len(s.b) && s.b[s.i] == 0 {
			s.i++
		}
	}
	if err := s.end(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%w: no miner_getstat result", ErrMalformed)
	}
	if n < 9 {
		return n, fmt.Errorf("%w: miner_getstat result has %d fields, want at least 9", ErrMalformed, n)
	}
	factor, err := claymoreHeader(result[0], st, variant)
	if err != nil {
		return n, err
	}
	var up gpu.Optional[float64]
	if k, err := eachNum(result[1], func(_ int, v gpu.Optional[float64]) { up = v }); err != nil || k != 1 || !up.Valid {
		return n, fmt.Errorf("%w: running time %q: want minutes", ErrMalformed, result[1])
	}
	st.Uptime = gpu.Some(time.Duration(up.Value * float64(time.Minute)))
	k, err := eachNum(result[2], func(i int, v gpu.Optional[float64]) {
		switch i {
		case 0:
			st.Rate = scaled(v, factor)
		case 1:
			st.Shares.Accepted = asCount(v)
		case 2:
			st.Shares.Rejected = asCount(v)
		}
	})
	if err != nil || k < 3 {
		return n, fmt.Errorf("%w: total %q: want rate;accepted;rejected", ErrMalformed, result[2])
	}
	if _, err := eachNum(result[3], func(i int, v gpu.Optional[float64]) { st.gpuAt(i).Rate = scaled(v, factor) }); err != nil {
		return n, fmt.Errorf("GPU rates: %w", err)
	}
	// Temperature and fan pairs; an empty field when the miner reads none.
	if _, err := eachNum(result[6], func(i int, v gpu.Optional[float64]) {
		if i/2 >= len(st.GPUs) {
			return
		}
		g := &st.GPUs[i/2]
		if i%2 == 1 {
			g.FanPct = v
		} else if v.Valid && v.Value > 0 {
			g.TemperatureC = v
		}
	}); err != nil {
		return n, fmt.Errorf("temperatures and fans: %w", err)
	}
	setString(&st.Pool, result[7])
	if _, err := eachNum(result[8], func(i int, v gpu.Optional[float64]) {
		if i == 0 {
			st.Shares.Invalid = asCount(v)
		}
	}); err != nil {
		return n, fmt.Errorf("invalid shares: %w", err)
	}
	if n < 12 {
		return n, nil
	}
	// getstat2: accepted, rejected and invalid shares per GPU.
	for k := range 3 {
		if _, err := eachNum(result[9+k], func(i int, v gpu.Optional[float64]) {
			if i >= len(st.GPUs) {
				return
			}
			sh := &st.GPUs[i].Shares
			switch k {
			case 0:
				sh.Accepted = asCount(v)
			case 1:
				sh.Rejected = asCount(v)
			default:
				sh.Invalid = asCount(v)
			}
		}); err != nil {
			return n, fmt.Errorf("per-GPU shares: %w", err)
		}
	}
	if n < 16 {
		return n, nil
	}
	// The PCI bus of each GPU, in decimal.
	if _, err := eachNum(result[15], func(i int, v gpu.Optional[float64]) {
		if i < len(st.GPUs) && v.Valid && v.Value <= 0xff {
			st.GPUs[i].PCIBusID = pciBusID(0, int(v.Value), 0, 0)
		}
	}); err != nil {
		return n, fmt.Errorf("PCI buses: %w", err)
	}
	return n, nil
}

// claymoreHeader reads field 0, "11.8 - ETH", "PM 5.7b - ETH",
// "ethminer-0.16.0.dev0+commit.41639944" or "0.19.0-beta.0+nhfix", and
// returns the factor from the reported unit to H/s (or Sol/s).
func claymoreHeader(f []byte, st *Stats, variant string) (float64, error) {
	v, coin, _ := strings.Cut(string(f), " - ")
	v = strings.TrimPrefix(strings.TrimSpace(v), "PM ")
	v = strings.TrimPrefix(v, "ethminer-")
	setString(&st.Version, []byte(v))
	switch strings.ToUpper(strings.TrimSpace(coin)) {
	case "XMR", "ETN", "SUMO", "AEON": // Claymore's CryptoNote builds: H/s
		st.Algorithm, st.Unit = "cryptonight", UnitHashes
		return 1, nil
	case "ZEC", "ZCL", "ZEN", "HUSH", "KMD": // Claymore's ZCash build: Sol/s
		st.Algorithm, st.Unit = "equihash", UnitSolutions
		return 1, nil
	case "ETC":
		st.Algorithm = "etchash"
	default:
		st.Algorithm = "ethash"
	}
	st.Unit = UnitHashes
	return 1e3, nil
}

// eachNum calls fn with each number of a ';'-separated field and returns
// how many there were; "off" and empty entries are absent, a negative or
// non-numeric one is an ErrMalformed. An empty field holds no numbers.
func eachNum(f []byte, fn func(i int, v gpu.Optional[float64])) (int, error) {
	f = bytes.TrimSpace(f)
	n := 0
	for ; len(f) > 0; n++ {
		var part []byte
		part, f, _ = bytes.Cut(f, []byte(";"))
		part = bytes.TrimSpace(part)
		if len(part) == 0 || string(part) == "off" {
			fn(n, gpu.Optional[float64]{})
			continue
		}
		v, err := strconv.ParseFloat(string(part), 64)
		if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return n, fmt.Errorf("%w: %q is not a count or rate", ErrMalformed, part)
		}
		fn(n, gpu.Some(v))
	}
	return n, nil
}

func scaled(v gpu.Optional[float64], factor float64) gpu.Optional[float64] {
	if v.Valid {
		v.Value *= factor
	}
	return v
}

func asCount(v gpu.Optional[float64]) gpu.Optional[int64] {
	if !v.Valid || v.Value != math.Trunc(v.Value) {
		return gpu.Optional[int64]{}
	}
	return gpu.Some(int64(v.Value))
}
