package etcdutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/internal/etcderr"
)

// DefaultDialTimeout is how long New waits for etcd to answer when the caller sets no timeout.
const DefaultDialTimeout = 5 * time.Second

// ConnectConfig says how to reach etcd, in the words of etcdctl's flags.
//
// An endpoint is used as the etcd client uses it: https:// always speaks TLS (with the
// system's CAs when CACert is empty), http:// never does, and host:port does when a TLS file
// is given. ClientConfig therefore refuses an http:// endpoint when a TLS file is given,
// rather than send the password and the data in plain text; a password that does go in
// plain text is allowed, as etcdctl allows it, and Warnings says so.
type ConnectConfig struct {
	// Endpoints are host:port or URLs of etcd members. Required.
	Endpoints []string
	// CACert, Cert and Key are PEM files: the CA that signed the server certificates, and the
	// client certificate with its key. CACert alone enables TLS with server verification;
	// Cert and Key go together.
	CACert, Cert, Key string
	// Username and Password authenticate against etcd's auth store when Username is set.
	Username, Password string
	// DialTimeout bounds the reachability check, and then the TLS handshake that explains
	// a failed one. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives the etcd client's own logs. Default: discarded.
	Logger *zap.Logger
}

// Warnings returns what is unsafe but allowed in c, one sentence each, for the caller to
// show (a command prints them to stderr, a service logs them): today, a password that would
// go to etcd unencrypted over TCP (an http:// endpoint, or host:port without TLS files).
// Connect does not refuse a configuration for a warning, and does not show it.
func (c ConnectConfig) Warnings() []string {
	if c.Username == "" {
		return nil
	}
	tlsFiles := c.CACert != "" || c.Cert != "" || c.Key != ""
	var plain []string
	for _, ep := range c.Endpoints {
		if strings.HasPrefix(ep, "unix:") {
			continue // a local socket: nothing goes on a wire
		}
		// With TLS files, http:// is refused by ClientConfig.
		if t := transportOf(ep); !tlsFiles && (t == plainText || t == tlsIfFiles) {
			plain = append(plain, ep)
		}
	}
	if len(plain) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("the password of etcd user %q goes unencrypted to %s: use https:// endpoints with --cacert",
		c.Username, strings.Join(plain, ","))}
}

// TLSConfig builds a client TLS configuration from PEM files. It returns nil, nil when no
// file is named. Errors name the file and the flag-like field that named it.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("TLS: a client certificate needs both cert and key (cert=%q, key=%q)", certFile, keyFile)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("TLS: reading CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS: CA certificate %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS: loading client certificate %s with key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// ClientConfig turns a ConnectConfig into a clientv3.Config, reading the TLS files. It
// refuses an http:// endpoint when a TLS file is given: the etcd client would speak plain
// text to it.
func (c ConnectConfig) ClientConfig() (clientv3.Config, error) {
	if len(c.Endpoints) == 0 {
		return clientv3.Config{}, errors.New("no etcd endpoints given")
	}
	for _, ep := range c.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return clientv3.Config{}, fmt.Errorf("empty etcd endpoint in %q", c.Endpoints)
		}
	}
	if files := c.tlsFlags(); files != "" {
		for _, ep := range c.Endpoints {
			if transportOf(ep) == plainText {
				return clientv3.Config{}, fmt.Errorf("etcd endpoint %s is plain http:// but TLS files are given (%s): "+
					"write it https://%s to use them", ep, files, ep[strings.Index(ep, "://")+3:])
			}
		}
	}
	tlsCfg, err := TLSConfig(c.CACert, c.Cert, c.Key)
	if err != nil {
		return clientv3.Config{}, err
	}
	logger := c.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	return clientv3.Config{
		Endpoints:   c.Endpoints,
		TLS:         tlsCfg,
		Username:    c.Username,
		Password:    c.Password,
		DialTimeout: c.dialTimeout(),
		Logger:      logger,
	}, nil
}

func (c ConnectConfig) dialTimeout() time.Duration {
	if c.DialTimeout <= 0 {
		return DefaultDialTimeout
	}
	return c.DialTimeout
}

// tlsFlags names the TLS files given, as etcdctl's flags: "--cacert ca.pem, --cert c.pem".
func (c ConnectConfig) tlsFlags() string {
	var parts []string
	for _, f := range []struct{ flag, file string }{{"--cacert", c.CACert}, {"--cert", c.Cert}, {"--key", c.Key}} {
		if f.file != "" {
			parts = append(parts, f.flag+" "+f.file)
		}
	}
	return strings.Join(parts, ", ")
}

