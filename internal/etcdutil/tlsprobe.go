package etcdutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcdkit/etcdkit/internal/etcderr"
)

// probeTLS makes one TLS handshake to each endpoint that the etcd client would reach over
// TLS, with the client's configuration, and returns an error that says, for those whose
// handshake failed, which certificate is wrong, ending with the TLS or x509 reason (so that
// etcderr classifies it as TLS). It returns nil when no handshake failed, or none could be
// made: that is for the caller to say.
//
// It ends within timeout, or when ctx is canceled; a ctx that only ran out of time (the
// reachability check's) does not end it.
func probeTLS(ctx context.Context, c ConnectConfig, cfg *tls.Config, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	defer stop()

	type problem struct {
		what string // the sentence after "etcd at <endpoints>"
		err  error
	}
	problems := make([]*problem, len(c.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.Endpoints {
		addr, host, ok := tlsTarget(ep, cfg != nil)
		if !ok {
			continue
		}
		wg.Go(func() {
			if what, err := handshake(pctx, addr, host, cfg, c); err != nil {
				problems[i] = &problem{what, err}
			}
		})
	}
	wg.Wait()

	// Endpoints with the same problem share one sentence.
	var order []string
	eps := map[string][]string{}
	var errs []error
	for i, p := range problems {
		if p == nil {
			continue
		}
		if _, seen := eps[p.what]; !seen {
			order = append(order, p.what)
		}
		eps[p.what] = append(eps[p.what], c.Endpoints[i])
		errs = append(errs, p.err)
	}
	if len(order) == 0 {
		return nil
	}
	msgs := make([]string, len(order))
	for i, what := range order {
		msgs[i] = "etcd at " + strings.Join(eps[what], ",") + what
	}
	return &connectError{msg: strings.Join(msgs, "; "), err: errors.Join(errs...)}
}

// tlsTarget returns the TCP address of an endpoint that the etcd client reaches over TLS,
// and the name it verifies the server's certificate against. Unix sockets are not probed.
func tlsTarget(ep string, tlsFiles bool) (addr, host string, ok bool) {
	switch transportOf(ep) {
	case plainText:
		return "", "", false
	case tlsIfFiles:
		if !tlsFiles {
			return "", "", false
		}
	}
	if strings.HasPrefix(ep, "unix:") || strings.HasPrefix(ep, "unixs:") {
		return "", "", false
	}
	addr = ep
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return "", "", false
		}
		addr = u.Host
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", false
	}
	return addr, host, true
}

// handshake makes a TLS connection to addr as the etcd client would, and returns what is
// wrong with a certificate when the handshake fails for one (what follows "etcd at <ep>"),
// with the handshake's error. It returns "", nil when the handshake succeeds and when it
// fails for no reason of TLS (the endpoint refuses connections or does not answer).
func handshake(ctx context.Context, addr, host string, base *tls.Config, c ConnectConfig) (string, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	// etcd serves gRPC over HTTP/2.
	cfg.NextProtos = []string{"h2"}
	// The client certificate is chosen as crypto/tls chooses it, noting whether the server
	// asked for one (which tells a missing certificate from a refused one when the alert is
	// vague: TLS 1.2 says "handshake failure") and whether the one given was withheld
	// because the server asked for one from other CAs.
	var asked, withheld atomic.Bool
	own, certs := cfg.GetClientCertificate, cfg.Certificates
	cfg.GetClientCertificate = func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		asked.Store(true)
		if own != nil {
			return own(info)
		}
		for i := range certs {
			if info.SupportsCertificate(&certs[i]) == nil {
				return &certs[i], nil
			}
		}
		withheld.Store(len(certs) > 0)
		return &tls.Certificate{}, nil
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", nil
	}
	defer raw.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(deadline)
	}
	conn := tls.Client(raw, cfg)
	err = conn.HandshakeContext(ctx)
	if err == nil {
		// With TLS 1.3 the server judges the client's certificate after the client has
		// finished its part of the handshake, and its verdict is the first record the
		// client reads. An HTTP/2 server speaks first (its SETTINGS frame), so one read
		// returns either that or the server's alert. Nothing is written: data the server
		// has not read when it closes a refused connection would make it reset the
		// connection, and the reset could overtake the alert.
		_, err = conn.Read(make([]byte, 1))
		if err == nil {
			return "", nil
		}
	}
	client := clientCert{given: own != nil || len(certs) > 0, asked: asked.Load(), withheld: withheld.Load()}
	if len(certs) > 0 {
		client.leaf = certs[0].Leaf
		if client.leaf == nil && len(certs[0].Certificate) > 0 {
			client.leaf, _ = x509.ParseCertificate(certs[0].Certificate[0])
		}
	}
	what := explainTLS(err, c, client)
	if what == "" {
		return "", nil
	}
	return what, err
}

