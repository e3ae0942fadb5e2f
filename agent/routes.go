package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// route is one call of the API: what serves it, and what the OpenAPI
// document says of it (generated from this table, see openapi.go).
type route struct {
	method, path, summary string
	// operator: the operator's only; public: no credentials needed.
	operator, public bool
	query            []param
	body             any    // the JSON request body's type, or nil
	bodyType         string // a non-JSON body's media type
	status           int    // on success
	resp             any    // the JSON response's type, or nil
	respType         string // a non-JSON response's media type
	handle           func(s *Server, c caller, w http.ResponseWriter, r *http.Request) error
}

type param struct {
	name, typ, doc string
	repeated       bool
}

var ledgerParams = []param{
	{"from", "date-time", "records that end after this time", false},
	{"to", "date-time", "records that start before this time", false},
	{"gpu", "string", "one GPU's records (UUID)", false},
	{"workload", "string", "one workload's records", false},
	{"tenant", "string", "one tenant's records (a tenant's token sees only its own)", false},
	{"kind", "string", "one kind's records: mining, training, inference, batch, idle, gap", false},
}

// routes is the API. Paths use net/http's patterns.
var routes = []route{
	{method: "GET", path: "/healthz", summary: "Whether the agent serves and its manager runs (503 when not).", public: true,
		status: 200, respType: "text/plain", handle: (*Server).healthz},
	{method: "GET", path: "/v1/openapi.json", summary: "This API's OpenAPI document.", public: true,
		status: 200, respType: "application/json", handle: (*Server).openapi},
	{method: "GET", path: "/metrics", summary: "Prometheus metrics: dcgm-exporter's series and gpufarm's own.", operator: true,
		status: 200, respType: "text/plain", handle: (*Server).metrics},
	{method: "GET", path: "/v1/node", summary: "The node: its manager's state, power, and what its GPUs are good for together.",
		status: 200, resp: api.Node{}, handle: (*Server).node},
	{method: "GET", path: "/v1/gpus", summary: "Every GPU: inventory, readiness and what holds it (other tenants' holders hidden from a tenant).",
		status: 200, resp: []api.GPU{}, handle: (*Server).gpus},
	{method: "GET", path: "/v1/gpus/{uuid}", summary: "One GPU.", status: 200, resp: api.GPU{}, handle: (*Server).gpu},
	{method: "POST", path: "/v1/gpus/{uuid}/cordon", summary: "Take a GPU out of service: nothing new starts on it; what runs goes on.",
		operator: true, body: api.Cordon{}, status: 204, handle: (*Server).cordonGPU},
	{method: "POST", path: "/v1/gpus/{uuid}/uncordon", summary: "Return a GPU to service.",
		operator: true, status: 204, handle: (*Server).uncordonGPU},
	{method: "POST", path: "/v1/gpus/{uuid}/drain", summary: "Cordon a GPU and move its work off (paid work requeues from its checkpoint); answers once the GPU is free.",
		operator: true, status: 204, handle: (*Server).drainGPU},
	{method: "POST", path: "/v1/gpus/{uuid}/release", summary: "Return a quarantined GPU to service.",
		operator: true, status: 204, handle: (*Server).releaseGPU},
	{method: "POST", path: "/v1/node/cordon", summary: "Take the whole node out of service.",
		operator: true, body: api.Cordon{}, status: 204, handle: (*Server).cordonNode},
	{method: "POST", path: "/v1/node/uncordon", summary: "Return the node to service.",
		operator: true, status: 204, handle: (*Server).uncordonNode},
	{method: "POST", path: "/v1/node/drain", summary: "Cordon the node and move all work off; answers once every GPU is free.",
		operator: true, status: 204, handle: (*Server).drainNode},
	{method: "PUT", path: "/v1/power/budget", summary: "Set the GPUs' power budget and meet it now (mining first, then paid work by priority, with its grace); 0 lifts it.",
		operator: true, body: api.Budget{}, status: 200, resp: api.CurtailReport{}, handle: (*Server).budget},
	{method: "POST", path: "/v1/workloads", summary: "Submit a workload; it is queued, placed and started by the node.",
		body: api.Spec{}, status: 201, resp: api.Workload{}, handle: (*Server).submit},
	{method: "GET", path: "/v1/workloads", summary: "The workloads, in submission order.",
		query: []param{{"tenant", "string", "one tenant's (a tenant's token sees only its own)", false},
			{"kind", "string", "one kind's", false}, {"state", "string", "in these states", true}},
		status: 200, resp: []api.Workload{}, handle: (*Server).list},
	{method: "GET", path: "/v1/workloads/{id}", summary: "One workload.", status: 200, resp: api.Workload{}, handle: (*Server).get},
	{method: "POST", path: "/v1/workloads/{id}/cancel", summary: "Cancel a workload: a running one gets its stop signal and grace.",
		status: 202, resp: api.Workload{}, handle: (*Server).cancel},
	{method: "DELETE", path: "/v1/workloads/{id}", summary: "Forget a finished workload, so its ID can be used again.",
		status: 204, handle: (*Server).forget},
	{method: "GET", path: "/v1/workloads/{id}/logs", summary: "The workload's output: its container's, or the kept output of a finished one.",
		status: 200, respType: "text/plain", handle: (*Server).logs},
	{method: "GET", path: "/v1/events", summary: "The event stream (Server-Sent Events): what was recorded after the given sequence number, then what happens.",
		query:  []param{{"after", "integer", "resume after this sequence number (or send Last-Event-ID)", false}},
		status: 200, respType: "text/event-stream", resp: api.Event{}, handle: (*Server).events},
	{method: "GET", path: "/v1/ledger/records", summary: "Ledger records in sequence order, as JSON or CSV (format=csv).",
		query: append(slices.Clone(ledgerParams),
			param{"after_seq", "integer", "records after this sequence number (paging)", false},
			param{"limit", "integer", "at most this many records", false},
			param{"format", "string", "json (default) or csv", false}),
		status: 200, resp: []api.Record{}, handle: (*Server).records},
	{method: "GET", path: "/v1/ledger/summary", summary: "Energy, cost, revenue and margin summed by workload, tenant, kind or GPU.",
		query:  append(slices.Clone(ledgerParams), param{"by", "string", "workload (default), tenant, kind or gpu", false}),
		status: 200, resp: []api.Row{}, handle: (*Server).summary},
	{method: "POST", path: "/v1/tenants/{tenant}/images", summary: "Import an image (an OCI layout or docker save tar) for a tenant.",
		bodyType: "application/x-tar", status: 200, resp: api.Imported{}, handle: (*Server).importImage},
}

