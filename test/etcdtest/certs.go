package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles names PEM files for a client of a TLS cluster, as etcdctl's --cacert, --cert and
// --key flags take them.
type TLSFiles struct {
	CA   string // the CA that signed the server and client certificates
	Cert string // a client certificate
	Key  string // its private key
}

type certSet struct {
	client     TLSFiles
	serverCert string
	serverKey  string
}

// generateCerts writes a fresh CA, a server certificate for loopback and a client
// certificate under dir. The server certificate also serves as a client one, because etcd's
// own gateway dials the server with it.
func generateCerts(dir string) (*certSet, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	set := &certSet{client: TLSFiles{CA: filepath.Join(dir, "ca.crt")}}
	if err := writePEM(set.client.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(serial int64, cn string, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyPath, "EC PRIVATE KEY", keyDER)
	}
	set.serverCert, set.serverKey = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := leaf(2, "etcdtest server", set.serverCert, set.serverKey); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	set.client.Cert, set.client.Key = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	// The client's common name is no etcd user: with auth on, a certificate alone grants nothing.
	if err := leaf(3, "etcdtest client", set.client.Cert, set.client.Key); err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return set, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
