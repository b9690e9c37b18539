package etcdutil_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// Dial timeouts of the tests. A connection that etcd answers returns as soon as it does, so
// its bound is generous (with auth, the token request waits for etcd's bcrypt, slow under
// -race on a loaded machine). A connection that TLS refuses gets no answer and runs to its
// bound, and then the TLS handshake that explains it has as long again: the subtests that
// wait for it run in parallel.
const (
	answers = 30 * time.Second
	refused = 5 * time.Second
)

// connect connects with cc and returns Connect's error, closing the client it made if any.
func connect(t *testing.T, cc etcdutil.ConnectConfig) error {
	t.Helper()
	cli, err := etcdutil.Connect(context.Background(), cc)
	if err != nil {
		return err
	}
	return cli.Close()
}

// notAfter is the end of validity of the certificate in a PEM file, as the errors print it.
func notAfter(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.NotAfter.UTC().Format(time.RFC3339)
}

// tlsCase is one way to get TLS wrong and what Connect says about it.
type tlsCase struct {
	name string
	cc   etcdutil.ConnectConfig
	want string // the whole message, or a regular expression when re is set
	re   bool
}

func runTLSCases(t *testing.T, cases []tlsCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cc.DialTimeout = refused
			err := connect(t, tc.cc)
			if err == nil {
				t.Fatal("connected")
			}
			if tc.re {
				if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
					t.Fatalf("got  %q\nwant %q", err, tc.want)
				}
			} else if err.Error() != tc.want {
				t.Fatalf("got  %q\nwant %q", err, tc.want)
			}
			// A refused certificate is for an operator to fix: nothing retries it in silence.
			if !etcderr.IsPermanent(err) {
				t.Errorf("%v is %v, not permanent", err, etcderr.Classify(err))
			}
		})
	}
}

func TestConnectSaysWhichCertificateIsWrong(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithTLS())
	f := c.TLSFiles()
	ep := c.Endpoint(0)
	if err := connect(t, etcdutil.ConnectConfig{Endpoints: c.Endpoints(), CACert: f.CA, Cert: f.Cert, Key: f.Key, DialTimeout: answers}); err != nil {
		t.Fatalf("the cluster's own files: %v", err)
	}
	foreign, err := etcdtest.ForeignCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	expired, err := c.ExpiredClientCert()
	if err != nil {
		t.Fatal(err)
	}
	// Another cluster's CA has the same name as this one's, so the client sends its
	// certificate and etcd refuses it, where it withholds the foreign CA's.
	twin := etcdtest.New(t, etcdtest.WithTLS()).TLSFiles()

	runTLSCases(t, []tlsCase{{
		name: "a CA that did not sign the server's certificate",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, CACert: foreign.CA, Cert: f.Cert, Key: f.Key},
		want: "etcd at " + ep + ": its certificate is not signed by the CA in --cacert " + foreign.CA +
			" (x509: certificate signed by unknown authority)",
	}, {
		name: "no client certificate",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, CACert: f.CA},
		want: "etcd at " + ep + " requires a client certificate: give one with --cert and --key (remote error: tls: certificate required)",
	}, {
		name: "no client certificate, with a password",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, CACert: f.CA, Username: "root", Password: "pw"},
		want: "etcd at " + ep + " requires a client certificate: give one with --cert and --key (remote error: tls: certificate required)",
	}, {
		name: "a client certificate from a foreign CA",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, CACert: f.CA, Cert: foreign.Cert, Key: foreign.Key},
		want: "etcd at " + ep + " refused the client certificate in --cert " + foreign.Cert + ": it is not signed by a CA that etcd trusts " +
			"(etcd asked for a certificate from other CAs, so it was not sent: remote error: tls: certificate required)",
	}, {
		name: "a client certificate from a foreign CA of the same name",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, CACert: f.CA, Cert: twin.Cert, Key: twin.Key},
		want: "etcd at " + ep + " refused the client certificate in --cert " + twin.Cert + ": it is not signed by a CA that etcd trusts " +
			"(remote error: tls: unknown certificate authority)",
	}, {
		name: "an expired client certificate",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, CACert: f.CA, Cert: expired.Cert, Key: expired.Key},
		want: "etcd at " + ep + " refused the client certificate in --cert " + expired.Cert + ": it expired on " + notAfter(t, expired.Cert) +
			": renew it (remote error: tls: expired certificate)",
	}, {
		name: "the system's CAs for etcd's own",
		cc:   etcdutil.ConnectConfig{Endpoints: []string{ep}, Cert: f.Cert, Key: f.Key},
		want: "etcd at " + ep + ": its certificate is not signed by a CA this system trusts: give etcd's CA with --cacert " +
			"(x509: certificate signed by unknown authority)",
	}})
}