// handler wraps a route: credentials, scope, the error answer.
func (s *Server) handler(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := caller{}, true
		if !rt.public {
			c, ok = s.authenticate(r)
		}
		var err error
		switch {
		case !ok:
			err = fail(http.StatusUnauthorized, api.CodeUnauthorized, "missing or unknown credentials: send Authorization: Bearer <token>, or a client certificate")
		case rt.operator && !c.operator():
			err = fail(http.StatusForbidden, api.CodeDenied, "%s %s is the operator's: a tenant's token cannot call it", rt.method, rt.path)
		default:
			err = rt.handle(s, c, w, r)
		}
		if err != nil {
			status, code := classify(err)
			if status >= 500 {
				s.o.log.Warn("agent request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
			}
			writeError(w, status, code, err.Error())
		}
	})
}

// decode reads a JSON body into v: one value, no unknown fields, within
// the size limit. An empty body leaves v as it is when empty is allowed.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, empty bool) error {
	body, err := io.ReadAll(s.decodeLimit(w, r, false))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return fail(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "the body is over %d bytes", mb.Limit)
		}
		return fail(http.StatusBadRequest, api.CodeInvalid, "read the body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if empty {
			return nil
		}
		return fail(http.StatusBadRequest, api.CodeInvalid, "the body is empty: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fail(http.StatusBadRequest, api.CodeInvalid, "malformed JSON: the body ends inside a value")
		case errors.As(err, &se):
			return fail(http.StatusBadRequest, api.CodeInvalid, "malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return fail(http.StatusBadRequest, api.CodeInvalid, "field %q: a JSON %s cannot be %s", te.Field, te.Value, te.Type)
		}
		return fail(http.StatusBadRequest, api.CodeInvalid, "the body: %v", err)
	}
	if dec.More() {
		return fail(http.StatusBadRequest, api.CodeInvalid, "the body holds more than one JSON value")
	}
	return nil
}

