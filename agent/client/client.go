package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/agent/api"
)

// Client calls one node agent. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	hc    *http.Client
	token string
	retry time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends a bearer token with every call.
func WithToken(t string) Option { return func(c *Client) { c.token = t } }

// WithHTTPClient uses hc, e.g. one with TLS client certificates. Its
// Timeout, if any, also bounds event streams: leave it 0 and give each
// call a context deadline instead.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetry is how long Watch waits before it reconnects (1 s).
func WithRetry(d time.Duration) Option { return func(c *Client) { c.retry = d } }

// New makes a client of the agent at base, e.g. "http://127.0.0.1:9400".
func New(base string, opts ...Option) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: give http(s)://host:port", base)
	}
	c := &Client{base: u, hc: http.DefaultClient, retry: time.Second}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error answer of the agent. errors.Is matches it against the
// category values below by its code.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent: %d %s: %s", e.Status, e.Code, e.Message)
}

// Is matches an error of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == 0 && t.Code == e.Code
}

// Categories, matched with errors.Is.
var (
	ErrInvalid      = &Error{Code: api.CodeInvalid}
	ErrNotFound     = &Error{Code: api.CodeNotFound}
	ErrExists       = &Error{Code: api.CodeExists}
	ErrDenied       = &Error{Code: api.CodeDenied}
	ErrUnauthorized = &Error{Code: api.CodeUnauthorized}
	ErrTooLarge     = &Error{Code: api.CodeTooLarge}
	ErrUnplaceable  = &Error{Code: api.CodeUnplaceable}
	ErrUnavailable  = &Error{Code: api.CodeUnavailable}
)

// do sends one call: body (JSON-encoded unless an io.Reader) and, when out
// is not nil, the JSON answer decoded into it.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	resp, err := c.send(ctx, method, path, q, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// send makes the request and returns a 2xx response, or the error the
// agent answered.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body any, header http.Header) (*http.Response, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "application/x-tar"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("client: encode the body of %s %s: %w", method, path, err)
		}
		rd, ctype = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &Error{Status: resp.StatusCode}
	var body2 api.Error
	if data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20)); json.Unmarshal(data, &body2) == nil && body2.Code != "" {
		e.Code, e.Message = body2.Code, body2.Message
	} else {
		e.Code, e.Message = api.CodeInternal, strings.TrimSpace(string(data))
	}
	return nil, e
}

// Node is the node's state.
func (c *Client) Node(ctx context.Context) (api.Node, error) {
	var n api.Node
	return n, c.do(ctx, "GET", "/v1/node", nil, nil, &n)
}

// GPUs lists the node's GPUs.
func (c *Client) GPUs(ctx context.Context) ([]api.GPU, error) {
	var g []api.GPU
	return g, c.do(ctx, "GET", "/v1/gpus", nil, nil, &g)
}

// GPU is one GPU.
func (c *Client) GPU(ctx context.Context, uuid string) (api.GPU, error) {
	var g api.GPU
	return g, c.do(ctx, "GET", "/v1/gpus/"+url.PathEscape(uuid), nil, nil, &g)
}

// Cordon takes a GPU out of service.
func (c *Client) Cordon(ctx context.Context, uuid, reason string) error {
	return c.do(ctx, "POST", "/v1/gpus/"+url.PathEscape(uuid)+"/cordon", nil, api.Cordon{Reason: reason}, nil)
}

// Uncordon returns a GPU to service.
func (c *Client) Uncordon(ctx context.Context, uuid string) error {
	return c.do(ctx, "POST", "/v1/gpus/"+url.PathEscape(uuid)+"/uncordon", nil, nil, nil)
}

// Drain cordons a GPU and returns once its work is off it.
func (c *Client) Drain(ctx context.Context, uuid string) error {
	return c.do(ctx, "POST", "/v1/gpus/"+url.PathEscape(uuid)+"/drain", nil, nil, nil)
}

// Release returns a quarantined GPU to service.
func (c *Client) Release(ctx context.Context, uuid string) error {
	return c.do(ctx, "POST", "/v1/gpus/"+url.PathEscape(uuid)+"/release", nil, nil, nil)
}

// CordonNode takes the node out of service.
func (c *Client) CordonNode(ctx context.Context, reason string) error {
	return c.do(ctx, "POST", "/v1/node/cordon", nil, api.Cordon{Reason: reason}, nil)
}

// UncordonNode returns the node to service.
func (c *Client) UncordonNode(ctx context.Context) error {
	return c.do(ctx, "POST", "/v1/node/uncordon", nil, nil, nil)
}

// DrainNode cordons the node and returns once every GPU is free.
func (c *Client) DrainNode(ctx context.Context) error {
	return c.do(ctx, "POST", "/v1/node/drain", nil, nil, nil)
}

// SetBudget sets the GPUs' power budget in watts and meets it; 0 lifts it.
func (c *Client) SetBudget(ctx context.Context, watts float64) (api.CurtailReport, error) {
	var r api.CurtailReport
	return r, c.do(ctx, "PUT", "/v1/power/budget", nil, api.Budget{Watts: watts}, &r)
}

// Submit submits a workload.
func (c *Client) Submit(ctx context.Context, s api.Spec) (api.Workload, error) {
	var w api.Workload
	return w, c.do(ctx, "POST", "/v1/workloads", nil, s, &w)
}

// Get is one workload.
func (c *Client) Get(ctx context.Context, id string) (api.Workload, error) {
	var w api.Workload
	return w, c.do(ctx, "GET", "/v1/workloads/"+url.PathEscape(id), nil, nil, &w)
}

