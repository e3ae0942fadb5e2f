package mining

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixtureDirs maps each adapter to the folders of its captured replies.
var fixtureDirs = map[string][]string{
	"trex": {"t-rex"}, "lolminer": {"lolminer"}, "xmrig": {"xmrig"}, "gminer": {"gminer"},
	"nbminer": {"nbminer"}, "teamredminer": {"teamredminer"}, "rigel": {"rigel"}, "srbminer": {"srbminer"},
	"bzminer": {"bzminer"}, "claymore": {"claymore-phoenix"}, "phoenixminer": {"claymore-phoenix"},
	"ethminer": {"ethminer"}, "excavator": {"excavator"},
}

// tokenMiners are the adapters whose miners protect their API with a token.
var tokenMiners = []string{"xmrig", "claymore", "phoenixminer", "ethminer", "bzminer"}

// unboundMiners document no way to bind their API to an address.
var unboundMiners = []string{"gminer", "srbminer"}

func goodLaunch(a Adapter) Launch {
	return Launch{
		Algorithm: a.Algorithms()[0], Pool: "stratum+tcp://pool.example.com:4444",
		Wallet: "0x4296116d44a4a7259B52B1A756e19083e675062A", Worker: "rig-7", GPUs: 2, APIPort: 4099,
	}
}

var shellChars = regexp.MustCompile("[ \t\n;&|$`'\"<>(){}*?\\\\!#]")

// TestAdapterConformance is the contract every adapter keeps.
func TestAdapterConformance(t *testing.T) {
	names := map[string]bool{}
	for _, a := range Adapters() {
		t.Run(a.Name(), func(t *testing.T) {
			require.False(t, names[a.Name()], "names are unique")
			names[a.Name()] = true
			b, err := AdapterByName(a.Name())
			require.NoError(t, err)
			assert.Equal(t, a.Name(), b.Name())
			require.NotEmpty(t, a.Algorithms())
			assert.True(t, slices.IsSorted(a.Algorithms()))
			require.Contains(t, fixtureDirs, a.Name(), "every adapter has captured replies")

			t.Run("Args", func(t *testing.T) { conformArgs(t, a) })
			t.Run("BadLaunch", func(t *testing.T) { conformBadLaunch(t, a) })
			t.Run("Token", func(t *testing.T) { conformToken(t, a) })
			t.Run("BadReplies", func(t *testing.T) { conformBadReplies(t, a) })
			t.Run("Fixtures", func(t *testing.T) { conformFixtures(t, a) })
		})
	}
}

// Args select the GPUs, bind the API to 127.0.0.1 on the port, name the
// pool and wallet, and never contain shell syntax.
func conformArgs(t *testing.T, a Adapter) {
	for _, algo := range a.Algorithms() {
		l := goodLaunch(a)
		l.Algorithm = algo
		args, err := a.Args(l)
		require.NoError(t, err, algo)
		joined := strings.Join(args, " ")
		assert.Contains(t, joined, "4099", "the API port")
		if !slices.Contains(unboundMiners, a.Name()) {
			assert.Contains(t, joined, "127.0.0.1", "the API is bound to the loopback")
		}
		if a.Name() != "excavator" { // Excavator takes its pool through its API
			assert.Contains(t, joined, "pool.example.com:4444")
			assert.Contains(t, joined, l.Wallet)
		}
		for _, arg := range args {
			assert.False(t, shellChars.MatchString(arg), "argument %q has shell syntax", arg)
		}
	}
	l := goodLaunch(a)
	l.Extra = []string{"--intensity", "22"}
	args, err := a.Args(l)
	require.NoError(t, err)
	assert.Equal(t, []string{"--intensity", "22"}, args[len(args)-2:], "Extra comes last")
	if s, ok := a.(Starter); ok {
		reqs, err := s.StartRequests(l)
		require.NoError(t, err)
		assert.NotEmpty(t, reqs)
	}
}

