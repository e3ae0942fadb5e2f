package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	poolHost = "127.0.0.1:3333"
	poolUser = "0x0000000000000000000000000000000000000000"
)

// Faults the control endpoint can put on the miner's API (not on the
// control endpoint itself).
var faults = []string{"none", "hang", "garbage", "html", "truncate", "huge", "close"}

// hugeReply is the "huge" fault's reply: 10 MB of blanks, made once.
var hugeReply = sync.OnceValue(func() []byte { return bytes.Repeat([]byte(" "), 10<<20) })

func (m *miner) setFault(f string) {
	m.mu.Lock()
	m.fault = f
	m.mu.Unlock()
}

func (m *miner) currentFault() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fault
}

// setShownGPUs sets how many GPUs the API lists (the others mine on but go
// missing from the stats, as a GPU that fell off the bus does).
func (m *miner) setShownGPUs(n int) {
	m.mu.Lock()
	m.shown = n
	m.mu.Unlock()
}

func (m *miner) shownGPUs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shown
}

// apiHandler serves the miner's HTTP API with the fault applied.
func (m *miner) apiHandler(reply func(r *http.Request) ([]byte, int)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch m.currentFault() {
		case "hang":
			select {
			case <-r.Context().Done():
			case <-m.ctx.Done():
			}
			return
		case "garbage":
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("\x00\x13\xfegarbage{{]]"))
			return
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1></body></html>"))
			return
		case "close":
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					_ = c.Close()
				}
			}
			return
		case "huge":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(hugeReply())
			return
		}
		body, code := reply(r)
		if m.currentFault() == "truncate" {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body[:len(body)/2])
			if f, ok := w.(http.Flusher); ok {
				f.Flush() // the headers and half the body reach the client
			}
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					_ = c.Close()
				}
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(body)
	}
}

// routes adds the HTTP API of m.cfg.api to mux.
func (m *miner) routes(mux *http.ServeMux) {
	ok := func(f func(stats) []byte) func(*http.Request) ([]byte, int) {
		return func(*http.Request) ([]byte, int) { return f(m.snapshot()), http.StatusOK }
	}
	trex := ok(func(st stats) []byte { return encode(m.trexSummary(st)) })
	xmrigSummary := ok(func(st stats) []byte { return encode(m.xmrigSummary(st)) })
	switch m.cfg.api {
	case "": // the default: T-Rex's and XMRig's summaries
		mux.Handle("GET /summary", m.apiHandler(trex))
		mux.Handle("GET /2/summary", m.apiHandler(xmrigSummary))
	case "trex":
		mux.Handle("GET /summary", m.apiHandler(trex))
	case "xmrig":
		for p, f := range map[string]func(stats) []byte{
			"/1/summary":  func(st stats) []byte { return encode(m.xmrigSummary(st)) },
			"/2/summary":  func(st stats) []byte { return encode(m.xmrigSummary(st)) },
			"/2/backends": m.xmrigBackends,
		} {
			mux.Handle("GET "+p, m.apiHandler(m.bearer(ok(f))))
		}
	case "lolminer":
		mux.Handle("GET /summary", m.apiHandler(ok(m.lolMiner)))
	case "gminer":
		mux.Handle("GET /stat", m.apiHandler(ok(m.gminer)))
	case "nbminer":
		mux.Handle("GET /api/v1/status", m.apiHandler(ok(m.nbminer)))
	case "rigel":
		mux.Handle("GET /{$}", m.apiHandler(ok(m.rigel)))
		mux.Handle("GET /stat", m.apiHandler(ok(m.rigel)))
	case "srbminer":
		mux.Handle("GET /{$}", m.apiHandler(ok(m.srbminer)))
		mux.Handle("GET /api/v2/status", m.apiHandler(ok(m.srbminer)))
	case "bzminer":
		mux.Handle("GET /status", m.apiHandler(ok(m.bzminer)))
	}
}

// bearer checks XMRig's access token as XMRig does: none configured, no
// header wanted; configured, "Bearer <token>" or 401/403.
func (m *miner) bearer(next func(*http.Request) ([]byte, int)) func(*http.Request) ([]byte, int) {
	return func(r *http.Request) ([]byte, int) {
		h := r.Header.Get("Authorization")
		switch {
		case m.cfg.token == "" && h == "":
		case m.cfg.token == "" || h == "":
			return encode(map[string]any{"status": 401, "error": "Unauthorized"}), http.StatusUnauthorized
		case h != "Bearer "+m.cfg.token:
			return encode(map[string]any{"status": 403, "error": "Forbidden"}), http.StatusForbidden
		}
		return next(r)
	}
}

// controlRoutes adds the control endpoint.
//
//	GET      /control/hashrate          {"hashrate": H/s}
//	POST|PUT /control/hashrate?value=   set the total hashrate in H/s
//	POST|PUT /control/fault?mode=       none, hang, garbage, html, truncate, huge, close
//	POST|PUT /control/gpus?value=       how many GPUs the API lists (0 to -gpus)
func (m *miner) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /control/hashrate", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]float64{"hashrate": m.snapshot().current})
	})
	bad := func(w http.ResponseWriter, msg string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
	}
	setRate := func(w http.ResponseWriter, r *http.Request) {
		raw := r.URL.Query().Get("value")
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			bad(w, "value must be a hashrate in H/s, a finite number >= 0, got "+strconv.Quote(raw))
			return
		}
		m.setHashrate(v)
		writeJSON(w, http.StatusOK, map[string]float64{"hashrate": v})
	}
	setFault := func(w http.ResponseWriter, r *http.Request) {
		f := r.URL.Query().Get("mode")
		if !slices.Contains(faults, f) {
			bad(w, "mode must be one of "+strings.Join(faults, ", ")+", got "+strconv.Quote(f))
			return
		}
		m.setFault(f)
		writeJSON(w, http.StatusOK, map[string]string{"fault": f})
	}
	setGPUs := func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("value"))
		if err != nil || n < 0 || n > m.cfg.gpus {
			bad(w, fmt.Sprintf("value must be a number of GPUs from 0 to %d", m.cfg.gpus))
			return
		}
		m.setShownGPUs(n)
		writeJSON(w, http.StatusOK, map[string]int{"gpus": n})
	}
	for _, method := range []string{"POST", "PUT"} {
		mux.HandleFunc(method+" /control/hashrate", setRate)
		mux.HandleFunc(method+" /control/fault", setFault)
		mux.HandleFunc(method+" /control/gpus", setGPUs)
	}
}

