package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/mining"
)

// serve runs m's API on a loopback port until the test ends.
func serve(t *testing.T, m *miner) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	m.ctx = ctx
	srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { // ends at Shutdown
		defer close(done)
		_ = srv.Serve(newSplitListener(ln, m))
	}()
	t.Cleanup(func() {
		cancel()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
		<-done
	})
	return ln.Addr().String()
}

// Every miner's API, built from its real reply, is read by the SDK's
// adapter for that miner: the rates, shares and GPUs are the fake's; a
// new hashrate shows once the averaging window has passed.
func TestEveryAPIReadsBackThroughItsAdapter(t *testing.T) {
	for _, a := range mining.Adapters() {
		t.Run(a.Name(), func(t *testing.T) {
			clk := newClock()
			cfg := baseConfig()
			cfg.api, cfg.gpus, cfg.hashrateHs, cfg.difficulty = a.Name(), 2, 100e6, 1e9
			m := newMiner(cfg, clk.now)
			addr := serve(t, m)
			c, err := mining.NewClient(a, addr)
			require.NoError(t, err)
			defer c.Close()
			clk.advance(time.Minute)
			if s, ok := a.(mining.Starter); ok { // Excavator takes its work through its API
				reqs, err := s.StartRequests(mining.Launch{Algorithm: a.Algorithms()[0], Pool: "127.0.0.1:3333",
					Wallet: "0xabc", Worker: "rig", GPUs: 2, APIPort: 4000})
				require.NoError(t, err)
				require.NoError(t, c.Send(context.Background(), reqs))
			}

			r, err := c.Poll(context.Background())
			require.NoError(t, err)
			st := r.Stats
			assert.Equal(t, a.Name(), st.Miner)
			assert.Equal(t, mining.UnitHashes, st.Unit)
			assert.InDelta(t, 100e6, st.Rate.Value, 100e6*1e-3, "total rate")
			// 100 MH/s for the minute since start, at 1e9 hashes a share.
			assert.Equal(t, int64(6), st.Shares.Accepted.Value, "accepted shares")
			require.Len(t, st.GPUs, 2)
			for i, g := range st.GPUs {
				assert.InDelta(t, 50e6, g.Rate.Value, 50e6*1e-3, "GPU %d rate", i)
				if g.PCIBusID != "" {
					assert.Equal(t, busID(i+1), g.PCIBusID, "GPU %d bus", i)
				}
			}

			m.setHashrate(20e6)
			clk.advance(2 * time.Minute)
			r, err = c.Poll(context.Background())
			require.NoError(t, err)
			assert.InDelta(t, 20e6, r.Stats.Rate.Value, 20e6*1e-3, "the new rate")

			m.setShownGPUs(1)
			r, err = c.Poll(context.Background())
			require.NoError(t, err)
			assert.Len(t, r.Stats.GPUs, 1, "a GPU gone missing from the stats")
		})
	}
}

// The control endpoint's faults reach every API as the typed errors of
// the SDK's client, within its timeout.
func TestFaultsThroughTheClient(t *testing.T) {
	want := map[string]error{
		"hang": mining.ErrUnavailable, "garbage": mining.ErrMalformed, "truncate": mining.ErrMalformed,
		"huge": mining.ErrMalformed, "close": mining.ErrUnavailable,
	}
	for _, name := range []string{"trex", "teamredminer", "claymore", "excavator"} {
		for fault, wantErr := range want {
			t.Run(name+"/"+fault, func(t *testing.T) {
				cfg := baseConfig()
				cfg.api = name
				m := newMiner(cfg, newClock().now)
				addr := serve(t, m)
				a, err := mining.AdapterByName(name)
				require.NoError(t, err)
				const timeout = time.Second
				c, err := mining.NewClient(a, addr, mining.WithTimeout(timeout))
				require.NoError(t, err)
				defer c.Close()
				ctl(t, addr, "/control/fault?mode="+fault)
				start := time.Now()
				_, err = c.Poll(context.Background())
				assert.ErrorIs(t, err, wantErr)
				assert.Less(t, time.Since(start), timeout+500*time.Millisecond, "within the client's timeout")
				ctl(t, addr, "/control/fault?mode=none")
				_, err = c.Poll(context.Background())
				assert.NoError(t, err, "healthy again")
			})
		}
	}
}

// XMRig's access token and Claymore's password, read from the real
// command line, are enforced.
func TestTokensFromTheMinersCommandLine(t *testing.T) {
	for _, tc := range []struct{ api, flag string }{{"xmrig", "--http-access-token"}, {"claymore", "-mpsw"}, {"ethminer", "--api-password"}} {
		t.Run(tc.api, func(t *testing.T) {
			ma, err := parseMinerArgs(tc.api, []string{tc.flag, "s3cret"})
			require.NoError(t, err)
			cfg := baseConfig()
			cfg.api, cfg.token = tc.api, ma.token
			addr := serve(t, newMiner(cfg, newClock().now))
			a, err := mining.AdapterByName(tc.api)
			require.NoError(t, err)
			c, err := mining.NewClient(a, addr)
			require.NoError(t, err)
			_, err = c.Poll(context.Background())
			assert.ErrorIs(t, err, mining.ErrRefused, "without the token")
			c, err = mining.NewClient(a, addr, mining.WithToken("s3cret"))
			require.NoError(t, err)
			_, err = c.Poll(context.Background())
			assert.NoError(t, err, "with it")
		})
	}
}

// The API address comes from the flags the SDK's adapter writes.
func TestMinerArgsGiveTheAPIAddress(t *testing.T) {
	for _, a := range mining.Adapters() {
		args, err := a.Args(mining.Launch{Algorithm: a.Algorithms()[0], Pool: "stratum+tcp://127.0.0.1:3333",
			Wallet: "0xabc", GPUs: 1, APIPort: 4123})
		require.NoError(t, err, a.Name())
		ma, err := parseMinerArgs(a.Name(), args)
		require.NoError(t, err, a.Name())
		assert.Equal(t, "127.0.0.1:4123", ma.listen, a.Name())
	}
	_, err := parseMinerArgs("cgminer", nil)
	assert.ErrorContains(t, err, "trex")
}

func ctl(t *testing.T, addr, path string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