// Bad fields are errors that name them, all at once.
func conformBadLaunch(t *testing.T, a Adapter) {
	cases := []struct {
		field string
		edit  func(*Launch)
	}{
		{"Launch.Algorithm", func(l *Launch) { l.Algorithm = "sha256-asic" }},
		{"Launch.Pool", func(l *Launch) { l.Pool = "stratum+tcp://pool.example.com:4444; rm -rf /" }},
		{"Launch.Pool", func(l *Launch) { l.Pool = "pool example.com:4444" }},
		{"Launch.Pool", func(l *Launch) { l.Pool = "pool.example.com" }},
		{"Launch.Wallet", func(l *Launch) { l.Wallet = "0xabc`reboot`" }},
		{"Launch.Wallet", func(l *Launch) { l.Wallet = "" }},
		{"Launch.Worker", func(l *Launch) { l.Worker = "rig 7" }},
		{"Launch.Password", func(l *Launch) { l.Password = "x$(id)" }},
		{"Launch.APIPort", func(l *Launch) { l.APIPort = 0 }},
		{"Launch.GPUs", func(l *Launch) { l.GPUs = -1 }},
		{"Launch.Extra[1]", func(l *Launch) { l.Extra = []string{"--ok", "a|b"} }},
	}
	for _, tc := range cases {
		l := goodLaunch(a)
		tc.edit(&l)
		_, err := a.Args(l)
		require.ErrorIs(t, err, ErrInvalid, tc.field)
		assert.Contains(t, err.Error(), tc.field)
	}
	l := goodLaunch(a)
	l.Algorithm, l.Wallet = "nope", "a b"
	_, err := a.Args(l)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "Launch.Algorithm")
	assert.Contains(t, err.Error(), "Launch.Wallet", "every bad field is named")
}

// A token is passed where the miner takes one and refused where it does
// not, rather than silently ignored.
func conformToken(t *testing.T, a Adapter) {
	l := goodLaunch(a)
	l.APIToken = "s3cretToken"
	args, err := a.Args(l)
	if !slices.Contains(tokenMiners, a.Name()) {
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), "Launch.APIToken")
		return
	}
	require.NoError(t, err)
	assert.Contains(t, args, "s3cretToken")
	var sent bool
	for _, r := range a.Requests("s3cretToken") {
		sent = sent || strings.Contains(r.Auth, "s3cretToken") || strings.Contains(string(r.Payload), "s3cretToken")
	}
	if a.Name() != "bzminer" { // BzMiner's password guards its control calls, not /status
		assert.True(t, sent, "the token goes with the poll")
	}
}

// Garbage, HTML, empty and truncated replies are ErrMalformed for every
// endpoint; an unknown endpoint is ErrInvalid.
func conformBadReplies(t *testing.T, a Adapter) {
	reqs := a.Requests("")
	require.NotEmpty(t, reqs)
	bad := map[string]string{
		"empty": "", "garbage": "\x01\x02garbage", "html": "<html><body>404</body></html>", "object": "{}",
		"array": "[1,2,3]", "number": "42", "string": `"summary"`, "truncated": `{"a":[1,2`,
	}
	for _, r := range reqs {
		for name, body := range bad {
			var st Stats
			err := a.Parse(r.Endpoint, []byte(body), &st)
			assert.ErrorIs(t, err, ErrMalformed, "%s: %s", r.Endpoint, name)
		}
	}
	var st Stats
	assert.ErrorIs(t, a.Parse("no-such-endpoint", []byte("{}"), &st), ErrInvalid)
	assert.Empty(t, a.Detect([]byte("<html><body>404</body></html>")))
}

// Every captured reply is recognised and parses; its numbers may also come
// as strings, as some miner versions send them, with the same result.
func conformFixtures(t *testing.T, a Adapter) {
	parsed := 0
	for _, fx := range fixtures {
		if fx.miner != a.Name() {
			continue
		}
		body := readFixture(t, fx.file)
		ep := a.Detect(body)
		require.NotEmpty(t, ep, fx.file)
		var want, got Stats
		require.NoError(t, a.Parse(ep, body, &want), fx.file)
		if txt := strings.TrimSpace(string(body)); strings.HasPrefix(txt, "{") || strings.HasPrefix(txt, "[") {
			require.NoError(t, a.Parse(ep, quoteNumbers(body), &got), fx.file)
			assert.Equal(t, want, got, "%s with quoted numbers", fx.file)
		}
		checkInvariants(t, &want)
		parsed++
	}
	assert.Positive(t, parsed)
}

// quoteNumbers turns every bare JSON number into a string: 1.5 -> "1.5".
func quoteNumbers(b []byte) []byte {
	var out []byte
	inStr := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inStr:
			out = append(out, c)
			if c == '\\' && i+1 < len(b) {
				i++
				out = append(out, b[i])
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
			out = append(out, c)
		case c == '-' || (c >= '0' && c <= '9'):
			j := i
			for j < len(b) && strings.IndexByte("+-.eE0123456789", b[j]) >= 0 {
				j++
			}
			out = append(out, '"')
			out = append(out, b[i:j]...)
			out = append(out, '"')
			i = j - 1
		default:
			out = append(out, c)
		}
	}
	return out
}

var busRE = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)
var uuidRE = regexp.MustCompile(`^(GPU|MIG)-[0-9a-f-]+$`)

