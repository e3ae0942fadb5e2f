package mining

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/gpu/sim"
)

// switchable serves good replies until told to misbehave.
type switchable struct {
	mu    sync.Mutex
	good  []byte
	fault func(w http.ResponseWriter, r *http.Request)
}

func (s *switchable) set(fault func(w http.ResponseWriter, r *http.Request)) {
	s.mu.Lock()
	s.fault = fault
	s.mu.Unlock()
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	fault := s.fault
	s.mu.Unlock()
	if fault != nil {
		fault(w, r)
		return
	}
	_, _ = w.Write(s.good)
}

func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// A miner API that hangs, answers garbage, an HTML page, a cut or a huge
// body, NaN or a negative count gives a typed error within the timeout;
// the reading turns unhealthy and keeps the last good stats with their age.
func TestClientFaults(t *testing.T) {
	good := readFixture(t, "t-rex/summary_0.26.4_api4.1_5gpu_kawpow_win.json")
	const timeout = 300 * time.Millisecond
	huge := bytes.Repeat([]byte(" "), 10<<20)
	cases := []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request)
		want  error
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, ErrUnavailable},
		{"garbage", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("\x00\x13garbage{{")) }, ErrMalformed},
		{"HTML error page", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("<html><body>500 Internal Server Error</body></html>"))
		}, ErrRefused},
		{"HTML page with 200", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("<!DOCTYPE html><html><body>T-Rex</body></html>"))
		}, ErrMalformed},
		{"truncated body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5917")
			_, _ = w.Write(good[:1000])
		}, ErrMalformed},
		{"truncated JSON", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(good[:len(good)/2]) }, ErrMalformed},
		{"10 MB", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(huge) }, ErrMalformed},
		{"NaN rate", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(bytes.Replace(good, []byte(`"hashrate": 158355093`), []byte(`"hashrate": "NaN"`), 1))
		}, ErrMalformed},
		{"negative count", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(bytes.Replace(good, []byte(`"accepted_count": 77`), []byte(`"accepted_count": -77`), 1))
		}, ErrMalformed},
		{"wrong token", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) }, ErrRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := &switchable{good: good}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			clk := sim.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
			c, err := NewClient(newTRex(), hostOf(ts.URL), WithTimeout(timeout), WithClientClock(clk))
			require.NoError(t, err)
			defer c.Close()

			r, err := c.Poll(context.Background())
			require.NoError(t, err)
			require.True(t, r.Healthy)
			assert.Equal(t, 158355093.0, r.Stats.Rate.Value)

			srv.set(tc.fault)
			clk.Advance(30 * time.Second)
			start := time.Now()
			r, err = c.Poll(context.Background())
			took := time.Since(start)
			require.ErrorIs(t, err, tc.want)
			assert.Less(t, took, timeout+200*time.Millisecond, "the poll ends within the timeout")
			assert.False(t, r.Healthy)
			assert.ErrorIs(t, r.Err, tc.want)
			assert.Equal(t, 1, r.Failures)
			assert.Equal(t, 158355093.0, r.Stats.Rate.Value, "the last good stats are kept")
			assert.Equal(t, 30*time.Second, r.Age(clk.Now()), "with their age")
			assert.Equal(t, r, c.Reading())

			srv.set(nil)
			r, err = c.Poll(context.Background())
			require.NoError(t, err)
			assert.True(t, r.Healthy)
			assert.Zero(t, r.Age(clk.Now()))
		})
	}
}

// A miner that is not there is unavailable, quickly.
func TestClientRefusedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	for _, a := range []Adapter{newTRex(), newTeamRedMiner(), newClaymore()} {
		c, err := NewClient(a, addr)
		require.NoError(t, err)
		r, err := c.Poll(context.Background())
		assert.ErrorIs(t, err, ErrUnavailable, a.Name())
		assert.False(t, r.Healthy)
		assert.True(t, r.At.IsZero(), "no good stats yet")
	}
}

// tcpMiner answers each connection with reply(request).
func tcpMiner(t *testing.T, reply func(req []byte, conn net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() { // ends when the listener closes
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				line, _ := bufio.NewReader(conn).ReadBytes('}')
				reply(line, conn)
			}()
		}
	}()
	return ln.Addr().String()
}

