package etcdtest

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// The certificates of this file are wrong on purpose, for tests of what a client says when
// TLS fails: a CA that no cluster trusts, an expired client certificate, and server
// certificates that are expired or made out for another name.

// errNoTLS is returned by the methods below on a cluster started without WithTLS.
var errNoTLS = errors.New("etcdtest: the cluster does not serve TLS (start it WithTLS)")

// ForeignCA writes under dir (created if needed) a new CA that no cluster trusts, with a
// client certificate for loopback that it signed, and returns the three files. Give CA as a
// client's CA to make it refuse a cluster's server certificate, or Cert and Key as its
// client certificate to make a cluster refuse it.
func ForeignCA(dir string) (TLSFiles, error) {
	f := TLSFiles{
		CA:   filepath.Join(dir, "foreign-ca.crt"),
		Cert: filepath.Join(dir, "foreign-client.crt"),
		Key:  filepath.Join(dir, "foreign-client.key"),
	}
	ca, caKey, err := writeCA(f.CA, filepath.Join(dir, "foreign-ca.key"), "etcdtest foreign CA")
	if err != nil {
		return TLSFiles{}, fmt.Errorf("etcdtest: foreign CA: %w", err)
	}
	if err := writeLeaf(ca, caKey, loopback("etcdtest foreign client", time.Now()), nil, f.Cert, f.Key); err != nil {
		return TLSFiles{}, fmt.Errorf("etcdtest: foreign client certificate: %w", err)
	}
	return f, nil
}

// ExpiredClientCert writes a client certificate signed by the cluster's CA that expired an
// hour ago, with its key, and returns them with the cluster's CA. The cluster refuses it.
func (c *Cluster) ExpiredClientCert() (TLSFiles, error) {
	if c.certs == nil {
		return TLSFiles{}, errNoTLS
	}
	dir := filepath.Dir(c.certs.client.CA)
	f := TLSFiles{CA: c.certs.client.CA, Cert: filepath.Join(dir, "expired-client.crt"), Key: filepath.Join(dir, "expired-client.key")}
	ca, caKey, err := readCA(c.certs.client.CA, c.certs.caKey)
	if err != nil {
		return TLSFiles{}, fmt.Errorf("etcdtest: expired client certificate: %w", err)
	}
	spec := loopback("etcdtest expired client", time.Now())
	spec.notBefore, spec.notAfter = spec.notBefore.Add(-48*time.Hour), time.Now().Add(-time.Hour)
	if err := writeLeaf(ca, caKey, spec, nil, f.Cert, f.Key); err != nil {
		return TLSFiles{}, fmt.Errorf("etcdtest: expired client certificate: %w", err)
	}
	return f, nil
}

// ServeExpiredCert makes every member present, from its next TLS handshake on, a server
// certificate signed by the cluster's CA that expired an hour ago (etcd reads its
// certificate file at each handshake). Clients that verify it refuse it, the cluster's own
// client included once it reconnects, and Restart can no longer wait for a member: give the
// test a cluster of its own.
func (c *Cluster) ServeExpiredCert() error {
	spec := loopback("etcdtest expired server", time.Now())
	spec.notBefore, spec.notAfter = spec.notBefore.Add(-48*time.Hour), time.Now().Add(-time.Hour)
	return c.replaceServerCert(spec)
}

// ServeCertFor makes every member present, from its next TLS handshake on, a server
// certificate signed by the cluster's CA that is valid only for the DNS names given (no IP
// address), so that a client that dials 127.0.0.1 finds its name missing. As with
// ServeExpiredCert, give the test a cluster of its own.
func (c *Cluster) ServeCertFor(dnsNames ...string) error {
	if len(dnsNames) == 0 {
		return errors.New("etcdtest: ServeCertFor needs at least one name")
	}
	spec := loopback("etcdtest server for other names", time.Now())
	spec.ips, spec.dns = nil, dnsNames
	return c.replaceServerCert(spec)
}

// replaceServerCert writes a new server certificate for the server's key, in place of the
// old one.
func (c *Cluster) replaceServerCert(spec leafSpec) error {
	if c.certs == nil {
		return errNoTLS
	}
	ca, caKey, err := readCA(c.certs.client.CA, c.certs.caKey)
	if err != nil {
		return fmt.Errorf("etcdtest: server certificate: %w", err)
	}
	// The key stays: etcd reads the certificate and the key in two reads, and a handshake
	// between two renames would pair a new certificate with an old key.
	key, err := readKey(c.certs.serverKey)
	if err != nil {
		return fmt.Errorf("etcdtest: server certificate: %w", err)
	}
	if err := writeLeaf(ca, caKey, spec, key, c.certs.serverCert, ""); err != nil {
		return fmt.Errorf("etcdtest: server certificate: %w", err)
	}
	return nil
}
