package lock_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a lock on a secured etcd", func() {
	It("returns a denied queue entry as such, every time, without giving up its session", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("rootpw"))
		Expect(c.AddUser(ctx, "worker", "pw", etcdtest.ReadWrite("/locks/a/"), etcdtest.Read("/locks/b/"))).To(Succeed())
		cli, err := c.UserClient("worker", "pw")
		Expect(err).NotTo(HaveOccurred())
		defer cli.Close()
		m, err := lock.NewManager(cli, "/locks", lock.Options{TTL: 5 * time.Second, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		defer m.Close()

		a, err := m.Get("a")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Lock(ctx)).To(Succeed())
		b, err := m.Get("b")
		Expect(err).NotTo(HaveOccurred())
		for range 20 {
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := b.Lock(lctx)
			cancel()
			Expect(err).To(MatchError(ContainSubstring("permission denied")))
			Expect(err.Error()).To(ContainSubstring("/locks/b/"))
			Expect(err).NotTo(MatchError(lock.ErrSessionExpired))
		}
		// The refusals on b cost a, which shares the session, nothing.
		Consistently(a.Lost(), 3*time.Second).ShouldNot(BeClosed())
		Expect(a.Unlock(ctx)).To(Succeed())
	})
})
