package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/agent/api"
	"github.com/gpufarm/gpufarm/gpu"
	"github.com/gpufarm/gpufarm/isolation"
	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// Server is the agent's API over one node's workload manager: an
// http.Handler a team can mount in its own server, or serve with Serve.
type Server struct {
	m    *workload.Manager
	o    options
	mux  *http.ServeMux
	done chan struct{} // closed when Serve shuts down: event streams end
	once sync.Once
}

// Token is a bearer token the API accepts. A token with a Tenant acts for
// that tenant only; one without is the operator's.
type Token struct {
	Secret string
	Tenant string
}

// Option configures a Server.
type Option func(*options)

type options struct {
	gpus       *gpu.Manager
	ledger     accounting.Ledger
	metrics    http.Handler
	images     isolation.ImageStore
	tokens     []Token
	tls        *tls.Config
	certTenant func(*x509.Certificate) (string, bool)
	log        *slog.Logger
	maxBody    int64
	maxImage   int64
	ping       time.Duration
}

// Defaults.
const (
	DefaultMaxBodyBytes  = 1 << 20  // JSON bodies
	DefaultMaxImageBytes = 64 << 30 // image tars
	DefaultPingInterval  = 15 * time.Second
)

// WithGPUs serves the node's inventory and readiness (GET /v1/gpus,
// /v1/node); without it they report the manager's view only.
func WithGPUs(g *gpu.Manager) Option { return func(o *options) { o.gpus = g } }

// WithLedger serves the ledger's records and summaries.
func WithLedger(l accounting.Ledger) Option { return func(o *options) { o.ledger = l } }

// WithMetrics serves h (the accounting collector's handler) at /metrics.
func WithMetrics(h http.Handler) Option { return func(o *options) { o.metrics = h } }

// WithImages lets callers import images for a tenant.
func WithImages(s isolation.ImageStore) Option { return func(o *options) { o.images = s } }

// WithTokens makes every call but /healthz and /v1/openapi.json present
// one of tokens (or a verified client certificate).
func WithTokens(tokens ...Token) Option {
	return func(o *options) { o.tokens = append(o.tokens, tokens...) }
}

// WithTLS serves TLS with cfg (Serve). Set cfg.ClientAuth to
// tls.RequireAndVerifyClientCert, with ClientCAs, to accept client
// certificates as credentials.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithCertTenant maps a verified client certificate to the tenant it acts
// for; ok false makes it the operator's. By default a certificate whose
// common name is "tenant:NAME" acts for NAME, any other for the operator.
func WithCertTenant(f func(*x509.Certificate) (tenant string, ok bool)) Option {
	return func(o *options) { o.certTenant = f }
}

// WithLogger logs requests that fail and what Serve does.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMaxBodyBytes bounds JSON request bodies (DefaultMaxBodyBytes).
func WithMaxBodyBytes(n int64) Option { return func(o *options) { o.maxBody = n } }

// WithMaxImageBytes bounds an image import's tar (DefaultMaxImageBytes).
func WithMaxImageBytes(n int64) Option { return func(o *options) { o.maxImage = n } }

// WithPingInterval is how often an idle event stream sends a comment so
// proxies keep it open (DefaultPingInterval).
func WithPingInterval(d time.Duration) Option { return func(o *options) { o.ping = d } }

// Error categories of New and Serve, matched with errors.Is.
var (
	// ErrInvalid: an option of New is bad; the error names each.
	ErrInvalid = errors.New("agent: invalid option")
	// ErrInsecure: Serve was asked to listen off loopback without TLS and
	// credentials.
	ErrInsecure = errors.New("agent: refusing to serve off loopback without TLS and credentials")
)

