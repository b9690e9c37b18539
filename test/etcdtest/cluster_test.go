package etcdtest_test

import (
	"context"
	"errors"
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

// reachable says whether a client made from cc gets an answer from etcd within a second.
func reachable(ctx context.Context, cc etcdutil.ConnectConfig) error {
	cc.DialTimeout = time.Second
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

		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: files.CA, Cert: files.Cert, Key: files.Key})).To(Succeed())
		By("no client certificate")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: files.CA})).NotTo(Succeed())
		By("no TLS at all")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: []string{"127.0.0.1" + eps[0][len("https://127.0.0.1"):]}})).NotTo(Succeed())
		By("a client certificate from another CA")
		other := etcdtest.New(GinkgoT(), etcdtest.WithTLS())
		of := other.TLSFiles()
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: files.CA, Cert: of.Cert, Key: of.Key})).NotTo(Succeed())
		By("a server certificate that the client's CA did not sign")
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: of.CA, Cert: files.Cert, Key: files.Key})).NotTo(Succeed())
	})

	It("an auth cluster accepts only the right password", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("s3cret"))
		user, pass := c.User()
		Expect(user).To(Equal("root"))
		Expect(pass).To(Equal("s3cret"))
		_, err := c.Client().Put(ctx, "/auth", "ok")
		Expect(err).NotTo(HaveOccurred())

		eps := c.Endpoints()
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, Username: "root", Password: "s3cret"})).To(Succeed())
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, Username: "root", Password: "wrong"})).
			To(MatchError(ContainSubstring("authentication failed")))
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps})).
			To(MatchError(ContainSubstring("give a user name and password")))
	})

	It("TLS and auth together need both", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithTLS(), etcdtest.WithAuth("pw"))
		f := c.TLSFiles()
		eps := c.Endpoints()
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: f.CA, Cert: f.Cert, Key: f.Key, Username: "root", Password: "pw"})).To(Succeed())
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: f.CA, Cert: f.Cert, Key: f.Key, Username: "root", Password: "nope"})).NotTo(Succeed())
		Expect(reachable(ctx, etcdutil.ConnectConfig{Endpoints: eps, CACert: f.CA, Username: "root", Password: "pw"})).NotTo(Succeed())
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
