package lock_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
)

// leaseOf returns the lease of the queue entry of key created at rev.
func leaseOf(ctx context.Context, key string, rev int64) clientv3.LeaseID {
	GinkgoHelper()
	for _, e := range queue(ctx, key) {
		if e.rev == rev {
			return e.lease
		}
	}
	Fail(fmt.Sprintf("no entry of %s created at %d", key, rev))
	return 0
}

// revoked is a polling function for Eventually: whether etcd no longer knows id.
func revoked(id clientv3.LeaseID) func(ctx context.Context) bool {
	return func(ctx context.Context) bool {
		resp, err := cluster.Client().TimeToLive(ctx, id)
		return err == nil && resp.TTL == -1
	}
}

// lateEnqueue sends the queue write of an exclusive entry on lease id, as an attempt of an
// earlier Lock that etcd applied late would.
func lateEnqueue(ctx context.Context, key string, id clientv3.LeaseID) error {
	entry := fmt.Sprintf("%s/%x", key, int64(id))
	_, err := cluster.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(entry), "=", 0)).
		Then(clientv3.OpPut(entry, "", clientv3.WithLease(id))).
		Commit()
	return err
}

var _ = Describe("a lock session whose queue write was sent more than once", func() {
	It("is ended when its hold is released, so that a late attempt cannot queue the entry again", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		ps[0].Forward(false, false)
		ps[1].Forward(false, false)
		key := uniqueKey("retired")
		// The TTL outlasts the spec: a session that ends here was ended by the lock, not
		// by a lost keep-alive.
		l := newLock(cli, key, 60*time.Second)
		var prev clientv3.LeaseID
		replaced := 0
		for range 10 {
			Expect(l.Lock(ctx)).To(Succeed())
			id := leaseOf(ctx, key, l.Token())
			Expect(l.Unlock(ctx)).To(Succeed())
			if prev != 0 && id != prev {
				replaced++
				Eventually(revoked(prev)).WithContext(ctx).Should(BeTrue(), "lease %x of the replaced session", int64(prev))
				Expect(lateEnqueue(ctx, key, prev)).To(MatchError(rpctypes.ErrLeaseNotFound))
			}
			prev = id
		}
		Expect(replaced).To(BeNumerically(">", 0), "sessions replaced after a queue write sent to a silent member")
		_, held := ps[0].Counts()
		Expect(held).To(BeNumerically(">", 0), "requests the silent member kept")
		Expect(queueLen(key)(ctx)).To(BeZero())
	})

	It("keeps the holds of other locks on the session until they are released", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		m, err := lock.NewManager(cli, uniqueKey("retired-shared"), lock.Options{TTL: 60 * time.Second, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(m.Close)
		a, err := m.Get("a")
		Expect(err).NotTo(HaveOccurred())
		b, err := m.Get("b")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Lock(ctx)).To(Succeed())
		shared := leaseOf(ctx, a.Key(), a.Token())

		By("b's acquisitions reach etcd through a silent member until one retires the session")
		ps[0].Forward(false, false)
		ps[1].Forward(false, false)
		Eventually(func(g Gomega) {
			g.Expect(b.Lock(ctx)).To(Succeed())
			id := leaseOf(ctx, b.Key(), b.Token())
			g.Expect(b.Unlock(ctx)).To(Succeed())
			g.Expect(id).NotTo(Equal(shared), "b still locks on a's session")
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
		ps[0].Forward(true, true)
		ps[1].Forward(true, true)

		By("a still holds its lock, on the retired session")
		Expect(a.Lost()).NotTo(BeClosed())
		resp, err := cluster.Client().Txn(ctx).If(a.Guard()).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Succeeded).To(BeTrue(), "a's guard")
		Expect(revoked(shared)(ctx)).To(BeFalse())

		By("a's release ends the session")
		Expect(a.Unlock(ctx)).To(Succeed())
		Eventually(revoked(shared)).WithContext(ctx).Should(BeTrue())
	})
})
