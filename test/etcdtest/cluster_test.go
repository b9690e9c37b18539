package etcdtest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"runtime"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// Bounds of reachable. A check that etcd answers (a success, or a wrong password) returns
// as soon as it does, so its bound is generous: with auth, the client's token request waits
// for etcd's bcrypt, which takes seconds under -race on a loaded machine. A check that gets
// no answer (a certificate refused) runs to its bound, so that one is short, and these
// specs only say that it fails (internal/etcdutil's tests check what it says).
const (
	answers = 30 * time.Second
	refused = time.Second
)

// reachable says whether a client made from cc gets an answer from etcd within timeout.
func reachable(ctx context.Context, cc etcdutil.ConnectConfig, timeout time.Duration) error {
	cc.DialTimeout = timeout
	cli, err := etcdutil.Connect(ctx, cc)
	if err != nil {
		return err
	}
	return cli.Close()
}

var _ = Describe("an in-process cluster", func() {
	It("is ready to serve when Start returns, and Close removes its data", func(ctx SpecContext) {
		begin := time.Now()
		c, err := etcdtest.Start(ctx)
		Expect(err).NotTo(HaveOccurred())
		ready := time.Since(begin)
		AddReportEntry("1-member in-process etcd ready in", ready.String())

		_, err = c.Client().Put(ctx, "/k", "v")
		Expect(err).NotTo(HaveOccurred())
		resp, err := c.Client().Get(ctx, "/k")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		Expect(string(resp.Kvs[0].Value)).To(Equal("v"))

		dir := c.Dir()
		Expect(dir).To(BeADirectory())
		Expect(c.Close()).To(Succeed())
		Expect(dir).NotTo(BeAnExistingFile())
	})

	It("runs three members that replicate to each other", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithMembers(3))
		Expect(c.Members()).To(Equal(3))
		_, err := c.Client().Put(ctx, "/replicated", "yes")
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i < 3; i++ {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoint(i)}, Logger: zap.NewNop()})
			Expect(err).NotTo(HaveOccurred())
			// A linearizable read through member i sees the write made through another.
			resp, err := cli.Get(ctx, "/replicated")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Kvs).To(HaveLen(1))
			Expect(cli.Close()).To(Succeed())
		}
		leader, err := c.Leader(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(leader).To(BeNumerically(">=", 0))
	})

	It("keeps its data across a restart", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT())
		_, err := c.Client().Put(ctx, "/durable", "1")
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Restart(ctx, 0)).To(Succeed())
		Eventually(func(g Gomega) {
			resp, err := c.Client().Get(ctx, "/durable")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.Kvs).To(HaveLen(1))
		}).WithContext(ctx).Should(Succeed())
	})

	It("refuses the process faults it cannot do", func() {
		c := etcdtest.New(GinkgoT())
		Expect(c.Kill(0)).To(MatchError(etcdtest.ErrNotProcess))
		Expect(c.Pause(0)).To(MatchError(etcdtest.ErrNotProcess))
		Expect(c.Resume(0)).To(MatchError(etcdtest.ErrNotProcess))
	})

	It("rejects a bad member count with a clear error", func(ctx SpecContext) {
		_, err := etcdtest.Start(ctx, etcdtest.WithMembers(2))
		Expect(err).To(MatchError(ContainSubstring("members must be 1, 3 or 5, got 2")))
	})

	It("compacts so that a watch from an old revision fails with ErrCompacted", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT())
		put, err := c.Client().Put(ctx, "/w", "1")
		Expect(err).NotTo(HaveOccurred())
		_, err = c.Client().Put(ctx, "/w", "2")
		Expect(err).NotTo(HaveOccurred())
		rev, err := c.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(rev).To(BeNumerically(">", put.Header.Revision))
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wr := <-c.Client().Watch(wctx, "/w", clientv3.WithRev(put.Header.Revision))
		Expect(wr.Err()).To(MatchError(rpctypes.ErrCompacted))
	})
})

