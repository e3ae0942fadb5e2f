package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/agent/client"
)

// TestControlPlaneCalls drives a node as a control plane does: submit,
// follow the events to the start, look at the GPUs, cordon, curtail,
// read the logs, cancel, read the ledger, forget.
func TestControlPlaneCalls(t *testing.T) {
	n := newNode(t)
	ctx := ctxFor(t)
	events, errc := n.op.Watch(ctx, 0)

	w, err := n.op.Submit(ctx, sleeper("train", "acme", 2))
	require.NoError(t, err)
	assert.Equal(t, "train", w.Spec.ID)
	assert.Contains(t, []string{"queued", "scheduled", "running"}, w.State)
	started := waitEvent(t, events, errc, func(ev api.Event) bool { return ev.ID == "train" && ev.Type == "started" })
	assert.Len(t, started.GPUs, 2)

	w = n.waitState(t, n.op, "train", "running")
	assert.Equal(t, started.GPUs, w.GPUs)
	assert.Equal(t, 1.0, w.Spec.StopGraceSeconds, "the spec comes back as it was sent")

	gpus, err := n.op.GPUs(ctx)
	require.NoError(t, err)
	require.Len(t, gpus, 4)
	var free string
	for _, g := range gpus {
		assert.Equal(t, "training", g.Use, "an A40 is fit for training")
		assert.Positive(t, g.Fit.LoRAParams)
		if slices.Contains(w.GPUs, g.UUID) {
			assert.Equal(t, "train", g.Workload)
			assert.Equal(t, "acme", g.Tenant)
		} else {
			free = g.UUID
		}
	}
	node, err := n.op.Node(ctx)
	require.NoError(t, err)
	assert.True(t, node.Running)
	assert.Equal(t, 4, node.GPUs)
	assert.Equal(t, 1, node.Live)

	require.NoError(t, n.op.Cordon(ctx, free, "fan replaced"))
	cordoned := waitEvent(t, events, errc, func(ev api.Event) bool { return ev.Type == "cordoned" })
	assert.Equal(t, []string{free}, cordoned.GPUs)
	g, err := n.op.GPU(ctx, free)
	require.NoError(t, err)
	assert.Equal(t, "fan replaced", g.Cordoned)
	require.NoError(t, n.op.Uncordon(ctx, free))

	rep, err := n.op.SetBudget(ctx, 5000)
	require.NoError(t, err)
	assert.True(t, rep.Met, "%+v", rep)
	assert.Equal(t, 5000.0, rep.TargetW)
	_, err = n.op.SetBudget(ctx, 0)
	require.NoError(t, err)

	_, err = n.op.Logs(ctx, "train")
	require.NoError(t, err)

	w, err = n.op.Cancel(ctx, "train")
	require.NoError(t, err)
	assert.Equal(t, "cancelled", w.Outcome)
	waitEvent(t, events, errc, func(ev api.Event) bool { return ev.ID == "train" && ev.Type == "cancelled" })

	var recs []api.Record
	require.Eventually(t, func() bool {
		require.NoError(t, n.meter.Flush(ctx))
		recs, err = n.op.Records(ctx, client.Query{Workload: "train"})
		return err == nil && len(recs) > 0
	}, 10*time.Second, 50*time.Millisecond, "the job's energy is in the ledger")
	for _, r := range recs {
		assert.Equal(t, "acme", r.Tenant)
	}
	rows, err := n.op.Summary(ctx, client.Query{}, "tenant")
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(rows, func(r api.Row) bool { return r.Key == "acme" && r.EnergyMJ > 0 }), "%+v", rows)
	var csv bytes.Buffer
	require.NoError(t, n.op.ExportCSV(ctx, client.Query{Workload: "train", Limit: 1}, &csv))
	assert.Equal(t, 2, strings.Count(csv.String(), "\n"), "a header and one record: %s", csv.String())

	require.NoError(t, n.op.Forget(ctx, "train"))
	_, err = n.op.Get(ctx, "train")
	assert.ErrorIs(t, err, client.ErrNotFound)
}

// waitEvent reads events until one matches.
func waitEvent(t *testing.T, events <-chan api.Event, errc <-chan error, match func(api.Event) bool) api.Event {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			require.True(t, ok, "the stream ended")
			if match(ev) {
				return ev
			}
		case err := <-errc:
			t.Fatalf("the stream failed: %v", err)
		case <-timeout:
			t.Fatal("no such event within 20 s")
		}
	}
}

