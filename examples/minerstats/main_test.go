package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const fixtures = "../../mining/testdata/miners"

type output struct {
	Endpoint string `json:"endpoint"`
	Stats    struct {
		Miner  string  `json:"miner"`
		Unit   string  `json:"unit"`
		Rate   float64 `json:"rate"`
		Shares struct {
			Accepted *int64 `json:"accepted"`
		} `json:"shares"`
		GPUs []struct {
			PCIBusID string  `json:"pci_bus_id"`
			Rate     float64 `json:"rate"`
		} `json:"gpus"`
	} `json:"stats"`
}

// One reply of each miner, read from a file, prints the rate and GPUs an
// operator checks against the miner's own screen.
func TestFromFileEveryMiner(t *testing.T) {
	for _, tc := range []struct {
		miner, file, endpoint string
		rate                  float64
		gpus                  int
		bus0                  string
	}{
		{"trex", "t-rex/summary_0.26.4_api4.1_5gpu_kawpow_win.json", "summary", 158355093, 5, "0000:03:00.0"},
		{"lolminer", "lolminer/summary_1.16a_4gpu_ethash.json", "summary", 302.4e6, 4, "0000:03:00.0"},
		{"xmrig", "xmrig/2-backends_5.5.3_cpu+cuda-gtx1050ti_win.json", "2/backends", 0, 1, "0000:01:00.0"},
		{"gminer", "gminer/stat_2.73_1gpu_ethash_rtx3060_PYDICT-CONVERTED.json", "stat", 43429602, 1, "0000:01:00.0"},
		{"nbminer", "nbminer/api-v1-status_40.0_2gpu_ethash_lhr_OFFICIAL-README.json", "status", 146567481.51336715, 2, "0000:01:00.0"},
		{"teamredminer", "teamredminer/devs_0.3.8_6gpu_cnv8.json", "devs", 12573, 6, ""},
		{"rigel", "rigel/api-response_1.23.2_1gpu_xelishashv3_REWRAPPED.json", "stat", 12112.195564915472, 1, "0000:0b:00.0"},
		{"srbminer", "srbminer/root_LEGACY-SRBMiner-Cryptonight_1.7.9_1gpu.json", "status", 339, 1, "0000:02:00.0"},
		{"bzminer", "bzminer/status_9.0.0_pools-entry_ONLY.json", "pool", 0, 0, ""},
		{"claymore", "claymore-phoenix/getstat1_claymore-11.8_8gpu_eth.json", "miner_getstat1", 235321e3, 8, ""},
		{"phoenixminer", "claymore-phoenix/getstat2_phoenixminer-5.7b_4gpu_eth_18fields_COMMENTS-STRIPPED.json", "miner_getstat2", 122574e3, 4, "0000:01:00.0"},
		{"ethminer", "ethminer/getstat1_ethminer-0.16.0.dev0_6gpu.json", "miner_getstat1", 87221e3, 6, ""},
		{"excavator", "excavator/worker.list_OFFICIAL-DOC.json", "worker.list", 0, 1, ""},
	} {
		t.Run(tc.miner, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), &stdout, &stderr, []string{"-miner", tc.miner, "-file", filepath.Join(fixtures, tc.file)})
			require.Equal(t, 0, code, stderr.String())
			var o output
			require.NoError(t, json.Unmarshal(stdout.Bytes(), &o))
			assert.Equal(t, tc.endpoint, o.Endpoint, "told from the reply")
			assert.Equal(t, tc.miner, o.Stats.Miner)
			assert.InDelta(t, tc.rate, o.Stats.Rate, 1e-6*tc.rate)
			require.Len(t, o.Stats.GPUs, tc.gpus)
			if tc.bus0 != "" {
				assert.Equal(t, tc.bus0, o.Stats.GPUs[0].PCIBusID)
			}
		})
	}
}

// A reply the adapter cannot read exits 1 with an error that says why;
// bad flags exit 2 and say which.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	trunc, err := os.ReadFile(filepath.Join(fixtures, "xmrig/1-summary_6.20.0_TRUNCATED-BUG-issue3363.txt"))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"html page", []string{"-miner", "trex", "-file", write("a.html", "<html>502 Bad Gateway</html>")}, 1, "not a reply trex gives"},
		{"truncated XMRig", []string{"-miner", "xmrig", "-file", write("t.json", string(trunc))}, 1, "unexpected end of reply"},
		{"wrong endpoint", []string{"-miner", "xmrig", "-endpoint", "2/backends", "-file", filepath.Join(fixtures, "xmrig/2-summary_6.12.0-mo1_arm-cpu_moneroocean.json")}, 1, "want an array"},
		{"NaN", []string{"-miner", "gminer", "-file", write("n.json", `{"devices":[{"speed":"NaN"}],"server":"x"}`)}, 1, "finite number"},
		{"missing file", []string{"-miner", "trex", "-file", filepath.Join(dir, "nope")}, 1, "no such file"},
		{"unknown miner", []string{"-miner", "cgminer", "-file", "x"}, 2, "-miner: "},
		{"file and url", []string{"-miner", "trex", "-file", "x", "-url", "127.0.0.1:1"}, 2, "one of -file and -url"},
		{"bad flag", []string{"-nope"}, 2, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), &stdout, &stderr, tc.args)
			assert.Equal(t, tc.code, code)
			assert.Contains(t, stderr.String(), tc.want)
			assert.Empty(t, stdout.String())
		})
	}
}

// -url polls a live miner with its token.
func TestFromURL(t *testing.T) {
	body, err := os.ReadFile(filepath.Join(fixtures, "xmrig/2-summary_6.12.0-mo1_arm-cpu_moneroocean.json"))
	require.NoError(t, err)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(body)
	}))
	defer ts.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &stdout, &stderr, []string{"-miner", "xmrig", "-url", ts.URL, "-token", "tok"})
	require.Equal(t, 0, code, stderr.String())
	assert.Contains(t, stdout.String(), `"rate": 23.46`)
	assert.Contains(t, stdout.String(), `"addr": "`+strings.TrimPrefix(ts.URL, "http://"))

	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), &stdout, &stderr, []string{"-miner", "xmrig", "-url", ts.URL})
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "API token")
}
