package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/agent"
	"github.com/gpufarm/gpufarm/agent/client"
	"github.com/gpufarm/gpufarm/workload"
)

// publicListener is a loopback listener that says it listens on a public
// address: what Serve checks, without leaving loopback.
type publicListener struct{ net.Listener }

func (publicListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 9400} }

func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// TestServeRefusesAnOpenPublicAddress: off loopback the agent needs TLS
// and credentials, and says which are missing.
func TestServeRefusesAnOpenPublicAddress(t *testing.T) {
	n := newNode(t)
	pki := newPKI(t)
	cases := []struct {
		name    string
		opts    []agent.Option
		missing []string
	}{
		{"nothing", nil, []string{"TLS", "credentials"}},
		{"tokens without TLS", []agent.Option{agent.WithTokens(agent.Token{Secret: operatorToken})}, []string{"TLS"}},
		{"TLS without credentials", []agent.Option{agent.WithTLS(pki.serverTLS(false))}, []string{"credentials"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := agent.New(n.m, tc.opts...)
			require.NoError(t, err)
			err = s.Serve(context.Background(), publicListener{loopback(t)})
			require.ErrorIs(t, err, agent.ErrInsecure)
			t.Logf("refused: %v", err)
			for _, m := range tc.missing {
				assert.Contains(t, err.Error(), m)
			}
		})
	}
}

// TestServeWithClientCertificates: TLS on a public address with client
// certificates as credentials; a certificate named "tenant:acme" acts for
// acme, and a client without a certificate is refused at the handshake.
func TestServeWithClientCertificates(t *testing.T) {
	n := newNode(t)
	pki := newPKI(t)
	s, err := agent.New(n.m, agent.WithTLS(pki.serverTLS(true)))
	require.NoError(t, err)
	ln := loopback(t)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, publicListener{ln}) }()
	t.Cleanup(func() { cancel(); <-served })

	_, err = n.op.Submit(ctxFor(t), sleeper("theirs", "globex", 1))
	require.NoError(t, err)
	acme, err := client.New("https://"+addr, client.WithHTTPClient(pki.client(t, "tenant:acme")))
	require.NoError(t, err)
	_, err = acme.Submit(ctxFor(t), sleeper("mine", "", 1))
	require.NoError(t, err)
	ws, err := acme.List(ctxFor(t), client.Filter{})
	require.NoError(t, err)
	require.Len(t, ws, 1, "the certificate acts for acme only")
	assert.Equal(t, "acme", ws[0].Spec.Tenant)

	operator, err := client.New("https://"+addr, client.WithHTTPClient(pki.client(t, "ops")))
	require.NoError(t, err)
	ws, err = operator.List(ctxFor(t), client.Filter{})
	require.NoError(t, err)
	assert.Len(t, ws, 2)

	anonymous, err := client.New("https://"+addr, client.WithHTTPClient(pki.client(t, "")))
	require.NoError(t, err)
	_, err = anonymous.List(ctxFor(t), client.Filter{})
	require.Error(t, err, "no certificate, no call")
}

// TestServeShutsDownCleanly: ending Serve's context ends the event
// streams and returns; the workloads run on.
func TestServeShutsDownCleanly(t *testing.T) {
	n := newNode(t)
	s, err := agent.New(n.m)
	require.NoError(t, err)
	ln := loopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	c, err := client.New("http://" + ln.Addr().String())
	require.NoError(t, err)
	_, err = c.Submit(ctxFor(t), sleeper("job", "acme", 1))
	require.NoError(t, err)
	n.waitState(t, c, "job", "running")
	stream, err := c.Events(ctxFor(t), 0)
	require.NoError(t, err)
	_, err = stream.Next()
	require.NoError(t, err)

	t0 := time.Now()
	cancel()
	require.NoError(t, <-served)
	assert.Less(t, time.Since(t0), 5*time.Second, "an open event stream does not hold the shutdown")
	for {
		if _, err = stream.Next(); err != nil {
			break
		}
	}
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "the stream ended: %v", err)
	w, err := n.m.Get("job")
	require.NoError(t, err)
	assert.Equal(t, workload.StateRunning, w.State, "the workload runs on")
}

// pki is a test certificate authority with a server certificate for
// 127.0.0.1.
type pki struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.issue(t, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	return p
}

func (p *pki) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *pki) serverTLS(clientCerts bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS13}
	if clientCerts {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	}
	return cfg
}

// client is an HTTP client that trusts the CA and, unless cn is empty,
// presents a certificate named cn.
func (p *pki) client(t *testing.T, cn string) *http.Client {
	cfg := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS13}
	if cn != "" {
		cfg.Certificates = []tls.Certificate{p.issue(t, cn, x509.ExtKeyUsageClientAuth)}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}