func (s *Server) healthz(_ caller, w http.ResponseWriter, _ *http.Request) error {
	st := s.m.Status()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch {
	case !st.Running:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "the workload manager is not running")
	case st.StoreErr != nil:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "the workload store fails:", st.StoreErr)
	default:
		fmt.Fprintln(w, "ok")
	}
	return nil
}

func (s *Server) metrics(_ caller, w http.ResponseWriter, r *http.Request) error {
	if s.o.metrics == nil {
		return fail(http.StatusNotFound, api.CodeNotFound, "this agent serves no metrics (WithMetrics)")
	}
	s.o.metrics.ServeHTTP(w, r)
	return nil
}

func (s *Server) readiness() map[string]gpu.Readiness {
	out := map[string]gpu.Readiness{}
	if s.o.gpus == nil {
		return out
	}
	rs, _ := s.o.gpus.HostReadiness()
	for _, r := range rs {
		out[r.UUID] = r
	}
	return out
}

func (s *Server) node(_ caller, w http.ResponseWriter, _ *http.Request) error {
	var host gpu.HostReadiness
	if s.o.gpus != nil {
		_, host = s.o.gpus.HostReadiness()
	}
	writeJSON(w, http.StatusOK, apiNode(s.m.Status(), host))
	return nil
}

// hiddenHolder stands for a workload a tenant may not know of.
const hiddenHolder = "(another tenant's)"

// viewGPU is a GPU as the caller may see it: a tenant learns that a GPU
// is busy, not what other tenants run on it.
func (s *Server) viewGPU(c caller, g workload.GPU, r gpu.Readiness) api.GPU {
	if g.Workload != "" && !c.sees(g.Tenant) {
		g.Workload, g.Kind, g.Tenant = hiddenHolder, "", ""
	}
	if g.Next != "" && !c.operator() {
		if next, err := s.m.Get(g.Next); err != nil || next.Spec.Tenant != c.tenant {
			g.Next = hiddenHolder
		}
	}
	return apiGPU(g, r)
}