// The TCP miners: a reply ending in NUL is read without waiting for the
// close, a JSON-RPC error is ErrRefused, a hung one is ErrUnavailable.
func TestClientTCP(t *testing.T) {
	devs := append(readFixture(t, "teamredminer/devs_0.3.8_6gpu_cnv8.json"), 0)
	addr := tcpMiner(t, func(req []byte, conn net.Conn) {
		_, _ = conn.Write(devs)
		time.Sleep(time.Second) // keeps the socket open: the NUL must end the read
	})
	c, err := NewClient(newTeamRedMiner(), addr, WithTimeout(500*time.Millisecond))
	require.NoError(t, err)
	start := time.Now()
	r, err := c.Poll(context.Background())
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 500*time.Millisecond)
	assert.Equal(t, 12573.0, r.Stats.Rate.Value)
	assert.Len(t, r.Stats.GPUs, 6)

	var mu sync.Mutex
	var got []byte
	addr = tcpMiner(t, func(req []byte, conn net.Conn) {
		mu.Lock()
		got = append(got[:0], req...)
		mu.Unlock()
		_, _ = conn.Write([]byte(`{"id":0,"jsonrpc":"2.0","error":{"code":-401,"message":"Invalid password"}}` + "\n"))
	})
	c, err = NewClient(newClaymore(), addr, WithToken("s3cret"))
	require.NoError(t, err)
	_, err = c.Poll(context.Background())
	assert.ErrorIs(t, err, ErrRefused)
	mu.Lock()
	assert.Contains(t, string(got), `"psw":"s3cret"`, "Claymore's password goes with the request")
	mu.Unlock()

	addr = tcpMiner(t, func(req []byte, conn net.Conn) { time.Sleep(2 * time.Second) })
	c, err = NewClient(newClaymore(), addr, WithTimeout(200*time.Millisecond))
	require.NoError(t, err)
	start = time.Now()
	_, err = c.Poll(context.Background())
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Less(t, time.Since(start), time.Second)
}

// XMRig gets its Bearer token; a missing optional /2/backends does not fail
// the poll.
func TestClientXMRigToken(t *testing.T) {
	summary := readFixture(t, "xmrig/1-summary_5.11.1_cpu_bearer-token_win.json")
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer cafebabe" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/2/summary" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(summary)
	}))
	defer ts.Close()
	c, err := NewClient(newXMRig(), hostOf(ts.URL), WithToken("cafebabe"))
	require.NoError(t, err)
	r, err := c.Poll(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 445.81, r.Stats.Rate.Value)

	c, err = NewClient(newXMRig(), hostOf(ts.URL))
	require.NoError(t, err)
	_, err = c.Poll(context.Background())
	assert.ErrorIs(t, err, ErrRefused)
	assert.Contains(t, err.Error(), "API token")
}

// NBMiner reports a start time; the client turns it into an uptime.
func TestClientUptimeFromStart(t *testing.T) {
	body := readFixture(t, "nbminer/api-v1-status_40.0_2gpu_ethash_lhr_OFFICIAL-README.json")
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }))
	defer ts.Close()
	clk := sim.NewClock(time.Unix(1637549633+3600, 0))
	c, err := NewClient(newNBMiner(), hostOf(ts.URL), WithClientClock(clk))
	require.NoError(t, err)
	r, err := c.Poll(context.Background())
	require.NoError(t, err)
	assert.Equal(t, time.Hour, r.Stats.Uptime.Value)
}

func TestNewClientBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
		opts []ClientOption
		want string
	}{
		{"no port", "127.0.0.1", nil, "address"},
		{"port zero", "127.0.0.1:0", nil, "address"},
		{"timeout", "127.0.0.1:1", []ClientOption{WithTimeout(0)}, "WithTimeout"},
		{"max bytes", "127.0.0.1:1", []ClientOption{WithMaxBytes(10)}, "WithMaxBytes"},
		{"token", "127.0.0.1:1", []ClientOption{WithToken("a b")}, "WithToken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClient(newTRex(), tc.addr, tc.opts...)
			require.ErrorIs(t, err, ErrInvalid)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := NewClient(nil, "127.0.0.1:1")
	assert.True(t, errors.Is(err, ErrInvalid))
}
