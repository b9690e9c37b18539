package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
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
	caKey      string // the CA's private key, for the certificates of badcerts.go
	serverCert string
	serverKey  string
}

// leafSpec is what a certificate signed by a test CA says.
type leafSpec struct {
	cn        string
	notBefore time.Time
	notAfter  time.Time
	ips       []net.IP
	dns       []string
}

// loopback is a certificate valid for a day for every name of the loopback interface.
func loopback(cn string, now time.Time) leafSpec {
	return leafSpec{
		cn:        cn,
		notBefore: now.Add(-time.Hour),
		notAfter:  now.Add(24 * time.Hour),
		ips:       []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		dns:       []string{"localhost"},
	}
}

// generateCerts writes a fresh CA (its certificate and key), a server certificate for
// loopback and a client certificate under dir. The server certificate also serves as a
// client one, because etcd's own gateway dials the server with it.
func generateCerts(dir string) (*certSet, error) {
	set := &certSet{client: TLSFiles{CA: filepath.Join(dir, "ca.crt")}, caKey: filepath.Join(dir, "ca.key")}
	ca, caKey, err := writeCA(set.client.CA, set.caKey, "etcdtest CA")
	if err != nil {
		return nil, err
	}
	now := time.Now()
	set.serverCert, set.serverKey = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := writeLeaf(ca, caKey, loopback("etcdtest server", now), nil, set.serverCert, set.serverKey); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	set.client.Cert, set.client.Key = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	// The client's common name is no etcd user: with auth on, a certificate alone grants nothing.
	if err := writeLeaf(ca, caKey, loopback("etcdtest client", now), nil, set.client.Cert, set.client.Key); err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return set, nil
}

// writeCA writes a new self-signed CA, valid for a day, to certPath and its key to keyPath
// (creating their directory), and returns both.
func writeCA(certPath, keyPath, cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

// readCA reads a CA certificate and its key written by writeCA.
func readCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certDER, err := readPEM(certPath, "CERTIFICATE")
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

// readKey reads a private key written by writeKey.
func readKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, "EC PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// writeLeaf writes a certificate for both server and client authentication, signed by ca,
// to certPath. It is made for key, or for a new key written to keyPath when key is nil.
func writeLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, spec leafSpec, key *ecdsa.PrivateKey, certPath, keyPath string) error {
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return err
		}
		if err := writeKey(keyPath, key); err != nil {
			return err
		}
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.cn},
		NotBefore:    spec.notBefore,
		NotAfter:     spec.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  spec.ips,
		DNSNames:     spec.dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

// writePEM writes one PEM block to path through a temporary file and a rename, so that a
// reader (etcd reads its certificate at each handshake) sees the old file or the new one.
func writePEM(path, typ string, der []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != typ {
		return nil, errors.New(path + ": no " + typ + " PEM block")
	}
	return block.Bytes, nil
}
