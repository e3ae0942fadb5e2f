package mining

import (
	"os"
	"path/filepath"
	"testing"
)

// fuzzAdapter feeds arbitrary replies to every endpoint of the adapter,
// seeded from its captured replies: parsing never panics, and what parses
// keeps the invariants (finite non-negative rates and counts, normalised
// bus ids).
func fuzzAdapter(f *testing.F, name string) {
	a, err := AdapterByName(name)
	if err != nil {
		f.Fatal(err)
	}
	for _, dir := range fixtureDirs[name] {
		files, _ := filepath.Glob(filepath.Join("testdata", "miners", dir, "*"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(`{"a":[{"b":-1e999}]}`))
	f.Add([]byte("\x00"))
	var endpoints []string
	for _, r := range a.Requests("") {
		endpoints = append(endpoints, r.Endpoint)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		eps := endpoints
		if ep := a.Detect(body); ep != "" {
			eps = append(eps[:len(eps):len(eps)], ep)
		}
		for _, ep := range eps {
			var st Stats
			if err := a.Parse(ep, body, &st); err == nil {
				checkInvariants(t, &st)
			}
		}
	})
}

func FuzzTRex(f *testing.F)         { fuzzAdapter(f, "trex") }
func FuzzLolMiner(f *testing.F)     { fuzzAdapter(f, "lolminer") }
func FuzzXMRig(f *testing.F)        { fuzzAdapter(f, "xmrig") }
func FuzzGMiner(f *testing.F)       { fuzzAdapter(f, "gminer") }
func FuzzNBMiner(f *testing.F)      { fuzzAdapter(f, "nbminer") }
func FuzzTeamRedMiner(f *testing.F) { fuzzAdapter(f, "teamredminer") }
func FuzzRigel(f *testing.F)        { fuzzAdapter(f, "rigel") }
func FuzzSRBMiner(f *testing.F)     { fuzzAdapter(f, "srbminer") }
func FuzzBzMiner(f *testing.F)      { fuzzAdapter(f, "bzminer") }
func FuzzClaymore(f *testing.F)     { fuzzAdapter(f, "claymore") }
func FuzzPhoenixMiner(f *testing.F) { fuzzAdapter(f, "phoenixminer") }
func FuzzEthminer(f *testing.F)     { fuzzAdapter(f, "ethminer") }
func FuzzExcavator(f *testing.F)    { fuzzAdapter(f, "excavator") }
