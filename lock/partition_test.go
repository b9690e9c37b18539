package lock_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a holder that etcd stops answering", func() {
	It("reports the lock lost before etcd's TTL runs out, and locks again once etcd is back", specTimeout, func(ctx SpecContext) {
		const ttl = 6 * time.Second
		c := etcdtest.NewProcesses(GinkgoT())
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		l, err := lock.New(cli, uniqueKey("silent"), lock.Options{TTL: ttl, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)

		Expect(l.Lock(ctx)).To(Succeed())
		lost := l.Lost()
		Expect(c.Pause(0)).To(Succeed())
		paused := time.Now()
		DeferCleanup(func() { _ = c.Resume(0) })
		// Keep-alive answers stop: the lock counts as lost at the session's local deadline,
		// the send time of the last answered keep-alive (before the pause) plus the TTL less
		// 100 ms, before etcd could let the lease expire. That is within the TTL of the
		// pause; the wait allows a loaded test machine a moment more to schedule the timer
		// and this check, still before etcd's next expiry scan (every 500 ms) past the TTL.
		Eventually(lost).WithTimeout(ttl + 400*time.Millisecond).Should(BeClosed())
		AddReportEntry("Lost closed after the pause", time.Since(paused).String())
		Expect(c.Resume(0)).To(Succeed())

		Expect(l.Unlock(ctx)).To(Or(Succeed(), MatchError(lock.ErrLost)))
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(l.Unlock(ctx)).To(Succeed())
	})
})