func TestConnectSaysWhatIsWrongWithTheServersCertificate(t *testing.T) {
	expired := etcdtest.New(t, etcdtest.WithTLS())
	if err := expired.ServeExpiredCert(); err != nil {
		t.Fatal(err)
	}
	misnamed := etcdtest.New(t, etcdtest.WithTLS())
	if err := misnamed.ServeCertFor("etcd.invalid"); err != nil {
		t.Fatal(err)
	}
	files := func(c *etcdtest.Cluster) etcdutil.ConnectConfig {
		f := c.TLSFiles()
		return etcdutil.ConnectConfig{Endpoints: c.Endpoints(), CACert: f.CA, Cert: f.Cert, Key: f.Key}
	}
	runTLSCases(t, []tlsCase{{
		name: "an expired server certificate",
		cc:   files(expired),
		want: "^etcd at " + regexp.QuoteMeta(expired.Endpoint(0)) + `: its certificate expired on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: etcd needs a new one ` +
			regexp.QuoteMeta("(x509: certificate has expired or is not yet valid)") + "$",
		re: true,
	}, {
		name: "a server certificate for another name",
		cc:   files(misnamed),
		want: "etcd at " + misnamed.Endpoint(0) + ": its certificate is not valid for the name 127.0.0.1: use an endpoint with a name that " +
			"the certificate holds, or give etcd a certificate for this one " +
			"(x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs)",
	}})
}

func TestConnectNamesEveryEndpointWithTheSameProblem(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithTLS(), etcdtest.WithMembers(3))
	f := c.TLSFiles()
	runTLSCases(t, []tlsCase{{
		name: "no client certificate",
		cc:   etcdutil.ConnectConfig{Endpoints: c.Endpoints(), CACert: f.CA},
		want: "etcd at " + strings.Join(c.Endpoints(), ",") + " requires a client certificate: give one with --cert and --key " +
			"(remote error: tls: certificate required)",
	}})
}

func TestConnectSaysNothingOfTLSWhenNothingAnswers(t *testing.T) {
	// A port that refuses connections: there is no handshake to explain.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	foreign, err := etcdtest.ForeignCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = connect(t, etcdutil.ConnectConfig{Endpoints: []string{"https://" + addr}, CACert: foreign.CA, DialTimeout: 200 * time.Millisecond})
	want := "etcd at https://" + addr + " did not answer within 200ms: context deadline exceeded"
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v does not wrap context.DeadlineExceeded", err)
	}
}

func TestConnectRefusesPlainHTTPWithTLSFiles(t *testing.T) {
	// Something listens on the endpoint, and must not be dialed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var dialed atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			_ = conn.Close()
		}
	}()
	foreign, err := etcdtest.ForeignCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	plain := "http://" + l.Addr().String()
	for _, tc := range []struct {
		name  string
		cc    etcdutil.ConnectConfig
		files string
	}{
		{"a CA", etcdutil.ConnectConfig{Endpoints: []string{plain}, CACert: foreign.CA}, "--cacert " + foreign.CA},
		{"a client certificate", etcdutil.ConnectConfig{Endpoints: []string{"https://127.0.0.1:1", plain}, Cert: foreign.Cert, Key: foreign.Key},
			"--cert " + foreign.Cert + ", --key " + foreign.Key},
		{"all three and a password", etcdutil.ConnectConfig{Endpoints: []string{plain}, CACert: foreign.CA, Cert: foreign.Cert, Key: foreign.Key,
			Username: "root", Password: "pw"}, "--cacert " + foreign.CA + ", --cert " + foreign.Cert + ", --key " + foreign.Key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := fmt.Sprintf("etcd endpoint %s is plain http:// but TLS files are given (%s): write it https://%s to use them",
				plain, tc.files, l.Addr())
			if _, err := tc.cc.ClientConfig(); err == nil || err.Error() != want {
				t.Fatalf("ClientConfig: got %v\nwant %s", err, want)
			}
			tc.cc.DialTimeout = answers
			if err := connect(t, tc.cc); err == nil || err.Error() != want {
				t.Fatalf("Connect: got %v\nwant %s", err, want)
			}
		})
	}
	_ = l.Close()
	<-done
	if n := dialed.Load(); n != 0 {
		t.Fatalf("the http:// endpoint was dialed %d times", n)
	}
}