// clientCert is what happened to the client certificate in a handshake.
type clientCert struct {
	given    bool              // one is configured
	leaf     *x509.Certificate // the configured one, when known
	asked    bool              // the server asked for one
	withheld bool              // the one configured was not sent: the server asked for other CAs
}

// explainTLS says what a failed handshake's err means, after "etcd at <ep>", or "" when err
// is not about TLS.
func explainTLS(err error, c ConnectConfig, client clientCert) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		opErr    *net.OpError
	)
	switch {
	// The server's certificate, as this client judges it.
	case errors.As(err, &unknown):
		if c.CACert == "" {
			return ": its certificate is not signed by a CA this system trusts: give etcd's CA with --cacert (x509: certificate signed by unknown authority)"
		}
		return fmt.Sprintf(": its certificate is not signed by the CA in --cacert %s (x509: certificate signed by unknown authority)", c.CACert)
	case errors.As(err, &hostname):
		return fmt.Sprintf(": its certificate is not valid for the name %s: use an endpoint with a name that the certificate holds, or give etcd a certificate for this one (%v)",
			hostname.Host, hostname)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return ": its certificate " + validity(invalid.Cert, "etcd needs a new one") + " (x509: certificate has expired or is not yet valid)"
	case errors.As(err, &invalid):
		return fmt.Sprintf(": its certificate is not valid (%v)", invalid)

	// This client's certificate, as etcd judged it: etcd's alert.
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		alert := opErr.Err.Error()
		switch {
		case !client.given && (client.asked || alert == alertText(alertCertificateRequired)):
			return fmt.Sprintf(" requires a client certificate: give one with --cert and --key (%v)", err)
		case !client.given:
			return fmt.Sprintf(" refused the TLS handshake (%v)", err)
		case client.withheld:
			return fmt.Sprintf(" refused the client certificate in --cert %s: it is not signed by a CA that etcd trusts "+
				"(etcd asked for a certificate from other CAs, so it was not sent: %v)", c.Cert, err)
		case alert == alertText(alertUnknownCA):
			return fmt.Sprintf(" refused the client certificate in --cert %s: it is not signed by a CA that etcd trusts (%v)", c.Cert, err)
		case alert == alertText(alertCertificateExpired):
			return fmt.Sprintf(" refused the client certificate in --cert %s: it %s (%v)", c.Cert, validity(client.leaf, "renew it"), err)
		case alert == alertText(alertBadCertificate) && client.leaf != nil && !clientAuth(client.leaf):
			return fmt.Sprintf(" refused the client certificate in --cert %s: it is not made for client authentication (%v)", c.Cert, err)
		case certificateAlert(alert):
			return fmt.Sprintf(" refused the client certificate in --cert %s (%v)", c.Cert, err)
		}
		return fmt.Sprintf(" refused the TLS handshake (%v)", err)
	}
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &verify):
		return fmt.Sprintf(": its certificate is not valid (%v)", verify.Err)
	case etcderr.IsTLS(err):
		return fmt.Sprintf(": the TLS handshake failed (%v)", err)
	}
	return ""
}

// TLS alerts (RFC 8446, section 6).
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertCertificateRequired    = 116
)

// alertText is the text of an alert received from the other side, as crypto/tls words it.
func alertText(alert uint8) string { return tls.AlertError(alert).Error() }

// certificateAlert reports whether an alert's text is one about a certificate: bad,
// unsupported, revoked, expired, unknown, or from an unknown CA.
func certificateAlert(text string) bool {
	for _, a := range []uint8{alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked,
		alertCertificateExpired, alertCertificateUnknown, alertUnknownCA} {
		if text == alertText(a) {
			return true
		}
	}
	return false
}

// validity says why cert is not valid now, after "it": "expired on <date>: <renew>" or "is
// not valid before <date>: check the clocks".
func validity(cert *x509.Certificate, renew string) string {
	switch {
	case cert == nil:
		return "has expired or is not valid yet"
	case time.Now().Before(cert.NotBefore):
		return "is not valid before " + cert.NotBefore.UTC().Format(time.RFC3339) + ": check the clocks of this machine and etcd's"
	}
	return "expired on " + cert.NotAfter.UTC().Format(time.RFC3339) + ": " + renew
}

// clientAuth reports whether cert may be used for client authentication.
func clientAuth(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 {
		return true
	}
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