// Filter selects workloads for List; zero fields select all.
type Filter struct {
	Tenant, Kind string
	States       []string
}

// List lists workloads in submission order.
func (c *Client) List(ctx context.Context, f Filter) ([]api.Workload, error) {
	q := url.Values{}
	if f.Tenant != "" {
		q.Set("tenant", f.Tenant)
	}
	if f.Kind != "" {
		q.Set("kind", f.Kind)
	}
	for _, s := range f.States {
		q.Add("state", s)
	}
	var ws []api.Workload
	return ws, c.do(ctx, "GET", "/v1/workloads", q, nil, &ws)
}

// Cancel cancels a workload and returns its record.
func (c *Client) Cancel(ctx context.Context, id string) (api.Workload, error) {
	var w api.Workload
	return w, c.do(ctx, "POST", "/v1/workloads/"+url.PathEscape(id)+"/cancel", nil, nil, &w)
}

// Forget removes a finished workload's record.
func (c *Client) Forget(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/workloads/"+url.PathEscape(id), nil, nil, nil)
}

// Logs is a workload's output.
func (c *Client) Logs(ctx context.Context, id string) ([]byte, error) {
	resp, err := c.send(ctx, "GET", "/v1/workloads/"+url.PathEscape(id)+"/logs", nil, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Query selects ledger records; zero fields select all.
type Query struct {
	From, To                    time.Time
	GPU, Workload, Tenant, Kind string
	AfterSeq                    uint64
	Limit                       int // 0: no limit
}

func (q Query) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339Nano))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339Nano))
	}
	set("gpu", q.GPU)
	set("workload", q.Workload)
	set("tenant", q.Tenant)
	set("kind", q.Kind)
	if q.AfterSeq > 0 {
		v.Set("after_seq", strconv.FormatUint(q.AfterSeq, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Records reads ledger records in sequence order.
func (c *Client) Records(ctx context.Context, q Query) ([]api.Record, error) {
	var rs []api.Record
	return rs, c.do(ctx, "GET", "/v1/ledger/records", q.values(), nil, &rs)
}

// ExportCSV writes the records q selects to w as CSV.
func (c *Client) ExportCSV(ctx context.Context, q Query, w io.Writer) error {
	v := q.values()
	v.Set("format", "csv")
	resp, err := c.send(ctx, "GET", "/v1/ledger/records", v, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// Summary sums the records q selects by workload, tenant, kind or gpu.
func (c *Client) Summary(ctx context.Context, q Query, by string) ([]api.Row, error) {
	v := q.values()
	if by != "" {
		v.Set("by", by)
	}
	var rows []api.Row
	return rows, c.do(ctx, "GET", "/v1/ledger/summary", v, nil, &rows)
}

// ImportImage imports an image tar (OCI layout or docker save) for tenant.
func (c *Client) ImportImage(ctx context.Context, tenant string, tar io.Reader) ([]string, error) {
	var out api.Imported
	return out.Images, c.do(ctx, "POST", "/v1/tenants/"+url.PathEscape(tenant)+"/images", nil, tar, &out)
}

// Healthy reports whether the agent serves and its manager runs.
func (c *Client) Healthy(ctx context.Context) error {
	return c.do(ctx, "GET", "/healthz", nil, nil, nil)
}

// Stream is one connection of the event stream.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Events opens the event stream after sequence number after.
func (c *Client) Events(ctx context.Context, after uint64) (*Stream, error) {
	h := http.Header{}
	h.Set("Accept", "text/event-stream")
	if after > 0 {
		h.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := c.send(ctx, "GET", "/v1/events", nil, nil, h)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	return &Stream{body: resp.Body, sc: sc}, nil
}

// Next returns the next event; io.EOF when the agent ended the stream.
func (s *Stream) Next() (api.Event, error) {
	var data []byte
	for s.sc.Scan() {
		line := s.sc.Bytes()
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				var ev api.Event
				if err := json.Unmarshal(data, &ev); err != nil {
					return api.Event{}, fmt.Errorf("client: an event: %w", err)
				}
				return ev, nil
			}
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		}
	}
	if err := s.sc.Err(); err != nil {
		return api.Event{}, err
	}
	return api.Event{}, io.EOF
}

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }

// Watch streams events after sequence number after until ctx ends,
// reconnecting with the last sequence number seen when the stream breaks
// (the agent restarted): none is lost or repeated, as long as the agent
// keeps its event log. The channel closes when ctx ends; a call the agent
// refuses for good (bad credentials) ends it too, with the error on errc.
func (c *Client) Watch(ctx context.Context, after uint64) (<-chan api.Event, <-chan error) {
	ch, errc := make(chan api.Event, 64), make(chan error, 1)
	go func() { // owned by ctx
		defer close(ch)
		for ctx.Err() == nil {
			s, err := c.Events(ctx, after)
			var e *Error
			if errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.Status == http.StatusBadRequest) {
				errc <- err
				return
			}
			for err == nil {
				var ev api.Event
				if ev, err = s.Next(); err != nil {
					break
				}
				select {
				case ch <- ev:
					after = ev.Seq
				case <-ctx.Done():
					_ = s.Close()
					return
				}
			}
			if s != nil {
				_ = s.Close()
			}
			select {
			case <-time.After(c.retry):
			case <-ctx.Done():
			}
		}
	}()
	return ch, errc
}