func (s *Server) gpus(c caller, w http.ResponseWriter, _ *http.Request) error {
	rs := s.readiness()
	out := []api.GPU{}
	for _, g := range s.m.GPUs() {
		out = append(out, s.viewGPU(c, g, rs[g.Device.UUID]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) gpu(c caller, w http.ResponseWriter, r *http.Request) error {
	uuid := r.PathValue("uuid")
	for _, g := range s.m.GPUs() {
		if g.Device.UUID == uuid {
			writeJSON(w, http.StatusOK, s.viewGPU(c, g, s.readiness()[uuid]))
			return nil
		}
	}
	return fail(http.StatusNotFound, api.CodeNotFound, "GPU %q is not on this node: list them with GET /v1/gpus", uuid)
}

func (s *Server) cordonGPU(_ caller, w http.ResponseWriter, r *http.Request) error {
	var body api.Cordon
	if err := s.decode(w, r, &body, true); err != nil {
		return err
	}
	return noContent(w, s.m.Cordon(r.Context(), r.PathValue("uuid"), body.Reason))
}

func (s *Server) uncordonGPU(_ caller, w http.ResponseWriter, r *http.Request) error {
	return noContent(w, s.m.Uncordon(r.Context(), r.PathValue("uuid")))
}

func (s *Server) drainGPU(_ caller, w http.ResponseWriter, r *http.Request) error {
	return noContent(w, s.m.Drain(r.Context(), r.PathValue("uuid")))
}

func (s *Server) releaseGPU(_ caller, w http.ResponseWriter, r *http.Request) error {
	return noContent(w, s.m.Release(r.PathValue("uuid")))
}

func (s *Server) cordonNode(_ caller, w http.ResponseWriter, r *http.Request) error {
	var body api.Cordon
	if err := s.decode(w, r, &body, true); err != nil {
		return err
	}
	return noContent(w, s.m.CordonNode(r.Context(), body.Reason))
}

func (s *Server) uncordonNode(_ caller, w http.ResponseWriter, r *http.Request) error {
	return noContent(w, s.m.UncordonNode(r.Context()))
}

func (s *Server) drainNode(_ caller, w http.ResponseWriter, r *http.Request) error {
	return noContent(w, s.m.DrainNode(r.Context()))
}

func noContent(w http.ResponseWriter, err error) error {
	if err == nil {
		w.WriteHeader(http.StatusNoContent)
	}
	return err
}

func (s *Server) budget(_ caller, w http.ResponseWriter, r *http.Request) error {
	var body api.Budget
	if err := s.decode(w, r, &body, false); err != nil {
		return err
	}
	rep, err := s.m.Curtail(r.Context(), body.Watts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiCurtail(rep))
	return nil
}

func (s *Server) submit(c caller, w http.ResponseWriter, r *http.Request) error {
	var body api.Spec
	if err := s.decode(w, r, &body, false); err != nil {
		return err
	}
	if !c.operator() {
		if body.Tenant == "" {
			body.Tenant = c.tenant
		}
		if body.Tenant != c.tenant {
			return fail(http.StatusForbidden, api.CodeDenied, "tenant %q: this token acts for tenant %q only", body.Tenant, c.tenant)
		}
	}
	spec, err := specOf(body)
	if err != nil {
		return err
	}
	wl, err := s.m.Submit(r.Context(), spec)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/workloads/"+wl.Spec.ID)
	writeJSON(w, http.StatusCreated, apiWorkload(wl))
	return nil
}

// lookup finds a workload the caller may see; another tenant's is not
// found, so its existence does not leak.
func (s *Server) lookup(c caller, id string) (workload.Workload, error) {
	wl, err := s.m.Get(id)
	if err == nil && !c.sees(wl.Spec.Tenant) {
		err = fmt.Errorf("%w: workload %q: no such workload of tenant %q", workload.ErrNotFound, id, c.tenant)
	}
	return wl, err
}

func (s *Server) list(c caller, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := workload.Filter{Tenant: q.Get("tenant"), Kind: workload.Kind(q.Get("kind"))}
	if !c.operator() {
		if f.Tenant != "" && f.Tenant != c.tenant {
			return fail(http.StatusForbidden, api.CodeDenied, "tenant %q: this token acts for tenant %q only", f.Tenant, c.tenant)
		}
		f.Tenant = c.tenant
	}
	for _, st := range q["state"] {
		f.States = append(f.States, workload.State(st))
	}
	out := []api.Workload{}
	for _, wl := range s.m.List(f) {
		out = append(out, apiWorkload(wl))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) get(c caller, w http.ResponseWriter, r *http.Request) error {
	wl, err := s.lookup(c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiWorkload(wl))
	return nil
}

func (s *Server) cancel(c caller, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.lookup(c, id); err != nil {
		return err
	}
	if err := s.m.Cancel(r.Context(), id); err != nil {
		return err
	}
	wl, err := s.m.Get(id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, apiWorkload(wl))
	return nil
}

func (s *Server) forget(c caller, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.lookup(c, id); err != nil {
		return err
	}
	return noContent(w, s.m.Forget(r.Context(), id))
}

func (s *Server) logs(c caller, w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.lookup(c, id); err != nil {
		return err
	}
	out, err := s.m.Logs(r.Context(), id)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(out)
	return nil
}

// ledgerQuery reads the ledger's filters, keeping a tenant to its own.
func ledgerQuery(c caller, r *http.Request) (accounting.Query, error) {
	v := r.URL.Query()
	q := accounting.Query{GPU: v.Get("gpu"), Workload: v.Get("workload"), Tenant: v.Get("tenant"), Kind: workload.Kind(v.Get("kind"))}
	var errs []error
	for name, t := range map[string]*time.Time{"from": &q.From, "to": &q.To} {
		if s := v.Get(name); s != "" {
			at, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q: give an RFC 3339 time, e.g. 2026-11-30T00:00:00Z", name, s))
			}
			*t = at
		}
	}
	if s := v.Get("after_seq"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("after_seq %q: give a sequence number", s))
		}
		q.AfterSeq = n
	}
	if !c.operator() {
		if q.Tenant != "" && q.Tenant != c.tenant {
			errs = append(errs, fail(http.StatusForbidden, api.CodeDenied, "tenant %q: this token acts for tenant %q only", q.Tenant, c.tenant))
		}
		q.Tenant = c.tenant
	}
	if err := errors.Join(errs...); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return q, he
		}
		return q, fail(http.StatusBadRequest, api.CodeInvalid, "%v", err)
	}
	return q, nil
}