// raw sends one request with the operator's token unless token says
// otherwise ("-" for none) and returns the status and the error body.
func raw(t *testing.T, n *node, method, path, token, body string) (int, api.Error) {
	t.Helper()
	req, err := http.NewRequest(method, n.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "-" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode >= 400 {
		require.NoError(t, json.Unmarshal(data, &e), "an error answer is JSON: %s", data)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, e
}

// TestBadInput: each bad request gets its status and a JSON error naming
// the problem, and creates nothing.
func TestBadInput(t *testing.T) {
	n := newNode(t, agent.WithMaxBodyBytes(4096))
	good, _ := json.Marshal(sleeper("dup", "acme", 1))
	_, err := n.op.Submit(ctxFor(t), sleeper("dup", "acme", 1))
	require.NoError(t, err)
	cases := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
		says                            []string
	}{
		{"malformed JSON", "POST", "/v1/workloads", operatorToken, `{"id": "x",`, 400, "invalid", []string{"malformed JSON"}},
		{"unknown field", "POST", "/v1/workloads", operatorToken, `{"id": "x", "gpu_count": 2}`, 400, "invalid", []string{`unknown field "gpu_count"`}},
		{"wrong type", "POST", "/v1/workloads", operatorToken, `{"id": "x", "gpus": "two"}`, 400, "invalid", []string{`field "gpus"`}},
		{"two values", "POST", "/v1/workloads", operatorToken, `{"id": "x"} {"id": "y"}`, 400, "invalid", []string{"more than one JSON value"}},
		{"empty body", "POST", "/v1/workloads", operatorToken, ``, 400, "invalid", []string{"empty"}},
		{"oversized body", "POST", "/v1/workloads", operatorToken, `{"id": "` + strings.Repeat("x", 5000) + `"}`, 413, "too_large", []string{"4096 bytes"}},
		{"every problem of a spec at once", "POST", "/v1/workloads", operatorToken,
			`{"id": "bad id!", "kind": "crypto", "tenant": "acme", "image": "x", "stop_signal": "SIGNOPE", "stop_grace_seconds": -1}`, 400, "invalid",
			[]string{"stop_signal", "stop_grace_seconds", "ID", "Kind"}},
		{"already exists", "POST", "/v1/workloads", operatorToken, string(good), 409, "exists", []string{"dup"}},
		{"more GPUs than the node has", "POST", "/v1/workloads", operatorToken,
			`{"id": "huge", "kind": "training", "tenant": "acme", "image": "x", "gpus": {"count": 64}}`, 422, "unplaceable", []string{"64"}},
		{"no token", "GET", "/v1/workloads", "-", ``, 401, "unauthorized", []string{"Bearer"}},
		{"wrong token", "GET", "/v1/workloads", "not-a-token-of-this-agent", ``, 401, "unauthorized", nil},
		{"no such workload", "GET", "/v1/workloads/nope", operatorToken, ``, 404, "not_found", []string{"nope"}},
		{"no such GPU", "POST", "/v1/gpus/GPU-nope/cordon", operatorToken, `{"reason": "x"}`, 404, "not_found", []string{"GPU-nope"}},
		{"bad budget", "PUT", "/v1/power/budget", operatorToken, `{"watts": -5}`, 400, "invalid", nil},
		{"bad time", "GET", "/v1/ledger/records?from=yesterday", operatorToken, ``, 400, "invalid", []string{"RFC 3339"}},
		{"bad resume point", "GET", "/v1/events?after=soon", operatorToken, ``, 400, "invalid", []string{"after"}},
		{"no such path", "GET", "/v1/nope", operatorToken, ``, 404, "not_found", []string{"openapi"}},
		{"wrong method", "PUT", "/v1/workloads", operatorToken, `{}`, 405, "invalid", []string{"GET, POST"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, e := raw(t, n, tc.method, tc.path, tc.token, tc.body)
			assert.Equal(t, tc.status, status, "%+v", e)
			assert.Equal(t, tc.code, e.Code)
			for _, s := range tc.says {
				assert.Contains(t, e.Message, s)
			}
		})
	}
	ws, err := n.op.List(ctxFor(t), client.Filter{})
	require.NoError(t, err)
	require.Len(t, ws, 1, "nothing but the first job was created")
}

// TestTenantToken: a token scoped to a tenant submits and sees that
// tenant's work only; node-wide calls are refused.
func TestTenantToken(t *testing.T) {
	n := newNode(t)
	ctx := ctxFor(t)
	mine := sleeper("mine", "", 1) // the token fills in its tenant
	w, err := n.acme.Submit(ctx, mine)
	require.NoError(t, err)
	assert.Equal(t, "acme", w.Spec.Tenant)
	_, err = n.acme.Submit(ctx, sleeper("theirs", "globex", 1))
	assert.ErrorIs(t, err, client.ErrDenied)
	_, err = n.op.Submit(ctx, sleeper("theirs", "globex", 1))
	require.NoError(t, err)
	n.waitState(t, n.op, "theirs", "running")
	n.waitState(t, n.op, "mine", "running")

	for name, call := range map[string]func() error{
		"get":    func() error { _, err := n.acme.Get(ctx, "theirs"); return err },
		"cancel": func() error { _, err := n.acme.Cancel(ctx, "theirs"); return err },
		"logs":   func() error { _, err := n.acme.Logs(ctx, "theirs"); return err },
		"forget": func() error { return n.acme.Forget(ctx, "theirs") },
	} {
		assert.ErrorIs(t, call(), client.ErrNotFound, "%s of another tenant's workload: not found, so nothing leaks", name)
	}
	ws, err := n.acme.List(ctx, client.Filter{})
	require.NoError(t, err)
	require.Len(t, ws, 1)
	assert.Equal(t, "mine", ws[0].Spec.ID)
	_, err = n.acme.List(ctx, client.Filter{Tenant: "globex"})
	assert.ErrorIs(t, err, client.ErrDenied)

	for name, call := range map[string]func() error{
		"cordon":      func() error { return n.acme.Cordon(ctx, "GPU-x", "") },
		"drain node":  func() error { return n.acme.DrainNode(ctx) },
		"power":       func() error { _, err := n.acme.SetBudget(ctx, 100); return err },
		"other image": func() error { _, err := n.acme.ImportImage(ctx, "globex", strings.NewReader("")); return err },
	} {
		assert.ErrorIs(t, call(), client.ErrDenied, name)
	}
	status, _ := raw(t, n, "GET", "/metrics", acmeToken, "")
	assert.Equal(t, http.StatusForbidden, status)

	gpus, err := n.acme.GPUs(ctx)
	require.NoError(t, err)
	var hidden, own int
	for _, g := range gpus {
		switch g.Workload {
		case "mine":
			own++
		case "(another tenant's)":
			hidden++
			assert.Empty(t, g.Tenant)
		}
	}
	assert.Equal(t, 1, own)
	assert.Equal(t, 1, hidden, "globex's GPU shows busy, not whose")

	// The tenant's stream has its own events only, not the node's.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	events, _ := n.acme.Watch(sctx, 0)
	require.NoError(t, n.op.Cordon(ctx, gpus[3].UUID, "node event"))
	seen := 0
	for ev := range events {
		assert.Equal(t, "acme", ev.Tenant, "%+v", ev)
		seen++
	}
	assert.Positive(t, seen)

	var rows []api.Row
	require.Eventually(t, func() bool {
		require.NoError(t, n.meter.Flush(ctx))
		rows, err = n.acme.Summary(ctx, client.Query{}, "tenant")
		return err == nil && len(rows) > 0
	}, 10*time.Second, 50*time.Millisecond)
	for _, r := range rows {
		assert.Equal(t, "acme", r.Key)
	}
	_, err = n.acme.Summary(ctx, client.Query{Tenant: "globex"}, "tenant")
	assert.ErrorIs(t, err, client.ErrDenied)
}

// TestNewReportsEveryBadOption: New names every bad option at once.
func TestNewReportsEveryBadOption(t *testing.T) {
	n := newNode(t)
	_, err := agent.New(n.m, agent.WithTokens(agent.Token{Secret: "short"}, agent.Token{Secret: "long-enough-0123456789", Tenant: "Bad Tenant"}),
		agent.WithMaxBodyBytes(0), agent.WithPingInterval(-time.Second))
	require.ErrorIs(t, err, agent.ErrInvalid)
	for _, want := range []string{"token 0 is 5 characters", "token 1", "WithMaxBodyBytes(0)", "WithPingInterval(-1s)"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = agent.New(nil)
	assert.ErrorIs(t, err, agent.ErrInvalid)
}