var _ = Describe("security", func() {
	It("a TLS cluster accepts only clients with a certificate from its CA", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithTLS())
		files := c.TLSFiles()
		Expect(files).NotTo(BeNil())
		eps := c.Endpoints()
		Expect(eps[0]).To(HavePrefix("https://"))

		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: files.CA, Cert: files.Cert, Key: files.Key}, answers)).To(Succeed())
		By("no client certificate")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: files.CA}, refused)).NotTo(Succeed())
		By("no TLS at all")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: []string{"127.0.0.1" + eps[0][len("https://127.0.0.1"):]}}, refused)).NotTo(Succeed())
		foreign, err := etcdtest.ForeignCA(GinkgoT().TempDir())
		Expect(err).NotTo(HaveOccurred())
		By("a client certificate from another CA")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: files.CA, Cert: foreign.Cert, Key: foreign.Key}, refused)).NotTo(Succeed())
		By("a server certificate that the client's CA did not sign")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: foreign.CA, Cert: files.Cert, Key: files.Key}, refused)).NotTo(Succeed())
	})

	It("an auth cluster accepts only the right password", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("s3cret"))
		user, pass := c.User()
		Expect(user).To(Equal("root"))
		Expect(pass).To(Equal("s3cret"))
		_, err := c.Client().Put(ctx, "/auth", "ok")
		Expect(err).NotTo(HaveOccurred())

		eps := c.Endpoints()
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, Username: "root", Password: "s3cret"}, answers)).To(Succeed())
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, Username: "root", Password: "wrong"}, answers)).
			To(MatchError(ContainSubstring("authentication failed")))
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps}, answers)).
			To(MatchError(ContainSubstring("give a user name and password")))
	})

	It("TLS and auth together need both", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithTLS(), etcdtest.WithAuth("pw"))
		f := c.TLSFiles()
		eps := c.Endpoints()
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: f.CA, Cert: f.Cert, Key: f.Key, Username: "root", Password: "pw"}, answers)).To(Succeed())
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: f.CA, Cert: f.Cert, Key: f.Key, Username: "root", Password: "nope"}, answers)).
			To(MatchError(ContainSubstring("authentication failed")))
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: f.CA, Username: "root", Password: "pw"}, refused)).NotTo(Succeed())
	})

	It("makes certificates that TLS refuses for the reason their name gives", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithTLS())
		f := c.TLSFiles()
		addr := c.Endpoint(0)[len("https://"):]
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(f.CA)
		Expect(err).NotTo(HaveOccurred())
		Expect(pool.AppendCertsFromPEM(pem)).To(BeTrue())
		// handshake dials the member as a client of the cluster's CA that sends the given
		// client certificate whichever CAs etcd asks for, and returns the handshake's error
		// or, as TLS 1.3 reports a refused client certificate, the first read's.
		handshake := func(serverName, certFile, keyFile string) error {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			Expect(err).NotTo(HaveOccurred())
			d := tls.Dialer{Config: &tls.Config{
				RootCAs: pool, ServerName: serverName, NextProtos: []string{"h2"},
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil },
			}}
			dctx, cancel := context.WithTimeout(ctx, answers)
			defer cancel()
			conn, err := d.DialContext(dctx, "tcp", addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			Expect(conn.SetReadDeadline(time.Now().Add(answers))).To(Succeed())
			_, err = conn.Read(make([]byte, 1)) // etcd's HTTP/2 server speaks first
			return err
		}
		Expect(handshake("", f.Cert, f.Key)).To(Succeed())

		By("an expired client certificate signed by the cluster's CA")
		expired, err := c.ExpiredClientCert()
		Expect(err).NotTo(HaveOccurred())
		Expect(expired.CA).To(Equal(f.CA))
		Expect(handshake("", expired.Cert, expired.Key)).To(MatchError(ContainSubstring("remote error: tls: expired certificate")))

		By("a foreign CA's client certificate")
		foreign, err := etcdtest.ForeignCA(GinkgoT().TempDir())
		Expect(err).NotTo(HaveOccurred())
		Expect(handshake("", foreign.Cert, foreign.Key)).To(MatchError(ContainSubstring("remote error: tls: unknown certificate authority")))

		By("a server certificate for another name")
		Expect(c.ServeCertFor("etcd.invalid")).To(Succeed())
		var hostname x509.HostnameError
		Expect(errors.As(handshake("", f.Cert, f.Key), &hostname)).To(BeTrue())
		Expect(handshake("etcd.invalid", f.Cert, f.Key)).To(Succeed())

		By("an expired server certificate")
		Expect(c.ServeExpiredCert()).To(Succeed())
		var invalid x509.CertificateInvalidError
		Expect(errors.As(handshake("", f.Cert, f.Key), &invalid)).To(BeTrue())
		Expect(invalid.Reason).To(Equal(x509.Expired))
	})
})

