package agent

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
)

// caller is who makes a request: the operator, or one tenant.
type caller struct {
	tenant string // "" for the operator
}

func (c caller) operator() bool { return c.tenant == "" }

// sees reports whether the caller may see what belongs to tenant.
func (c caller) sees(tenant string) bool { return c.operator() || c.tenant == tenant }

// authenticate finds the caller from a verified client certificate or a
// bearer token. Without tokens and client certificates every caller is
// the operator: Serve allows that on loopback only.
func (s *Server) authenticate(r *http.Request) (caller, bool) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		if tenant, ok := s.o.certTenant(r.TLS.PeerCertificates[0]); ok {
			return caller{tenant: tenant}, true
		}
		return caller{}, true
	}
	if len(s.o.tokens) == 0 {
		if s.o.tls != nil && s.o.tls.ClientAuth == tls.RequireAndVerifyClientCert {
			return caller{}, false // the handshake should have refused it
		}
		return caller{}, true
	}
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || secret == "" {
		return caller{}, false
	}
	// Every token is compared, in constant time over digests of equal
	// length, so the time taken says nothing of which one nearly matched.
	got := sha256.Sum256([]byte(secret))
	found, who := 0, caller{}
	for _, t := range s.o.tokens {
		want := sha256.Sum256([]byte(t.Secret))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			found, who = 1, caller{tenant: t.Tenant}
		}
	}
	return who, found == 1
}

// tenantFromCN is the default WithCertTenant: a common name
// "tenant:NAME" acts for NAME.
func tenantFromCN(c *x509.Certificate) (string, bool) {
	t, ok := strings.CutPrefix(c.Subject.CommonName, "tenant:")
	return t, ok && t != ""
}
