package election_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("an election on a secured etcd", func() {
	const prefix = "/test/election/"
	var c *etcdtest.Cluster
	BeforeEach(func() { c = etcdtest.New(GinkgoT(), etcdtest.WithAuth("rootpw")) })

	userElection := func(ctx context.Context, id string) *election.Election {
		cli, err := c.UserClient("cand", "pw")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		e, err := election.New(cli, prefix, election.Options{ID: id, TTL: ttl, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(e.Close)
		return e
	}

	It("returns a refused campaign at once, naming the key", func(ctx SpecContext) {
		Expect(c.AddUser(ctx, "cand", "pw", etcdtest.Read(prefix))).To(Succeed())
		e := userElection(ctx, "n1")
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := e.Campaign(cctx)
		Expect(err).To(MatchError(And(ContainSubstring("permission denied"), ContainSubstring(prefix))))
		Expect(etcderr.IsPermanent(err)).To(BeTrue())
		Expect(cctx.Err()).NotTo(HaveOccurred())
	})

	It("keeps retrying a refused Run, reports it by Err, and leads once the role is mended", func(ctx SpecContext) {
		Expect(c.AddUser(ctx, "cand", "pw", etcdtest.Read(prefix))).To(Succeed())
		e := userElection(ctx, "n1")
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- e.Run(rctx) }()
		defer func() {
			cancel()
			Eventually(done).Should(Receive(BeNil()))
		}()
		Eventually(e.Err).Should(MatchError(ContainSubstring("permission denied")))
		Expect(e.IsLeader()).To(BeFalse())

		Expect(c.Grant(ctx, "cand", etcdtest.ReadWrite(prefix))).To(Succeed())
		// Run retries a refusal once per TTL.
		Eventually(e.IsLeader, 20*time.Second).Should(BeTrue())
		Expect(e.Err()).NotTo(HaveOccurred())
	})

	It("closes an observer that may not read the candidates", func(ctx SpecContext) {
		Expect(c.AddUser(ctx, "cand", "pw", etcdtest.Read("/elsewhere/"))).To(Succeed())
		e := userElection(ctx, "n1")
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		ch := e.Observe(octx)
		Eventually(ch, 20*time.Second).Should(BeClosed())
		Expect(octx.Err()).NotTo(HaveOccurred())
	})
})
