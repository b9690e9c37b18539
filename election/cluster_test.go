package election_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("an election on a three-member etcd cluster", func() {
	const prefix = "/test/cluster/"

	It("never has two leaders when etcd's leader is killed, and its observers survive a member's restart and a compaction", func(ctx SpecContext) {
		By("starting etcd")
		c := etcdtest.NewProcesses(GinkgoT(), etcdtest.WithMembers(3))
		By("started")
		nodes := []*node{newNode(c, prefix, "n1"), newNode(c, prefix, "n2"), newNode(c, prefix, "n3")}
		for _, n := range nodes {
			n.run()
		}
		Eventually(func() []string { return leaders(nodes...) }).Should(HaveLen(1))

		// atMostOne checks that no two candidates claim the leadership, and that etcd
		// grants the leadership its claimant holds: its guard holds, or it no longer claims.
		atMostOne := func(g Gomega) {
			var claimants []*node
			for _, n := range nodes {
				if n.e.IsLeader() {
					claimants = append(claimants, n)
				}
			}
			g.Expect(len(claimants)).To(BeNumerically("<=", 1), "candidates that claim to lead")
			if len(claimants) == 0 {
				return
			}
			n := claimants[0]
			tctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			resp, err := c.Client().Txn(tctx).If(n.e.Guard()).Commit()
			if err == nil && !resp.Succeeded {
				g.Expect(n.e.IsLeader()).To(BeFalse(), "%s claims a leadership that etcd does not grant", n.id)
			}
		}

		By("killing etcd's leader")
		killed, err := c.Leader(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Kill(killed)).To(Succeed())
		Consistently(atMostOne).WithTimeout(2 * ttl).WithPolling(20 * time.Millisecond).Should(Succeed())
		oneLeader := func(g Gomega) {
			ids := leaders(nodes...)
			g.Expect(ids).To(HaveLen(1))
			id, err := nodes[0].e.GetLeader(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(id).To(Equal(ids[0]))
		}
		Eventually(oneLeader).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(c.Restart(ctx, killed)).To(Succeed())

		By("an observer whose only etcd member stops misses no change")
		m := (killed + 1) % 3
		cfg := c.ClientConfig()
		cfg.Endpoints = []string{c.Endpoint(m)}
		cli, err := clientv3.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		watcher, err := election.New(cli, prefix, election.Options{ID: "watcher", TTL: ttl})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(watcher.Close)
		rec := record(watcher.Observe(ctx))
		// Sessions lost in etcd's failover may still be ending: the changes they cause come
		// before base, and what follows base is checked exactly.
		var first string
		var base int
		Eventually(func(g Gomega) {
			ids := leaders(nodes...)
			g.Expect(ids).To(HaveLen(1))
			seen := rec.seen()
			g.Expect(seen).NotTo(BeEmpty())
			g.Expect(seen[len(seen)-1]).To(Equal(ids[0]))
			first, base = ids[0], len(seen)-1
		}).Should(Succeed())

		Expect(c.Kill(m)).To(Succeed())
		resign := func() string {
			GinkgoHelper()
			for _, n := range nodes {
				if n.e.IsLeader() {
					Expect(n.e.Resign(ctx)).To(Succeed())
					break
				}
			}
			var next string
			Eventually(func(g Gomega) {
				ids := leaders(nodes...)
				g.Expect(ids).To(HaveLen(1))
				next = ids[0]
			}).Should(Succeed())
			return next
		}
		second := resign()
		third := resign()
		Expect(c.Restart(ctx, m)).To(Succeed())
		Eventually(func() []string { return rec.seen()[base:] }).Should(Equal([]string{first, second, third}))

		By("an observer that comes back after a compaction lists the candidates again")
		Expect(c.Kill(m)).To(Succeed())
		fourth := resign()
		fifth := resign()
		_, err = c.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Restart(ctx, m)).To(Succeed())
		Eventually(rec.last).WithTimeout(10 * time.Second).Should(Equal(fifth))
		Expect(rec.seen()[base : base+3]).To(Equal([]string{first, second, third}))
		Expect(fourth).NotTo(Equal(third))
		Consistently(atMostOne).WithTimeout(time.Second).Should(Succeed())
	})
})
