package manager_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a leader-only manager", func() {
	It("refuses a second replica with the same ID, and leaves the first one leading", func() {
		c := etcdtest.New(GinkgoT())
		newReplica := func() *manager.Manager {
			cli, err := c.NewClient()
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(cli.Close)
			mgr, err := manager.New(manager.Options{Client: cli, Name: "jobs", ID: "twin", LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 5 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			return mgr
		}
		first := startReplica(newReplica())
		defer first.shutdown()
		Eventually(first.mgr.IsLeader).Should(BeTrue())

		second := startReplica(newReplica())
		var err error
		Eventually(second.done).WithTimeout(15 * time.Second).Should(Receive(&err))
		Expect(err).To(MatchError(manager.ErrDuplicateID))
		Expect(err.Error()).To(ContainSubstring(`"twin" campaigns at /etcdkit/jobs/election/`))
		Consistently(first.mgr.IsLeader, 500*time.Millisecond).Should(BeTrue())
	})
})
