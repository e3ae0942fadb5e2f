package mining

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Adapter knows one miner program: how to launch it and how to read its
// monitoring API. Implementations are stateless and safe for concurrent
// use; the SDK's are listed by Adapters. An operator can write one for a
// miner the SDK lacks and pass it to NewClient or to a Filler's Miner.
type Adapter interface {
	// Name is the miner's short name: "trex", "lolminer", ...
	Name() string
	// Algorithms lists the algorithms Args accepts, by the SDK's lower-case
	// names ("ethash", "kawpow", "equihash125_4", ...).
	Algorithms() []string
	// Args returns the miner's command-line arguments for l, one argv
	// element each (never a shell string). They select the container's
	// GPUs by the order CDI gives them (0 to l.GPUs-1), point the miner
	// at the pool, and bind its API to 127.0.0.1:l.APIPort with
	// l.APIToken where the miner allows it. A bad field is an ErrInvalid
	// naming it.
	Args(l Launch) ([]string, error)
	// Requests are the API calls of one stats poll, in order.
	Requests(token string) []Request
	// Parse reads the reply to the request named endpoint into st, on top
	// of what earlier replies of the same poll put there. A reply it
	// cannot read is an ErrMalformed (ErrRefused when the miner reports an
	// error); an unknown endpoint is an ErrInvalid.
	Parse(endpoint string, body []byte, st *Stats) error
	// Detect names the endpoint a reply answers, from its content, or ""
	// when it cannot tell.
	Detect(body []byte) string
}

// Starter is an Adapter whose miner takes its work through its API after
// it started (NiceHash Excavator): the Filler sends StartRequests once the
// API answers.
type Starter interface {
	StartRequests(l Launch) ([]Request, error)
}

// Proto is how a request reaches the miner.
type Proto int

const (
	// ProtoHTTP: an HTTP GET of Path.
	ProtoHTTP Proto = iota
	// ProtoTCP: Payload written to a TCP connection, and the reply read
	// until Lines lines have come or the miner closes the connection.
	ProtoTCP
)

// Request is one API call of a poll.
type Request struct {
	// Endpoint names the call for Parse: "summary", "2/backends",
	// "miner_getstat2", ...
	Endpoint string
	Proto    Proto
	Path     string // HTTP: the path, "/summary"
	Auth     string // HTTP: the Authorization header, when the miner wants one
	Payload  []byte // TCP: the bytes sent
	Lines    int    // TCP: reply lines to read; 0 reads until the miner closes
	// Optional requests may fail without failing the poll (XMRig's
	// /2/backends on a build without GPU backends).
	Optional bool
	// Once requests ask for what does not change while the miner runs
	// (TeamRedMiner's devdetails: the GPUs' bus ids): a Client sends one
	// until it is answered, then parses that reply again at every poll.
	Once bool
}

// Launch is what a miner process is started with.
type Launch struct {
	// Algorithm is one of the adapter's Algorithms.
	Algorithm string
	// Pool is the stratum endpoint: "stratum+tcp://host:port",
	// "stratum+ssl://host:port" (also ssl:// and stratum+tls://), or
	// "host:port".
	Pool string
	// Wallet is the address or login to mine for; Worker, optional, names
	// the rig at the pool; Password is the pool password ("x" when empty).
	Wallet, Worker, Password string
	// GPUs is how many GPUs the container sees (default 1): the miner
	// uses devices 0 to GPUs-1, in the order CDI lists them.
	GPUs int
	// APIPort is the port of the miner's API on 127.0.0.1.
	APIPort int
	// APIToken protects the API where the miner supports it (XMRig's
	// Bearer token, Claymore's and PhoenixMiner's password, ethminer's
	// api_authorize, BzMiner's http_password). Adapters of miners without
	// API authentication refuse a token rather than ignore it.
	APIToken string
	// Extra arguments are appended as they are, one argv element each.
	Extra []string
}

