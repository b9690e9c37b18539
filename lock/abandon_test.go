package lock_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a release that etcd does not answer", func() {
	It("abandons the session: its lease is revoked once etcd answers, long before the TTL runs out", specTimeout, func(ctx SpecContext) {
		const ttl = 10
		c := etcdtest.NewProcesses(GinkgoT())
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		key := uniqueKey("abandoned")
		l, err := lock.New(cli, lock.Config{Key: key, TTL: ttl}, GinkgoLogr)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)

		Expect(l.Lock(ctx)).To(Succeed())
		resp, err := c.Client().Get(ctx, key+"/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		leaseID := clientv3.LeaseID(resp.Kvs[0].Lease)

		Expect(c.Pause(0)).To(Succeed())
		paused := time.Now()
		DeferCleanup(func() { _ = c.Resume(0) })
		uctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		Expect(l.Unlock(uctx)).To(MatchError(ContainSubstring("lock: releasing")))
		Expect(c.Resume(0)).To(Succeed())

		By("the abandoned session revokes its lease as soon as etcd answers: the entry goes without waiting for the TTL")
		// Unanswered, the lease would live until its TTL after the last keep-alive answer,
		// which came at most TTL/3 before the pause: not before 2/3 of the TTL after it.
		Eventually(func(g Gomega) int64 {
			ttlResp, err := c.Client().TimeToLive(ctx, leaseID)
			g.Expect(err).NotTo(HaveOccurred())
			return ttlResp.TTL
		}).WithContext(ctx).WithTimeout(2 * time.Second).Should(BeEquivalentTo(-1))
		AddReportEntry("lease gone after the pause", time.Since(paused).String())
		Expect(time.Since(paused)).To(BeNumerically("<", ttl*time.Second*2/3))
		resp, err = c.Client().Get(ctx, key+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Count).To(BeZero())

		By("the next Lock starts a new session")
		Expect(l.Lock(ctx)).To(Succeed())
		resp, err = c.Client().Get(ctx, key+"/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		Expect(clientv3.LeaseID(resp.Kvs[0].Lease)).NotTo(Equal(leaseID))
		Expect(l.Unlock(ctx)).To(Succeed())
	})
})
