package agent_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/agent/client"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/gpu/sim"
	"github.com/gpufarm/gpufarm/isolation/process"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
	"github.com/gpufarm/gpufarm/workload/bolt"
)

const (
	operatorToken = "operator-0123456789abcdef"
	acmeToken     = "acme-tenant-0123456789abcdef"
)

// node is a simulated 4-GPU node behind an agent on loopback: the process
// runtime, a bbolt store (the event log survives), a metered ledger.
type node struct {
	m      *workload.Manager
	gpus   *gpu.Manager
	meter  *accounting.Meter
	ledger accounting.Ledger
	srv    *httptest.Server
	op     *client.Client // the operator
	acme   *client.Client // tenant acme's token
}

func newNode(t testing.TB, opts ...agent.Option) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := sim.PresetByName(sim.PresetA40)
	require.NoError(t, err)
	p.Cards = p.Cards[:4]
	rig, err := sim.New(p)
	require.NoError(t, err)
	gpus, err := gpu.New(ctx, rig)
	require.NoError(t, err)
	rt, err := process.New(process.WithUnsafeRoot(), process.WithLogDir(t.TempDir()))
	require.NoError(t, err)
	store, err := bolt.Open(filepath.Join(t.TempDir(), "node.db"))
	require.NoError(t, err)
	m, err := workload.New(gpus, rt, workload.WithStore(store), workload.WithLoad(rig.SetGPULoad),
		workload.WithTick(20*time.Millisecond), workload.WithPowerSettle(0))
	require.NoError(t, err)
	ledger := accounting.NewMemoryLedger()
	meter, err := accounting.New(ctx, gpus, m, ledger, accounting.WithTariff(accounting.Flat(0.20)),
		accounting.WithRecordInterval(time.Second))
	require.NoError(t, err)
	ran, metered := make(chan error, 1), make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	go func() { metered <- meter.Run(ctx, 50*time.Millisecond) }()
	s, err := agent.New(m, append([]agent.Option{agent.WithGPUs(gpus), agent.WithLedger(ledger),
		agent.WithTokens(agent.Token{Secret: operatorToken}, agent.Token{Secret: acmeToken, Tenant: "acme"})}, opts...)...)
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	n := &node{m: m, gpus: gpus, meter: meter, ledger: ledger, srv: srv}
	n.op, err = client.New(srv.URL, client.WithToken(operatorToken), client.WithRetry(50*time.Millisecond))
	require.NoError(t, err)
	n.acme, err = client.New(srv.URL, client.WithToken(acmeToken))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = s.Close()
		srv.Close()
		for _, w := range m.List(workload.Filter{}) {
			if !w.State.Final() {
				_ = m.Cancel(context.Background(), w.Spec.ID)
			}
		}
		cancel()
		if err := <-ran; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("manager Run: %v", err)
		}
		<-metered
		_ = meter.Close()
		_ = m.Close()
		_ = store.Close()
		_ = rt.Close()
		_ = gpus.Close()
	})
	require.Eventually(t, func() bool { return m.Status().Running }, 5*time.Second, 10*time.Millisecond)
	return n
}

// sleeper is a paid job that sleeps on gpus GPUs until cancelled.
func sleeper(id, tenant string, gpus int) api.Spec {
	return api.Spec{ID: id, Kind: "training", Tenant: tenant, GPUs: api.GPUs{Count: gpus}, Image: "sleeper",
		Command: []string{"sleep", "3600"}, StopGraceSeconds: 1, PricePerGPUHour: 0.5}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitState waits until workload id is in state.
func (n *node) waitState(t *testing.T, c *client.Client, id, state string) api.Workload {
	t.Helper()
	var w api.Workload
	require.Eventually(t, func() bool {
		var err error
		w, err = c.Get(context.Background(), id)
		return err == nil && w.State == state
	}, 20*time.Second, 10*time.Millisecond, "workload %s never %s (last %+v)", id, state, w)
	return w
}