func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		cc   etcdutil.ConnectConfig
		want []string
	}{
		{"a password over http://", etcdutil.ConnectConfig{Endpoints: []string{"http://10.0.0.1:2379", "https://10.0.0.2:2379"}, Username: "app", Password: "pw"},
			[]string{`the password of etcd user "app" goes unencrypted to http://10.0.0.1:2379: use https:// endpoints with --cacert`}},
		{"a password to host:port without TLS files", etcdutil.ConnectConfig{Endpoints: []string{"10.0.0.1:2379", "10.0.0.2:2379"}, Username: "app"},
			[]string{`the password of etcd user "app" goes unencrypted to 10.0.0.1:2379,10.0.0.2:2379: use https:// endpoints with --cacert`}},
		{"a password to host:port with a CA", etcdutil.ConnectConfig{Endpoints: []string{"10.0.0.1:2379"}, CACert: "ca.pem", Username: "app"}, nil},
		{"a password over https://", etcdutil.ConnectConfig{Endpoints: []string{"https://10.0.0.1:2379"}, Username: "app", Password: "pw"}, nil},
		{"a password to a unix socket", etcdutil.ConnectConfig{Endpoints: []string{"unix:///run/etcd.sock"}, Username: "app", Password: "pw"}, nil},
		{"a password over http:// with TLS files (refused by ClientConfig)", etcdutil.ConnectConfig{Endpoints: []string{"http://10.0.0.1:2379"}, CACert: "ca.pem", Username: "app"}, nil},
		{"no password over http://", etcdutil.ConnectConfig{Endpoints: []string{"http://10.0.0.1:2379"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cc.Warnings()
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestConnectAllowsAPasswordOverHTTPAndSaysWhatAuthWants(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithAuth("s3cret"))
	eps := c.Endpoints()
	cc := etcdutil.ConnectConfig{Endpoints: eps, Username: "root", Password: "s3cret", DialTimeout: answers}
	if len(cc.Warnings()) != 1 {
		t.Errorf("a password over http:// gives %q, want one warning", cc.Warnings())
	}
	if err := connect(t, cc); err != nil {
		t.Fatalf("right password: %v", err)
	}
	all := strings.Join(eps, ",")
	for _, tc := range []struct {
		name    string
		cc      etcdutil.ConnectConfig
		want    string
		etcdErr error
	}{
		{"a wrong password", etcdutil.ConnectConfig{Endpoints: eps, Username: "root", Password: "wrong"},
			"etcd at " + all + ": authentication failed: wrong user name or password", rpctypes.ErrAuthFailed},
		{"an unknown user", etcdutil.ConnectConfig{Endpoints: eps, Username: "nobody", Password: "s3cret"},
			"etcd at " + all + ": authentication failed: wrong user name or password", rpctypes.ErrAuthFailed},
		{"no user", etcdutil.ConnectConfig{Endpoints: eps},
			"etcd at " + all + ": authentication is enabled: give a user name and password", rpctypes.ErrUserEmpty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cc.DialTimeout = answers
			err := connect(t, tc.cc)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
			if !errors.Is(err, tc.etcdErr) {
				t.Errorf("%v does not wrap %v", err, tc.etcdErr)
			}
		})
	}
}