var _ = Describe("a cluster of processes", Ordered, func() {
	var c *etcdtest.Cluster

	BeforeAll(func() {
		c = etcdtest.NewProcesses(GinkgoT(), etcdtest.WithMembers(3),
			etcdtest.WithElectionTimeout(50*time.Millisecond, 500*time.Millisecond))
	})

	statusOf := func(ctx context.Context, i int) error {
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := c.Client().Status(sctx, c.Endpoint(i))
		return err
	}

	It("runs each member as its own etcd process", func(ctx SpecContext) {
		bin, err := etcdtest.EtcdBinary(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(bin).To(BeAnExistingFile())
		for i := 0; i < 3; i++ {
			Expect(statusOf(ctx, i)).To(Succeed())
		}
	})

	It("Pause makes a member stop answering and Resume brings it back", func(ctx SpecContext) {
		if !canPause { // no SIGSTOP: the error says so
			err := c.Pause(1)
			Expect(err).To(MatchError(And(ContainSubstring("SIGSTOP"), ContainSubstring(runtime.GOOS))))
			Expect(errors.Is(err, errors.ErrUnsupported)).To(BeTrue(), "got %v", err)
			return
		}
		Expect(c.Pause(1)).To(Succeed())
		err := statusOf(ctx, 1)
		Expect(errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded).To(BeTrue(), "got %v", err)
		// The others keep quorum and go on serving writes. A client's connection to the
		// paused member stays open and silent, so a request routed there times out and is
		// tried again.
		Eventually(func() error {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := c.Client().Put(pctx, "/during-pause", "x")
			return err
		}).WithContext(ctx).Should(Succeed())
		Expect(c.Resume(1)).To(Succeed())
		Eventually(func() error { return statusOf(ctx, 1) }).WithContext(ctx).Should(Succeed())
	})

	It("Kill ends a member and Restart brings it back with its data", func(ctx SpecContext) {
		_, err := c.Client().Put(ctx, "/before-kill", "1")
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Kill(2)).To(Succeed())
		Expect(statusOf(ctx, 2)).NotTo(Succeed())
		Eventually(func() error {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := c.Client().Put(pctx, "/while-down", "2")
			return err
		}).WithContext(ctx).Should(Succeed())

		Expect(c.Restart(ctx, 2)).To(Succeed())
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoint(2)}, Logger: zap.NewNop()})
		Expect(err).NotTo(HaveOccurred())
		defer cli.Close()
		// A serializable read answers from member 2's own store: its data survived, and it
		// caught up with what was written while it was down.
		Eventually(func(g Gomega) {
			for _, k := range []string{"/before-kill", "/while-down"} {
				resp, err := cli.Get(ctx, k, clientv3.WithSerializable())
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(resp.Kvs).To(HaveLen(1), k)
			}
		}).WithContext(ctx).Should(Succeed())
	})

	It("reports the etcd leader, and a new one after the leader is killed", func(ctx SpecContext) {
		old, err := c.Leader(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Kill(old)).To(Succeed())
		Eventually(func(g Gomega) {
			now, err := c.Leader(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(now).NotTo(Equal(old))
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(c.Restart(ctx, old)).To(Succeed())
	})
})

var _ = Describe("a single etcd process", func() {
	It("keeps its data across kill -9 and restart", func(ctx SpecContext) {
		c := etcdtest.NewProcesses(GinkgoT())
		_, err := c.Client().Put(ctx, "/k", "v")
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Kill(0)).To(Succeed())
		Expect(c.Restart(ctx, 0)).To(Succeed())
		Eventually(func(g Gomega) {
			resp, err := c.Client().Get(ctx, "/k")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.Kvs).To(HaveLen(1))
		}).WithContext(ctx).Should(Succeed())
	})

	It("fails with a clear error when the binary is missing", func(ctx SpecContext) {
		GinkgoT().Setenv(etcdtest.BinaryEnv, "/nonexistent/etcd")
		_, err := etcdtest.StartProcesses(ctx)
		Expect(err).To(MatchError(ContainSubstring("ETCDKIT_ETCD_BIN")))
	})
})
