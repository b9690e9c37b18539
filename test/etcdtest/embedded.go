package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// inProcess runs members through etcd's embed package, in this process.
type inProcess struct{}

func (inProcess) start(ctx context.Context, c *Cluster, m *member) error {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dataDir
	cu, err := url.Parse(m.clientURL)
	if err != nil {
		return err
	}
	pu, err := url.Parse(m.peerURL)
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = c.initialCluster()
	cfg.InitialClusterToken = "etcdtest"
	cfg.TickMs = uint(c.opts.tick / time.Millisecond)
	cfg.ElectionMs = uint(c.opts.election / time.Millisecond)
	cfg.UnsafeNoFsync = true
	cfg.Logger = "zap"
	cfg.LogLevel = c.opts.logLevel
	cfg.LogOutputs = []string{m.logPath}
	if c.certs != nil {
		cfg.ClientTLSInfo.CertFile = c.certs.serverCert
		cfg.ClientTLSInfo.KeyFile = c.certs.serverKey
		cfg.ClientTLSInfo.TrustedCAFile = c.certs.client.CA
		cfg.ClientTLSInfo.ClientCertAuth = true
	}
	cfg.BcryptCost = bcryptCost
	if ttl := c.opts.simpleTokenTTLSeconds(); ttl > 0 {
		cfg.AuthTokenTTL = ttl
	}
	token, err := c.authTokenFlag()
	if err != nil {
		return err
	}
	if token != "" {
		cfg.AuthToken = token
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	m.handle = e
	// A member that fails after starting (a port taken, say) reports on Err; waitServing
	// notices that it never serves, and this check gives the reason early.
	select {
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s: %w", m.name, err)
	default:
		return nil
	}
}

func (inProcess) stop(m *member, _ bool) error {
	e, ok := m.handle.(*embed.Etcd)
	if !ok {
		return nil
	}
	e.Close()
	m.handle = nil
	return nil
}

func (inProcess) signal(*member, bool) error { return ErrNotProcess }
