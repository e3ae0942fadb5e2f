package mining

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Defaults of a Client.
const (
	DefaultTimeout  = 2 * time.Second
	DefaultMaxBytes = 1 << 20
)

// ClientOption configures a Client; a bad value is refused by NewClient.
type ClientOption func(*clientConfig) error

type clientConfig struct {
	token    string
	timeout  time.Duration
	maxBytes int
	clock    gpu.Clock
}

// WithToken sets the API token sent with every request (see
// Launch.APIToken).
func WithToken(token string) ClientOption {
	return func(c *clientConfig) error {
		if !tokenRE.MatchString(token) {
			return fmt.Errorf("WithToken: want up to 256 letters, digits or ._~+/=-")
		}
		c.token = token
		return nil
	}
}

// WithTimeout bounds one poll, all its requests together (default
// DefaultTimeout). A miner that has not answered by then is ErrUnavailable.
func WithTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) error {
		if d <= 0 || d > time.Minute {
			return fmt.Errorf("WithTimeout(%v): want more than 0 and at most a minute", d)
		}
		c.timeout = d
		return nil
	}
}

// WithMaxBytes caps the size of one reply (default DefaultMaxBytes); a
// larger one is ErrMalformed and is not read further.
func WithMaxBytes(n int) ClientOption {
	return func(c *clientConfig) error {
		if n < 1024 || n > 64<<20 {
			return fmt.Errorf("WithMaxBytes(%d): want 1 KiB to 64 MiB", n)
		}
		c.maxBytes = n
		return nil
	}
}

// WithClientClock sets the clock that stamps readings (default the system
// clock); the timeout is real time.
func WithClientClock(clk gpu.Clock) ClientOption {
	return func(c *clientConfig) error {
		if clk == nil {
			return fmt.Errorf("WithClientClock: nil clock")
		}
		c.clock = clk
		return nil
	}
}

// Client polls one miner's API and keeps its last good stats. Its methods
// are safe for concurrent use; polls run one at a time.
type Client struct {
	a    Adapter
	addr string
	cfg  clientConfig
	http *http.Client

	pollMu  sync.Mutex // one poll at a time; guards buf, scratch and once
	buf     bytes.Buffer
	scratch Stats
	once    map[string][]byte // the replies of Once requests, by endpoint

	mu   sync.Mutex
	last Reading
}

// NewClient returns a client of the miner whose API listens on addr
// ("127.0.0.1:4067"). A bad address or option is an ErrInvalid naming it.
func NewClient(a Adapter, addr string, opts ...ClientOption) (*Client, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: NewClient: nil Adapter", ErrInvalid)
	}
	host, port, err := net.SplitHostPort(addr)
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("%w: NewClient: address %q: want host:port, e.g. 127.0.0.1:4067", ErrInvalid, addr)
	}
	cfg := clientConfig{timeout: DefaultTimeout, maxBytes: DefaultMaxBytes, clock: gpu.SystemClock{}}
	var errs []error
	for _, o := range opts {
		if o == nil {
			errs = append(errs, errors.New("nil ClientOption"))
			continue
		}
		if err := o(&cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: NewClient: %w", ErrInvalid, errors.Join(errs...))
	}
	c := &Client{a: a, addr: addr, cfg: cfg, once: map[string][]byte{}}
	c.http = &http.Client{Transport: &http.Transport{
		// Miners are on this host: no proxy, no compression, one idle
		// connection kept for the next poll.
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: cfg.timeout}).DialContext,
	}}
	return c, nil
}

// Adapter returns the client's adapter.
func (c *Client) Adapter() Adapter { return c.a }

// Addr returns the address polled.
func (c *Client) Addr() string { return c.addr }

// Close releases idle connections. It is idempotent; Poll may still be
// called after it.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Reading returns what the client knows of its miner now.
func (c *Client) Reading() Reading {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.last
	r.Stats.GPUs = slices.Clone(r.Stats.GPUs)
	return r
}