var (
	schemeRE  = regexp.MustCompile(`^[a-z][a-z0-9+]{0,20}$`)
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$`)
	walletRE  = regexp.MustCompile(`^[A-Za-z0-9._:@/+=-]{1,256}$`)
	workerRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`)
	passRE    = regexp.MustCompile(`^[A-Za-z0-9._:@/+=,-]{0,128}$`)
	tokenRE   = regexp.MustCompile(`^[A-Za-z0-9._~+/=-]{0,256}$`)
	extraRE   = regexp.MustCompile(`^[A-Za-z0-9._:@/+=,-]{1,256}$`)
	tlsScheme = []string{"stratum+ssl", "stratum+tls", "ssl", "tls", "stratum2+ssl", "stratum1+ssl"}
)

// pool is a parsed Launch.Pool.
type pool struct {
	scheme string // "" when the URL had none
	host   string
	port   int
	tls    bool
}

func (p pool) hostPort() string { return p.host + ":" + strconv.Itoa(p.port) }

// url is the pool with a scheme: the one given, else stratum+tcp.
func (p pool) url() string {
	scheme := p.scheme
	if scheme == "" {
		scheme = "stratum+tcp"
	}
	return scheme + "://" + p.hostPort()
}

func parsePool(s string) (pool, error) {
	var p pool
	rest := s
	if scheme, after, ok := strings.Cut(s, "://"); ok {
		if !schemeRE.MatchString(scheme) {
			return p, fmt.Errorf("scheme %q: want stratum+tcp, stratum+ssl or similar", scheme)
		}
		p.scheme, rest = scheme, after
		p.tls = slices.Contains(tlsScheme, scheme)
	}
	host, port, ok := strings.Cut(rest, ":")
	if !ok || !hostRE.MatchString(host) {
		return p, fmt.Errorf("%q: want [scheme://]host:port with a host name or address, no spaces or shell characters", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return p, fmt.Errorf("%q: want a port from 1 to 65535", s)
	}
	p.host, p.port = host, n
	return p, nil
}

// check validates l for adapter a and returns the parsed pool; every bad
// field is named, all at once.
func (l *Launch) check(a Adapter) (pool, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Launch.%s: "+format, append([]any{field}, args...)...))
	}
	if !slices.Contains(a.Algorithms(), l.Algorithm) {
		bad("Algorithm", "%q: %s mines %s", l.Algorithm, a.Name(), strings.Join(a.Algorithms(), ", "))
	}
	p, err := parsePool(l.Pool)
	if err != nil {
		bad("Pool", "%v", err)
	}
	if !walletRE.MatchString(l.Wallet) {
		bad("Wallet", "%q: want 1 to 256 letters, digits or ._:@/+=- (no spaces or shell characters)", l.Wallet)
	}
	if !workerRE.MatchString(l.Worker) {
		bad("Worker", "%q: want up to 64 letters, digits or ._-", l.Worker)
	}
	if !passRE.MatchString(l.Password) {
		bad("Password", "want up to 128 letters, digits or ._:@/+=,- (no spaces or shell characters)")
	}
	if l.GPUs == 0 {
		l.GPUs = 1
	}
	if l.GPUs < 0 || l.GPUs > 64 {
		bad("GPUs", "%d: want 1 to 64", l.GPUs)
	}
	if l.APIPort < 1 || l.APIPort > 65535 {
		bad("APIPort", "%d: want a port from 1 to 65535", l.APIPort)
	}
	if !tokenRE.MatchString(l.APIToken) {
		bad("APIToken", "want up to 256 letters, digits or ._~+/=-")
	}
	for i, e := range l.Extra {
		if !extraRE.MatchString(e) {
			bad(fmt.Sprintf("Extra[%d]", i), "%q: want letters, digits or ._:@/+=,- (no spaces or shell characters)", e)
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("%w: %s: %w", ErrInvalid, a.Name(), errors.Join(errs...))
	}
	return p, nil
}

// checkNoToken is check for a miner whose API has no authentication: a
// token is refused rather than leave the operator believing the API is
// protected.
func (l *Launch) checkNoToken(a Adapter) (pool, error) {
	p, err := l.check(a)
	if err != nil {
		return p, err
	}
	if l.APIToken != "" {
		return p, fmt.Errorf("%w: %s: Launch.APIToken: %s's API has no authentication; leave it empty (the API is bound to 127.0.0.1)", ErrInvalid, a.Name(), a.Name())
	}
	return p, nil
}

// ccminerArgs is the command line many CUDA miners took from ccminer:
// -a algorithm -o pool -u wallet -p password [-w worker] -d devices.
func (l Launch) ccminerArgs(algo string, p pool) []string {
	args := []string{"-a", algo, "-o", p.url(), "-u", l.Wallet, "-p", l.password()}
	if l.Worker != "" {
		args = append(args, "-w", l.Worker)
	}
	return append(args, "-d", l.devices(","))
}

// login is the wallet with the worker appended after a dot, the form most
// miners take for "user".
func (l Launch) login() string {
	if l.Worker == "" {
		return l.Wallet
	}
	return l.Wallet + "." + l.Worker
}

func (l Launch) password() string {
	if l.Password == "" {
		return "x"
	}
	return l.Password
}

// devices lists the container's GPU indices, 0 to GPUs-1, joined by sep.
func (l Launch) devices(sep string) string {
	var b strings.Builder
	for i := range max(l.GPUs, 1) {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

func (l Launch) port() string { return strconv.Itoa(l.APIPort) }

func (l Launch) api() string { return "127.0.0.1:" + l.port() }

// base is what every adapter shares: its name, its algorithms (the SDK's
// name to the miner's) and the endpoints it parses.
type base struct {
	name      string
	algos     map[string]string
	endpoints []string
}

func (b base) Name() string { return b.name }

func (b base) Algorithms() []string {
	out := make([]string, 0, len(b.algos))
	for k := range b.algos {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// begin starts a Parse: an endpoint the adapter does not parse is an
// ErrInvalid; the stats are the adapter's.
func (b base) begin(ep string, st *Stats) error {
	if !slices.Contains(b.endpoints, ep) {
		return fmt.Errorf("%w: %s has no endpoint %q: use one of %s", ErrInvalid, b.name, ep, strings.Join(b.endpoints, ", "))
	}
	st.Miner = b.name
	return nil
}

// Adapters returns the SDK's adapters, one per miner, ordered by name.
func Adapters() []Adapter {
	return []Adapter{
		newBzMiner(), newClaymore(), newEthminer(), newExcavator(), newGMiner(), newLolMiner(), newNBMiner(),
		newPhoenixMiner(), newRigel(), newSRBMiner(), newTeamRedMiner(), newTRex(), newXMRig(),
	}
}

// AdapterByName returns the adapter of the miner named name (as
// Adapter.Name reports it: "trex", "lolminer", ...). An unknown name is an
// ErrInvalid listing the known ones.
func AdapterByName(name string) (Adapter, error) {
	var names []string
	for _, a := range Adapters() {
		if a.Name() == name {
			return a, nil
		}
		names = append(names, a.Name())
	}
	return nil, fmt.Errorf("%w: unknown miner %q: use one of %s", ErrInvalid, name, strings.Join(names, ", "))
}

// unitOf is the unit a miner's rate for algo counts in, by the algorithm's
// name as miners spell it.
func unitOf(algo string) Unit {
	has := func(sub string) bool { return containsFold(algo, sub) }
	switch {
	case has("equi"), has("zhash"), has("zelhash"), has("beam"), has("aion"):
		return UnitSolutions
	case has("cuck"), has("cortex"), has("grin"), has("aeternity"), hasPrefixFold(algo, "c29"),
		hasPrefixFold(algo, "c31"), hasPrefixFold(algo, "c32"):
		return UnitGraphs
	}
	return UnitHashes
}

// containsFold is strings.Contains ignoring ASCII case, without
// allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// unitText reads a miner's unit string ("H/s", "Mh/s", "sol/s", "G/s") as
// a unit and the factor to H/s (or Sol/s, G/s).
func unitText(b []byte) (Unit, float64, bool) {
	t := strings.ToLower(strings.TrimSpace(string(b)))
	unit := UnitHashes
	switch {
	case strings.HasSuffix(t, "sol/s"):
		unit, t = UnitSolutions, strings.TrimSuffix(t, "sol/s")
	case strings.HasSuffix(t, "g/s"):
		unit, t = UnitGraphs, strings.TrimSuffix(t, "g/s")
	case strings.HasSuffix(t, "h/s"):
		t = strings.TrimSuffix(t, "h/s")
	default:
		return "", 0, false
	}
	f, ok := siFactor(t)
	return unit, f, ok
}

// siFactor is the factor of an SI prefix: "" 1, "k" 1e3, "M" 1e6, ...
// (either case).
func siFactor(p string) (float64, bool) {
	if p == "" {
		return 1, true
	}
	if len(p) != 1 {
		return 0, false
	}
	switch p[0] | 0x20 { // lower case
	case 'k':
		return 1e3, true
	case 'm':
		return 1e6, true
	case 'g':
		return 1e9, true
	case 't':
		return 1e12, true
	case 'p':
		return 1e15, true
	}
	return 0, false
}

// pciBusID formats a bus id from numbers as gpu.NormalizePCIBusID does
// ("0000:0a:00.0"); an unknown (negative) domain is 0, an out-of-range
// part makes it empty.
func pciBusID(domain, bus, dev, fn int) string {
	if bus < 0 || bus > 0xff || dev < 0 || dev > 0x1f || fn < 0 || fn > 7 || domain > 0xffff {
		return ""
	}
	domain = max(domain, 0)
	const hex = "0123456789abcdef"
	b := [12]byte{
		hex[domain>>12&0xf], hex[domain>>8&0xf], hex[domain>>4&0xf], hex[domain&0xf], ':',
		hex[bus>>4], hex[bus&0xf], ':', hex[dev>>4], hex[dev&0xf], '.', hex[fn],
	}
	return string(b[:])
}

// normBusID normalises a hex bus id as miners print it ("0000:0A:00.0",
// "01:00.0", "0b:0"); "" when it cannot.
func normBusID(b []byte) string {
	return parseBusID(bytes.TrimSpace(b), 16)
}

// parseBusID reads [domain:]bus:device[.function], the bus in base (16, or
// 10 for lolMiner), without allocating but for the result.
func parseBusID(b []byte, base uint64) string {
	var parts [3][]byte
	n := 0
	for len(b) > 0 && n < 3 {
		var p []byte
		p, b, _ = bytes.Cut(b, []byte(":"))
		parts[n] = p
		n++
	}
	if len(b) > 0 || n < 2 {
		return ""
	}
	domain, busPart, devPart := []byte("0"), parts[0], parts[1]
	if n == 3 {
		domain, busPart, devPart = parts[0], parts[1], parts[2]
	}
	devPart, fnPart, _ := bytes.Cut(devPart, []byte("."))
	if len(fnPart) == 0 {
		fnPart = []byte("0")
	}
	d, ok1 := parseUint(domain, 16, 0xffff)
	bu, ok2 := parseUint(busPart, base, 0xff)
	dv, ok3 := parseUint(devPart, 16, 0x1f)
	fn, ok4 := parseUint(fnPart, 16, 7)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return ""
	}
	return pciBusID(int(d), int(bu), int(dv), int(fn))
}

// parseUint reads a non-empty number in base up to limit.
func parseUint(b []byte, base, limit uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
	}
	return v, v <= limit
}

// nvidiaUUID turns T-Rex's bare 32 hex digits (possibly NUL-terminated)
// into NVIDIA's "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; a UUID already
// in that form is kept.
func nvidiaUUID(b []byte) string {
	b = bytes.TrimRight(bytes.TrimSpace(b), "\x00")
	if len(b) == 0 {
		return ""
	}
	if bytes.HasPrefix(b, []byte("GPU-")) || bytes.HasPrefix(b, []byte("MIG-")) {
		return string(b)
	}
	if len(b) != 32 {
		return ""
	}
	var out [40]byte
	copy(out[:], "GPU-")
	j := 4
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return ""
		}
		if i == 8 || i == 12 || i == 16 || i == 20 {
			out[j] = '-'
			j++
		}
		out[j] = c
		j++
	}
	return string(out[:])
}