func (s *Server) ledgerOf() (accounting.Ledger, error) {
	if s.o.ledger == nil {
		return nil, fail(http.StatusNotFound, api.CodeNotFound, "this agent keeps no ledger (WithLedger)")
	}
	return s.o.ledger, nil
}

func (s *Server) records(c caller, w http.ResponseWriter, r *http.Request) error {
	l, err := s.ledgerOf()
	if err != nil {
		return err
	}
	q, err := ledgerQuery(c, r)
	if err != nil {
		return err
	}
	limit := -1
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return fail(http.StatusBadRequest, api.CodeInvalid, "limit %q: give a count, 0 or more", v)
		}
	}
	recs := l.Query(r.Context(), q)
	if limit >= 0 {
		all := recs
		recs = func(yield func(accounting.Record, error) bool) {
			n := 0
			for rec, err := range all {
				if n == limit || !yield(rec, err) {
					return
				}
				n++
			}
		}
	}
	// The body streams; an error after the first byte can only cut it.
	switch format := r.URL.Query().Get("format"); format {
	case "", "json":
		w.Header().Set("Content-Type", "application/json")
		err = accounting.WriteJSON(w, recs)
	case "csv":
		w.Header().Set("Content-Type", "text/csv")
		err = accounting.WriteCSV(w, recs)
	default:
		return fail(http.StatusBadRequest, api.CodeInvalid, "format %q: give json or csv", format)
	}
	if err != nil {
		s.o.log.Warn("ledger export cut short", "err", err)
	}
	return nil
}

func (s *Server) summary(c caller, w http.ResponseWriter, r *http.Request) error {
	l, err := s.ledgerOf()
	if err != nil {
		return err
	}
	q, err := ledgerQuery(c, r)
	if err != nil {
		return err
	}
	by := map[string]accounting.GroupBy{"": accounting.ByWorkload, "workload": accounting.ByWorkload,
		"tenant": accounting.ByTenant, "kind": accounting.ByKind, "gpu": accounting.ByGPU}
	g, ok := by[r.URL.Query().Get("by")]
	if !ok {
		return fail(http.StatusBadRequest, api.CodeInvalid, "by %q: give workload, tenant, kind or gpu", r.URL.Query().Get("by"))
	}
	rows, err := accounting.Summarize(l.Query(r.Context(), q), g)
	if err != nil {
		return err
	}
	out := []api.Row{}
	for _, row := range rows {
		out = append(out, apiRow(row))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) importImage(c caller, w http.ResponseWriter, r *http.Request) error {
	tenant := r.PathValue("tenant")
	if !c.sees(tenant) {
		return fail(http.StatusForbidden, api.CodeDenied, "tenant %q: this token acts for tenant %q only", tenant, c.tenant)
	}
	if s.o.images == nil {
		return fail(http.StatusNotFound, api.CodeNotFound, "this agent imports no images (WithImages)")
	}
	names, err := s.o.images.Import(r.Context(), tenant, s.decodeLimit(w, r, true))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Imported{Images: names})
	return nil
}