// checkInvariants holds for any Stats a parser returns without error.
func checkInvariants(t testing.TB, st *Stats) {
	t.Helper()
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }
	if st.Rate.Valid && !finite(st.Rate.Value) {
		t.Errorf("rate %v", st.Rate.Value)
	}
	switch st.Unit {
	case UnitHashes, UnitSolutions, UnitGraphs:
	default:
		t.Errorf("unit %q", st.Unit)
	}
	for _, c := range []struct {
		v     int64
		valid bool
	}{{st.Shares.Accepted.Value, st.Shares.Accepted.Valid}, {st.Shares.Rejected.Value, st.Shares.Rejected.Valid}} {
		if c.valid && c.v < 0 {
			t.Errorf("negative share count %d", c.v)
		}
	}
	if st.Uptime.Valid && st.Uptime.Value < 0 {
		t.Errorf("negative uptime %v", st.Uptime.Value)
	}
	for _, g := range st.GPUs {
		if g.Rate.Valid && !finite(g.Rate.Value) {
			t.Errorf("GPU rate %v", g.Rate.Value)
		}
		if g.PCIBusID != "" && !busRE.MatchString(g.PCIBusID) {
			t.Errorf("GPU bus id %q is not normalised", g.PCIBusID)
		}
		if g.UUID != "" && !uuidRE.MatchString(g.UUID) {
			t.Errorf("GPU UUID %q", g.UUID)
		}
		for _, v := range []float64{g.PowerW.Value, g.TemperatureC.Value, g.FanPct.Value} {
			if !finite(v) {
				t.Errorf("GPU sensor %v", v)
			}
		}
	}
}

func TestAdapterByNameUnknown(t *testing.T) {
	_, err := AdapterByName("cgminer")
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "trex", "lists the known miners")
}

// T-Rex's bare UUID becomes NVIDIA's form; bus ids from every encoding
// normalise like gpu.NormalizePCIBusID.
func TestIdentityNormalisation(t *testing.T) {
	assert.Equal(t, "GPU-01c83c6f-c061-af84-7cd8-4920f291a37a", nvidiaUUID([]byte("01c83c6fc061af847cd84920f291a37a\x00")))
	assert.Equal(t, "GPU-c2950e37-ab34-00f5-0adb-b00708f65e46", nvidiaUUID([]byte("GPU-c2950e37-ab34-00f5-0adb-b00708f65e46")))
	assert.Empty(t, nvidiaUUID([]byte("not-a-uuid")))
	for in, want := range map[string]string{
		"0000:0A:00.0": "0000:0a:00.0", "01:00.0": "0000:01:00.0", "0b:0": "0000:0b:00.0", "n/a": "", "zz:00.0": "",
	} {
		assert.Equal(t, want, normBusID([]byte(in)), in)
	}
	assert.Equal(t, "0000:10:00.0", lolBusID([]byte("16:0")), "lolMiner's bus is decimal")
}

// TeamRedMiner's multi-command reply holds each command's reply under its
// name, as an object or a one-element array; devdetails gives the bus ids
// of the GPUs devs lists, whichever comes first.
func TestTeamRedMinerMultiCommand(t *testing.T) {
	devs := strings.TrimSpace(readFixtureString(t, "teamredminer/devs_0.3.8_6gpu_cnv8.json"))
	pools := strings.TrimSpace(readFixtureString(t, "teamredminer/pools_0.3.8_6gpu_cnv8.json"))
	details := `{"STATUS":[{"STATUS":"S","Description":"TeamRedMiner 0.3.8"}],"DEVDETAILS":[` +
		`{"DEVDETAILS":0,"Name":"GPU","ID":0,"Device Path":"0000:03:00.0"},{"DEVDETAILS":5,"Name":"GPU","ID":5,"Device Path":"0000:0A:00.0"},` +
		`{"DEVDETAILS":9,"Name":"GPU","ID":9,"Device Path":"0000:0c:00.0"}],"id":1}`
	for name, body := range map[string]string{
		"objects": `{"devdetails":` + details + `,"devs":` + devs + `,"pools":` + pools + `,"id":1}` + "\x00",
		"arrays":  `{"devs":[` + devs + `],"pools":[` + pools + `],"devdetails":[` + details + `],"id":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			a := newTeamRedMiner()
			require.Equal(t, "summary+devs+pools", a.Detect([]byte(body)))
			var st Stats
			require.NoError(t, a.Parse("summary+devs+pools", []byte(body), &st))
			require.Len(t, st.GPUs, 6, "GPU 9 of devdetails is not listed by devs")
			assert.Equal(t, "0000:03:00.0", st.GPUs[0].PCIBusID)
			assert.Equal(t, "0000:0a:00.0", st.GPUs[5].PCIBusID)
			assert.Empty(t, st.GPUs[1].PCIBusID)
			assert.Equal(t, 12573.0, st.Rate.Value)
			assert.Equal(t, "cnv8", st.Algorithm)
			assert.Equal(t, "stratum+tcp://pool.supportxmr.com:7777", st.Pool)
		})
	}
}
