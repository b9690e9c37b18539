//go:build unix

package election_test

import (
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a candidate in its own process", func() {
	const prefix = "/test/process/"
	var c *etcdtest.Cluster

	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	It("killed with -9 while it leads, is replaced within the TTL plus a second", func(ctx SpecContext) {
		p := startCandidate(c.Endpoints(), prefix, "proc")
		Eventually(p.Out).WithTimeout(10 * time.Second).Should(gbytes.Say(`elected token=\d+`))
		n2 := newNode(c, prefix, "n2")
		n2.run()
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		Expect(n2.e.IsLeader()).To(BeFalse())

		killed := time.Now()
		p.Kill()
		Eventually(n2.e.IsLeader).WithTimeout(within).WithPolling(10 * time.Millisecond).Should(BeTrue())
		AddReportEntry("kill -9 of the leader to the next leader", time.Since(killed).String())
		Eventually(p).Should(gexec.Exit())
	})

	It("paused past its TTL while it leads, comes back as a non-leader with its leader context cancelled and its fenced writes rejected", func(ctx SpecContext) {
		p := startCandidate(c.Endpoints(), prefix, "proc")
		Eventually(p.Out).WithTimeout(10 * time.Second).Should(gbytes.Say(`elected token=\d+`))
		p.probe()
		Eventually(p.Out).Should(gbytes.Say(`probe leader=true ctx=live write=ok\n`))
		n2 := newNode(c, prefix, "n2")
		n2.run()
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))

		p.Signal(syscall.SIGSTOP)
		paused := time.Now()
		Eventually(n2.e.IsLeader).WithTimeout(within).WithPolling(10 * time.Millisecond).Should(BeTrue())
		AddReportEntry("SIGSTOP of the leader to the next leader", time.Since(paused).String())
		Expect(fencedPut(ctx, n2, fencedKey)).To(BeTrue())

		p.Signal(syscall.SIGCONT)
		p.probe()
		Eventually(p.Out).Should(gbytes.Say(`probe leader=false ctx=context canceled write=fenced\n`))
		Eventually(p.Out.Contents).Should(ContainSubstring("defeated"))
		resp, err := c.Client().Get(ctx, fencedKey)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Kvs[0].Value)).To(Equal("n2"), "the paused leader's write did not land")

		By("it campaigns again, behind the new leader")
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		Consistently(n2.e.IsLeader).WithTimeout(500 * time.Millisecond).Should(BeTrue())
		p.probe()
		Eventually(p.Out).Should(gbytes.Say(`probe leader=false ctx=context canceled write=fenced\n`))
	})
})