// transport is how the etcd client speaks to an endpoint.
type transport int

const (
	tlsIfFiles transport = iota // host:port or a unix socket: TLS when a TLS file is given
	plainText                   // http://: never TLS
	alwaysTLS                   // https:// or unixs://: always TLS
)

// transportOf reads an endpoint as the etcd client does.
func transportOf(ep string) transport {
	if strings.HasPrefix(ep, "unixs:") {
		return alwaysTLS
	}
	if strings.HasPrefix(ep, "unix:") || !strings.Contains(ep, "://") {
		return tlsIfFiles
	}
	u, err := url.Parse(ep)
	if err != nil {
		return tlsIfFiles
	}
	switch u.Scheme {
	case "http":
		return plainText
	case "https":
		return alwaysTLS
	}
	return tlsIfFiles
}

// Connect makes a client and checks, within the dial timeout, that etcd answers with the
// given credentials. On failure the client is closed and the error names the endpoints.
// When TLS is in use and etcd did not answer, Connect makes one TLS handshake of its own to
// each endpoint (within another dial timeout) and, if one fails, says which certificate is
// wrong and names its file.
func Connect(ctx context.Context, c ConnectConfig) (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	// With auth the client asks for a token while it is made.
	cli, err := clientv3.New(cfg)
	timedOut := errors.Is(err, context.DeadlineExceeded)
	if err == nil {
		if timedOut, err = reach(ctx, cli, cfg.DialTimeout); err == nil {
			return cli, nil
		}
		_ = cli.Close()
	}
	if answered(err) {
		return nil, explain(strings.Join(c.Endpoints, ","), cfg.DialTimeout, err, timedOut)
	}
	if perr := probeTLS(ctx, c, cfg.TLS, cfg.DialTimeout); perr != nil {
		return nil, perr
	}
	return nil, explain(strings.Join(c.Endpoints, ","), cfg.DialTimeout, err, timedOut)
}

// CheckReachable asks etcd for a key, as etcdctl's endpoint health does, and returns nil when
// etcd answers (a permission error is an answer: the user may not read that key). A timeout,
// refused connection or failed authentication comes back as an error naming the endpoints.
func CheckReachable(ctx context.Context, cli *clientv3.Client, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	timedOut, err := reach(ctx, cli, timeout)
	if err == nil {
		return nil
	}
	return explain(strings.Join(cli.Endpoints(), ","), timeout, err, timedOut)
}

// reach is CheckReachable's request: it returns whether the timeout ran out and etcd's
// error, if any.
func reach(ctx context.Context, cli *clientv3.Client, timeout time.Duration) (timedOut bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = cli.Get(ctx, "health", clientv3.WithCountOnly())
	if err == nil || is(err, rpctypes.ErrPermissionDenied) {
		return false, nil
	}
	return ctx.Err() != nil, err
}

// answered reports whether err is etcd's answer, which a TLS connection carried: a
// permanent error that is not a failed handshake.
func answered(err error) bool {
	return etcderr.IsPermanent(err) && !etcderr.IsTLS(err)
}

// explain turns a failure to reach etcd into an error that names the endpoints and says
// what a user can do about it.
func explain(eps string, timeout time.Duration, err error, timedOut bool) error {
	if etcderr.IsPermanent(err) {
		switch {
		case is(err, rpctypes.ErrAuthFailed):
			return &connectError{"etcd at " + eps + ": authentication failed: wrong user name or password", err}
		case is(err, rpctypes.ErrUserEmpty):
			return &connectError{"etcd at " + eps + ": authentication is enabled: give a user name and password", err}
		}
	}
	if timedOut {
		return fmt.Errorf("etcd at %s did not answer within %s: %w", eps, timeout, err)
	}
	return fmt.Errorf("etcd at %s: %w", eps, err)
}

// is reports whether err is etcd's error target, typed by the client or a plain gRPC status
// with target's message (as the client's token request returns them).
func is(err, target error) bool {
	return errors.Is(err, target) || errors.Is(rpctypes.Error(err), target)
}

// connectError says in its own words why etcd could not be reached, and wraps the errors
// that it explains (for errors.Is and errors.As).
type connectError struct {
	msg string
	err error
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }
