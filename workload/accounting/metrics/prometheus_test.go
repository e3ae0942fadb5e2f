package metrics_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requirePrometheus returns the prometheus binary (Debian package
// prometheus, which .ci/run installs). Without it the test skips on a
// developer's machine and fails with CI=true.
func requirePrometheus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus is not installed: apt-get install prometheus (.ci/run does): %v", err)
		}
		t.Skipf("prometheus is not installed (apt-get install prometheus): %v", err)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// lockedBuffer keeps what Prometheus logs, for the failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRealPrometheusScrapes starts a real Prometheus on loopback, with its
// data in a temporary folder, lets it scrape the collector every second,
// and reads the series back through its HTTP query API, as a dashboard
// would.
func TestRealPrometheusScrapes(t *testing.T) {
	bin := requirePrometheus(t)
	n := newNode(t)
	h, err := n.c.Handler()
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with Close below
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gpufarm
    static_configs:
      - targets: ["%s"]
`, ln.Addr())), 0o600))
	web := freePort(t)
	var logs lockedBuffer
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the one process this test started
		_ = cmd.Wait()
	})

	query := func(q string) ([]sample, error) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var body struct {
			Status string `json:"status"`
			Data   struct {
				Result []sample `json:"result"`
			} `json:"data"`
			Error string `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return nil, err
		}
		if body.Status != "success" {
			return nil, fmt.Errorf("query %q: %s", q, body.Error)
		}
		return body.Data.Result, nil
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		rs, err := query("DCGM_FI_DEV_POWER_USAGE")
		if err == nil && len(rs) == 8 {
			break
		}
		require.True(t, time.Now().Before(deadline), "Prometheus did not scrape 8 GPUs' power within a minute (last error %v); its log:\n%s", err, logs.String())
		time.Sleep(250 * time.Millisecond)
	}

	rs, err := query(`DCGM_FI_DEV_GPU_UTIL{gpu="0", Hostname="rig-7", device="nvidia0", modelName="NVIDIA A40"}`)
	require.NoError(t, err)
	require.Len(t, rs, 1, "a dashboard's selector finds GPU 0")
	assert.Equal(t, 90.0, rs[0].value(t))
	assert.Equal(t, "gpufarm", rs[0].Metric["job"])

	rs, err = query(`sum by (kind) (gpufarm_energy_joules_total)`)
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.Equal(t, "training", rs[0].Metric["kind"])
	var booked int64
	for _, tk := range n.meter.Stats().TenantKinds {
		booked += tk.EnergyMJ
	}
	assert.InDelta(t, float64(booked)/1000, rs[0].value(t), 1e-3, "Prometheus holds the joules the meter booked")

	for q, want := range map[string]float64{
		"gpufarm_queue_depth":                           2,
		"gpufarm_power_budget_watts":                    2000,
		`gpufarm_workloads{state="running"}`:            2,
		"count(gpufarm_workload_energy_joules_total)":   8,
		"count(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION)":   8,
		"sum(gpufarm_revenue_total) * 60 / (8 * 2)":     1.5,
		`count(DCGM_FI_DEV_XID_ERRORS{pci_bus_id!=""})`: 8,
	} {
		rs, err := query(q)
		require.NoError(t, err)
		require.Len(t, rs, 1, q)
		assert.InDelta(t, want, rs[0].value(t), 1e-6, q)
	}
}

// sample is one series of a query's vector result.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) value(t *testing.T) float64 {
	t.Helper()
	str, ok := s.Value[1].(string)
	require.True(t, ok)
	v, err := strconv.ParseFloat(str, 64)
	require.NoError(t, err)
	return v
}
