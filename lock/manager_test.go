package lock_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/lock"
)

var _ = Describe("Manager", func() {
	newManager := func(prefix string) *lock.Manager {
		m, err := lock.NewManager(newClient(), prefix, lock.Options{TTL: 3 * time.Second, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(m.Close)
		return m
	}

	It("hands out independent named locks on one session", specTimeout, func(ctx SpecContext) {
		prefix := uniqueKey("managed")
		m, other := newManager(prefix), newManager(prefix+"/")

		a, err := m.Get("a")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Get("a")).To(BeIdenticalTo(a))
		b, err := m.Get("b")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Key()).To(Equal(prefix + "/a"))

		Expect(a.Lock(ctx)).To(Succeed())
		Expect(b.TryLock(ctx)).To(BeTrue(), "b is independent of a")
		qa, qb := queue(ctx, a.Key()), queue(ctx, b.Key())
		Expect(qa).To(HaveLen(1))
		Expect(qb).To(HaveLen(1))
		Expect(qa[0].lease).To(Equal(qb[0].lease), "one session for both")

		oa, err := other.Get("a")
		Expect(err).NotTo(HaveOccurred())
		Expect(oa.TryLock(ctx)).To(BeFalse())
		Expect(a.Unlock(ctx)).To(Succeed())
		Expect(oa.TryLock(ctx)).To(BeTrue())
		Expect(oa.Unlock(ctx)).To(Succeed())

		By("a nested name is a lock of its own")
		nested, err := m.Get("b/c")
		Expect(err).NotTo(HaveOccurred())
		Expect(nested.TryLock(ctx)).To(BeTrue())
		ob, err := other.Get("b")
		Expect(err).NotTo(HaveOccurred())
		Expect(ob.TryLock(ctx)).To(BeFalse(), "b is still held")
		Expect(b.Unlock(ctx)).To(Succeed())
		Expect(ob.TryLock(ctx)).To(BeTrue(), "the held b/c does not block b")
		Expect(ob.Unlock(ctx)).To(Succeed())

		By("Close releases what is held and refuses new names")
		Expect(m.Close()).To(Succeed())
		Expect(queue(ctx, nested.Key())).To(BeEmpty())
		_, err = m.Get("a")
		Expect(err).To(MatchError(lock.ErrClosed))
		Expect(a.Lock(ctx)).To(MatchError(lock.ErrClosed))
	})

	It("makes a new lock for a name whose lock was closed", specTimeout, func(ctx SpecContext) {
		m := newManager(uniqueKey("reopen"))
		a, err := m.Get("a")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Close()).To(Succeed())
		again, err := m.Get("a")
		Expect(err).NotTo(HaveOccurred())
		Expect(again).NotTo(BeIdenticalTo(a))
		Expect(again.Lock(ctx)).To(Succeed())
		Expect(again.Unlock(ctx)).To(Succeed())
	})
})
