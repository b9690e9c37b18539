package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// jwtSignMethod is how etcd signs the tokens of a WithJWT cluster: ECDSA on P-256, whose
// keys are made in a millisecond where RSA takes a noticeable part of a second.
const jwtSignMethod = "ES256"

// authTokenFlag returns etcd's --auth-token value for a WithJWT cluster: the key pair under
// the cluster's directory (made by the first member that starts, then shared by every
// member and kept across restarts, so that a token signed by one member is valid on all),
// the sign method and the TTL. It returns "" for a cluster of simple tokens.
func (c *Cluster) authTokenFlag() (string, error) {
	if !c.opts.jwt {
		return "", nil
	}
	priv, pub := filepath.Join(c.dir, "jwt", "jwt.key"), filepath.Join(c.dir, "jwt", "jwt.pub")
	if err := ensureJWTKeys(priv, pub); err != nil {
		return "", fmt.Errorf("etcdtest: JWT keys: %w", err)
	}
	return fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=%s,ttl=%s", pub, priv, jwtSignMethod, c.opts.jwtTTL), nil
}

// simpleTokenTTLSeconds is etcd's --auth-token-ttl for a WithSimpleTokenTTL cluster, in
// whole seconds rounded up, or 0 to keep etcd's default.
func (o options) simpleTokenTTLSeconds() uint {
	if o.tokenTTL <= 0 {
		return 0
	}
	return uint((o.tokenTTL + time.Second - 1) / time.Second)
}

// ensureJWTKeys writes a new ECDSA P-256 private key to privPath and its public key to
// pubPath, unless both exist already.
func ensureJWTKeys(privPath, pubPath string) error {
	_, errPriv := os.Stat(privPath)
	_, errPub := os.Stat(pubPath)
	if errPriv == nil && errPub == nil {
		return nil
	}
	for _, err := range []error{errPriv, errPub} {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(privPath), 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	// The public key is written last: a start that failed in between writes both again.
	if err := writeJWTPEM(privPath, "EC PRIVATE KEY", der); err != nil {
		return err
	}
	return writeJWTPEM(pubPath, "PUBLIC KEY", pubDER)
}

func writeJWTPEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