// Poll reads the miner's stats. On success the reading is healthy and
// holds the new stats; on failure it keeps the last good stats (with their
// time, see Reading.Age), is marked unhealthy and carries the error, which
// Poll also returns: ErrUnavailable, ErrMalformed or ErrRefused. Poll
// returns within the client's timeout.
func (c *Client) Poll(ctx context.Context) (Reading, error) {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	st := &c.scratch
	st.Reset()
	err := c.do(ctx, c.a.Requests(c.cfg.token), st)
	now := c.cfg.clock.Now()
	if err == nil && !st.Uptime.Valid && !st.StartedAt.IsZero() && !now.Before(st.StartedAt) {
		st.Uptime = gpu.Some(now.Sub(st.StartedAt))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last.Polled = now
	if err != nil {
		c.last.Healthy, c.last.Err = false, err
		c.last.Failures++
	} else {
		gpus := append(c.last.Stats.GPUs[:0], st.GPUs...)
		c.last.Stats = *st
		c.last.Stats.GPUs = gpus
		c.last.At, c.last.Healthy, c.last.Err, c.last.Failures = now, true, nil, 0
	}
	r := c.last
	r.Stats.GPUs = slices.Clone(r.Stats.GPUs)
	return r, err
}

// Send runs requests (an adapter's StartRequests) and checks each reply
// for an error; the replies are not kept.
func (c *Client) Send(ctx context.Context, reqs []Request) error {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	for _, r := range reqs {
		body, err := c.fetch(ctx, r)
		if err != nil {
			return fmt.Errorf("%s %s: %w", c.a.Name(), r.Endpoint, err)
		}
		if err := rpcError(body); err != nil {
			return fmt.Errorf("%s %s: %w", c.a.Name(), r.Endpoint, err)
		}
	}
	return nil
}

// rpcError finds a non-null "error" member in a JSON reply.
func rpcError(body []byte) error {
	s := newScanner(body)
	for it := s.object(); it.next(); {
		if string(it.key()) == "error" && s.peek() != 'n' {
			start := s.i
			s.skip()
			return fmt.Errorf("%w: %s", ErrRefused, bytes.TrimSpace(s.b[start:s.i]))
		}
		s.skip()
	}
	return nil
}

func (c *Client) do(ctx context.Context, reqs []Request, st *Stats) error {
	ok := 0
	for _, r := range reqs {
		body, kept := c.once[r.Endpoint]
		var err error
		if !kept {
			body, err = c.fetch(ctx, r)
		}
		if err == nil {
			err = c.a.Parse(r.Endpoint, body, st)
		}
		if err == nil && r.Once && !kept {
			c.once[r.Endpoint] = bytes.Clone(body)
		}
		if err != nil {
			if r.Optional && ctx.Err() == nil {
				continue
			}
			return fmt.Errorf("%s at %s, %s: %w", c.a.Name(), c.addr, r.Endpoint, err)
		}
		ok++
	}
	if ok == 0 {
		return fmt.Errorf("%w: %s at %s: no request answered", ErrUnavailable, c.a.Name(), c.addr)
	}
	return nil
}

// fetch runs one request and returns the reply, valid until the next one.
func (c *Client) fetch(ctx context.Context, r Request) ([]byte, error) {
	c.buf.Reset()
	var err error
	switch r.Proto {
	case ProtoHTTP:
		err = c.fetchHTTP(ctx, r)
	case ProtoTCP:
		err = c.fetchTCP(ctx, r)
	default:
		err = fmt.Errorf("%w: request protocol %d", ErrInvalid, r.Proto)
	}
	return c.buf.Bytes(), err
}

func (c *Client) fetchHTTP(ctx context.Context, r Request) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr+r.Path, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if r.Auth != "" {
		req.Header.Set("Authorization", r.Auth)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return unavailable(ctx, c.cfg.timeout, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: HTTP %s: the miner wants another API token", ErrRefused, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%w: HTTP %s", ErrRefused, resp.Status)
	}
	return c.readBody(ctx, resp.Body, 0)
}

func (c *Client) fetchTCP(ctx context.Context, r Request) error {
	d := net.Dialer{KeepAlive: -1} // one exchange per connection
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return unavailable(ctx, c.cfg.timeout, err)
	}
	defer conn.Close()
	// The context's deadline bounds the exchange; a cancel also ends it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(r.Payload); err != nil {
		return unavailable(ctx, c.cfg.timeout, err)
	}
	if err := c.readBody(ctx, conn, r.Lines); err != nil {
		return err
	}
	if c.buf.Len() == 0 {
		return fmt.Errorf("%w: the miner closed the connection without a reply", ErrUnavailable)
	}
	return nil
}

// readBody reads a reply into c.buf: to the end, or, when lines > 0, up to
// that many newlines; a NUL byte (which ends sgminer replies) ends it too.
// It reads at most maxBytes.
func (c *Client) readBody(ctx context.Context, r io.Reader, lines int) error {
	limit, seen := c.cfg.maxBytes, 0
	for {
		c.buf.Grow(4096)
		b := c.buf.AvailableBuffer()
		b = b[:min(cap(b), limit+1-c.buf.Len())]
		k, err := r.Read(b)
		if k > 0 {
			data, done := b[:k], false
			if i := bytes.IndexByte(data, 0); i >= 0 {
				data, done = data[:i], true
			}
			if lines > 0 {
				seen += bytes.Count(data, []byte("\n"))
				done = done || seen >= lines
			}
			c.buf.Write(data)
			if c.buf.Len() > limit {
				return fmt.Errorf("%w: reply larger than %d bytes", ErrMalformed, limit)
			}
			if done {
				return nil
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && c.buf.Len() == 0:
			return unavailable(ctx, c.cfg.timeout, err)
		case err != nil:
			return fmt.Errorf("%w: reply cut short after %d bytes: %v", ErrMalformed, c.buf.Len(), err)
		}
	}
}

// unavailable wraps a transport error, saying when it was the timeout.
func unavailable(ctx context.Context, timeout time.Duration, err error) error {
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: no reply within %v: is the miner's API hung?", ErrUnavailable, timeout)
	}
	return fmt.Errorf("%w: %v: is the miner running with its API on that port?", ErrUnavailable, err)
}
