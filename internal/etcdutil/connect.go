package etcdutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultDialTimeout is how long New waits for etcd to answer when the caller sets no timeout.
const DefaultDialTimeout = 5 * time.Second

// ConnectConfig says how to reach etcd, in the words of etcdctl's flags.
type ConnectConfig struct {
	// Endpoints are host:port or URLs of etcd members. Required.
	Endpoints []string
	// CACert, Cert and Key are PEM files: the CA that signed the server certificates, and the
	// client certificate with its key. CACert alone enables TLS with server verification;
	// Cert and Key go together.
	CACert, Cert, Key string
	// Username and Password authenticate against etcd's auth store when Username is set.
	Username, Password string
	// DialTimeout bounds the reachability check. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives the etcd client's own logs. Default: discarded.
	Logger *zap.Logger
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

// ClientConfig turns a ConnectConfig into a clientv3.Config, reading the TLS files.
func (c ConnectConfig) ClientConfig() (clientv3.Config, error) {
	if len(c.Endpoints) == 0 {
		return clientv3.Config{}, errors.New("no etcd endpoints given")
	}
	for _, ep := range c.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return clientv3.Config{}, fmt.Errorf("empty etcd endpoint in %q", c.Endpoints)
		}
	}
	tlsCfg, err := TLSConfig(c.CACert, c.Cert, c.Key)
	if err != nil {
		return clientv3.Config{}, err
	}
	timeout := c.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
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
		DialTimeout: timeout,
		Logger:      logger,
	}, nil
}

// Connect makes a client and checks, within the dial timeout, that etcd answers with the
// given credentials. On failure the client is closed and the error names the endpoints.
func Connect(ctx context.Context, c ConnectConfig) (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		// With TLS the client may authenticate while it is made.
		return nil, explain(strings.Join(c.Endpoints, ","), cfg.DialTimeout, err, false)
	}
	if err := CheckReachable(ctx, cli, cfg.DialTimeout); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return cli, nil
}

// CheckReachable asks etcd for a key, as etcdctl's endpoint health does, and returns nil when
// etcd answers (a permission error is an answer: the user may not read that key). A timeout,
// refused connection or failed authentication comes back as an error naming the endpoints.
func CheckReachable(ctx context.Context, cli *clientv3.Client, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := cli.Get(ctx, "health", clientv3.WithCountOnly())
	if err == nil || isEtcdError(err, rpctypes.ErrPermissionDenied) {
		return nil
	}
	return explain(strings.Join(cli.Endpoints(), ","), timeout, err, ctx.Err() != nil)
}

// explain turns a failure to reach etcd into an error that names the endpoints and says
// what a user can do about it.
func explain(eps string, timeout time.Duration, err error, timedOut bool) error {
	switch {
	case isEtcdError(err, rpctypes.ErrAuthFailed):
		return fmt.Errorf("etcd at %s: authentication failed: wrong user name or password", eps)
	case isEtcdError(err, rpctypes.ErrUserEmpty):
		return fmt.Errorf("etcd at %s: authentication is enabled: give a user name and password", eps)
	case timedOut:
		return fmt.Errorf("etcd at %s did not answer within %s: %v", eps, timeout, err)
	default:
		return fmt.Errorf("etcd at %s: %w", eps, err)
	}
}

// isEtcdError reports whether err is the etcd server error target. Errors of the token
// request that the client makes while dialing arrive as plain gRPC statuses, not as the
// client's typed errors, so the message is compared too.
func isEtcdError(err, target error) bool {
	return errors.Is(err, target) || strings.Contains(err.Error(), target.Error())
}
