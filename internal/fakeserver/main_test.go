package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func get(url string) (int, map[string]any) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestHealthAfterLoad: /health answers 503 while the model loads and 200
// after, for both servers' arguments; the info endpoints say what was
// asked; a signal ends it with 0.
func TestHealthAfterLoad(t *testing.T) {
	tests := []struct {
		name string
		args func(port string) []string
		info string
	}{
		{"vllm", func(port string) []string {
			return []string{"/models/llama", "--host", "127.0.0.1", "--port", port, "--tensor-parallel-size", "2", "--max-model-len", "8192",
				"--gpu-memory-utilization", "0.9", "--enable-prefix-caching", "--fake-load-delay=300ms"}
		}, "/v1/models"},
		{"tgi", func(port string) []string {
			return []string{"--model-id", "/models/llama", "--hostname", "127.0.0.1", "--port=" + port, "--num-shard", "2",
				"--max-total-tokens", "8192", "--max-input-tokens", "6144", "--cuda-memory-fraction", "0.9", "--fake-load-delay", "300ms"}
		}, "/info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := strconv.Itoa(freePort(t))
			base := "http://127.0.0.1:" + port
			ctx, cancel := context.WithCancel(context.Background())
			var out, errb syncBuffer
			done := make(chan int, 1)
			start := time.Now()
			go func() { done <- run(ctx, tt.args(port), &out, &errb, 2) }()
			require.Eventually(t, func() bool { code, _ := get(base + "/health"); return code != 0 }, 5*time.Second, 5*time.Millisecond)
			code, _ := get(base + "/health")
			if time.Since(start) < 250*time.Millisecond {
				assert.Equal(t, http.StatusServiceUnavailable, code, "still loading")
			}
			require.Eventually(t, func() bool { code, _ := get(base + "/health"); return code == http.StatusOK }, 5*time.Second, 5*time.Millisecond)
			assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
			_, info := get(base + tt.info)
			assert.Contains(t, info, map[string]string{"vllm": "data", "tgi": "model_id"}[tt.name])
			assert.Contains(t, out.String(), "model loaded: /models/llama")
			cancel()
			assert.Equal(t, 0, <-done, errb.String())
			assert.Contains(t, out.String(), "shutting down")
		})
	}
}

func TestChecks(t *testing.T) {
	tests := []struct {
		name string
		args []string
		gpus int
		code int
		err  string
	}{
		{"more shards than GPUs", []string{"--model-id", "m", "--num-shard", "4"}, 2, 1, "parallel size 4 but the container sees 2 GPUs"},
		{"input not below total", []string{"--model-id", "m", "--max-total-tokens", "4096", "--max-input-tokens", "4096"}, 0, 1, "must be < `max_total_tokens`"},
		{"no model", []string{"--port", "9"}, 0, 2, "no model"},
		{"not a number", []string{"m", "--tensor-parallel-size", "two"}, 0, 2, `--tensor-parallel-size "two" is not a number`},
		{"bad share", []string{"m", "--gpu-memory-utilization", "1.5"}, 0, 1, "memory share 1.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb syncBuffer
			assert.Equal(t, tt.code, run(context.Background(), tt.args, &out, &errb, tt.gpus))
			assert.Contains(t, errb.String(), tt.err)
		})
	}
}