// New serves m. It fails with ErrInvalid naming every bad option.
func New(m *workload.Manager, opts ...Option) (*Server, error) {
	o := options{maxBody: DefaultMaxBodyBytes, maxImage: DefaultMaxImageBytes, ping: DefaultPingInterval, certTenant: tenantFromCN}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if m == nil {
		errs = append(errs, errors.New("the workload manager is nil"))
	}
	if o.maxBody <= 0 || o.maxImage <= 0 {
		errs = append(errs, fmt.Errorf("WithMaxBodyBytes(%d), WithMaxImageBytes(%d): give positive sizes", o.maxBody, o.maxImage))
	}
	if o.ping <= 0 {
		errs = append(errs, fmt.Errorf("WithPingInterval(%v): give a positive interval", o.ping))
	}
	for i, t := range o.tokens {
		if len(t.Secret) < 16 {
			errs = append(errs, fmt.Errorf("WithTokens: token %d is %d characters: give at least 16 random ones", i, len(t.Secret)))
		}
		if t.Tenant != "" {
			if err := isolation.ValidateTenant(t.Tenant); err != nil {
				errs = append(errs, fmt.Errorf("WithTokens: token %d: %w", i, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	s := &Server{m: m, o: o, mux: http.NewServeMux(), done: make(chan struct{})}
	paths := http.NewServeMux() // which paths exist, whatever the method
	allow := map[string][]string{}
	for _, rt := range routes {
		s.mux.Handle(rt.method+" "+rt.path, s.handler(rt))
		if allow[rt.path] == nil {
			paths.Handle(rt.path, http.NotFoundHandler())
		}
		allow[rt.path] = append(allow[rt.path], rt.method)
		slices.Sort(allow[rt.path])
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := paths.Handler(r); pattern != "" {
			w.Header().Set("Allow", strings.Join(allow[pattern], ", "))
			writeError(w, http.StatusMethodNotAllowed, api.CodeInvalid, fmt.Sprintf("%s %s: the path takes %s", r.Method, r.URL.Path, strings.Join(allow[pattern], ", ")))
			return
		}
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no %s %s in this API: see /v1/openapi.json", r.Method, r.URL.Path))
	})
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve serves the API on ln until ctx ends, then shuts down: event
// streams end at once, other calls get ten seconds to finish. Workloads
// keep running. On an address other than loopback it refuses to start
// without TLS and credentials (tokens, or client certificates).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.secure(ln.Addr()); err != nil {
		_ = ln.Close()
		return err
	}
	if s.o.tls != nil {
		ln = tls.NewListener(ln, s.o.tls)
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.o.log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }() // ends at Shutdown
	s.o.log.Info("agent API serving", "address", ln.Addr().String(), "tls", s.o.tls != nil, "tokens", len(s.o.tokens))
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	_ = s.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-served
	s.o.log.Info("agent API stopped")
	return err
}

// Close ends the event streams, at once and for good: an http.Server
// that serves s waits for them in Shutdown (as httptest.Server does in
// Close), so call it first. Serve calls it when it shuts down. It is
// idempotent.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.done) })
	return nil
}

// ListenAndServe listens on addr (TCP) and serves, as Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("agent: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// secure refuses an address off loopback without TLS and credentials.
func (s *Server) secure(addr net.Addr) error {
	if isLoopback(addr) {
		return nil
	}
	var missing []string
	if s.o.tls == nil {
		missing = append(missing, "TLS (WithTLS)")
	}
	certs := s.o.tls != nil && s.o.tls.ClientAuth == tls.RequireAndVerifyClientCert
	if len(s.o.tokens) == 0 && !certs {
		missing = append(missing, "credentials (WithTokens, or client certificates required and verified)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s has no %s: listen on loopback, or give them", ErrInsecure, addr, strings.Join(missing, " and "))
	}
	return nil
}

func isLoopback(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// decodeLimit wraps a body with the limit for its route.
func (s *Server) decodeLimit(w http.ResponseWriter, r *http.Request, image bool) io.Reader {
	n := s.o.maxBody
	if image {
		n = s.o.maxImage
	}
	return http.MaxBytesReader(w, r.Body, n)
}