// handler is the whole HTTP side: the API of m.cfg.api and the control
// endpoint.
func (m *miner) handler() http.Handler {
	mux := http.NewServeMux()
	m.routes(mux)
	m.controlRoutes(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// splitListener hands HTTP connections to an http.Server and serves the
// others as the miner's TCP API: one listener, as a real miner has (Claymore
// answers both on its port).
type splitListener struct {
	net.Listener
	m     *miner
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // the TCP API connections
}

func newSplitListener(ln net.Listener, m *miner) *splitListener {
	s := &splitListener{Listener: ln, m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.acceptLoop() // ends when the listener closes
	return s
}

func (s *splitListener) acceptLoop() {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			s.once.Do(func() { close(s.done) })
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.route(c)
		}()
	}
}

// route peeks at the first bytes: an HTTP method goes to the HTTP server.
func (s *splitListener) route(c net.Conn) {
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	head, err := br.Peek(4)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: br}
	switch string(head) {
	case "GET ", "POST", "PUT ", "HEAD":
		select {
		case s.conns <- pc:
		case <-s.done:
			_ = c.Close()
		}
	default:
		s.m.serveTCP(pc)
	}
}

func (s *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *splitListener) Close() error {
	err := s.Listener.Close()
	s.once.Do(func() { close(s.done) })
	return err
}

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// serveTCP answers the TCP JSON API of m.cfg.api: one JSON request per
// line (or one sgminer command per connection), with the fault applied.
func (m *miner) serveTCP(c *peekedConn) {
	defer c.Close()
	stop := context.AfterFunc(m.ctx, func() { _ = c.Close() })
	defer stop()
	authorized := m.cfg.token == ""
	// One JSON request after another; sgminer's come without a newline.
	dec := json.NewDecoder(c.r)
	for {
		var req struct {
			Command string          `json:"command"`
			Method  string          `json:"method"`
			Psw     string          `json:"psw"`
			Params  json.RawMessage `json:"params"`
		}
		if err := dec.Decode(&req); err != nil {
			if !errors.Is(err, io.EOF) {
				_, _ = c.Write([]byte(`{"id":0,"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"}}` + "\n"))
			}
			return
		}
		switch f := m.currentFault(); f {
		case "hang":
			<-m.ctx.Done()
			return
		case "garbage":
			_, _ = c.Write([]byte("\x13\xfegarbage{{]]\n"))
			return
		case "html":
			_, _ = c.Write([]byte("<html><body>500</body></html>\n"))
			return
		case "close":
			return
		case "huge":
			_, _ = c.Write(hugeReply())
			return
		}
		st := m.snapshot()
		var reply []byte
		switch m.cfg.api {
		case "teamredminer":
			reply = m.teamRedMiner(st, req.Command)
		case "excavator":
			reply = m.excavator(st, req.Method)
		case "claymore", "phoenixminer", "ethminer":
			reply, authorized = m.claymoreReply(st, req.Method, req.Psw, req.Params, authorized)
		default:
			return
		}
		if m.currentFault() == "truncate" {
			_, _ = c.Write(reply[:len(reply)/2])
			return
		}
		// sgminer answers one command per connection, then closes it.
		if _, err := c.Write(reply); err != nil || m.cfg.api == "teamredminer" {
			return
		}
	}
}

// claymoreReply answers a Claymore-family JSON-RPC call: Claymore and
// PhoenixMiner check "psw" on every call, ethminer wants api_authorize
// first on the connection.
func (m *miner) claymoreReply(st stats, method, psw string, params json.RawMessage, authorized bool) ([]byte, bool) {
	rpcErr := func(code int, msg string) []byte {
		return append(encode(map[string]any{"id": 0, "jsonrpc": "2.0", "error": map[string]any{"code": code, "message": msg}}), '\n')
	}
	result := func(v any) []byte {
		return append(encode(map[string]any{"id": 0, "jsonrpc": "2.0", "result": v}), '\n')
	}
	if m.cfg.api == "ethminer" {
		if method == "api_authorize" {
			var p struct {
				Psw string `json:"psw"`
			}
			_ = json.Unmarshal(params, &p)
			if p.Psw != m.cfg.token {
				return rpcErr(-401, "Invalid password"), false
			}
			return result(true), true
		}
		if !authorized {
			return rpcErr(-401, "Not authorized"), false
		}
	} else if m.cfg.token != "" && psw != m.cfg.token {
		return rpcErr(-401, "Invalid password"), authorized
	}
	switch method {
	case "miner_getstat1", "miner_getstat2":
		fields := 9
		if method == "miner_getstat2" && m.cfg.api != "ethminer" {
			fields = 18
		}
		version := map[string]string{"claymore": "15.0 - ETH", "phoenixminer": "PM 6.2c - ETH", "ethminer": "0.19.0"}[m.cfg.api]
		return result(m.claymoreResult(st, version, fields)), authorized
	}
	return rpcErr(-32601, "Method not found"), authorized
}
