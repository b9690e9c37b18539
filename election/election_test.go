package election_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("New", func() {
	DescribeTable("rejects bad input with an error naming the option and the value",
		func(prefix string, opts election.Options, want string) {
			c := etcdtest.New(GinkgoT())
			e, err := election.New(c.Client(), prefix, opts)
			Expect(e).To(BeNil())
			Expect(err).To(MatchError(want))
		},
		Entry("empty prefix", "", election.Options{ID: "n1"}, `election: prefix must not be empty, got ""`),
		Entry("an ID with a slash", "/p/", election.Options{ID: "a/b"}, `election: ID must not hold '/' or white space, got "a/b"`),
		Entry("an ID with a space", "/p/", election.Options{ID: "a b"}, `election: ID must not hold '/' or white space, got "a b"`),
		Entry("TTL 1 s", "/p/", election.Options{TTL: time.Second}, "election: TTL must be at least 2s, got 1s"),
		Entry("a negative TTL", "/p/", election.Options{TTL: -2 * time.Second}, "election: TTL must be at least 2s, got -2s"),
		Entry("a TTL that is not whole seconds", "/p/", election.Options{TTL: 2500 * time.Millisecond},
			"election: TTL must be a whole number of seconds (etcd leases count seconds), got 2.5s"),
	)

	It("rejects a nil client, and takes zero Options: a host-based ID and the default TTL", func(ctx SpecContext) {
		_, err := election.New(nil, "/p/", election.Options{})
		Expect(err).To(MatchError("election: client must not be nil"))
		c := etcdtest.New(GinkgoT())
		e, err := election.New(c.Client(), "/p", election.Options{ID: "n1"})
		Expect(err).NotTo(HaveOccurred())
		Expect(e.Prefix()).To(Equal("/p/"))
		Expect(e.ID()).To(Equal("n1"))
		Expect(e.Close()).To(Succeed())

		e1, err := election.New(c.Client(), "/p", election.Options{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(e1.Close)
		e2, err := election.New(c.Client(), "/p", election.Options{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(e2.Close)
		host, err := os.Hostname()
		Expect(err).NotTo(HaveOccurred())
		Expect(e1.ID()).To(HavePrefix(host + "-"))
		Expect(e1.ID()).NotTo(Equal(e2.ID()), "two candidates with default IDs")

		Expect(e1.Campaign(ctx)).To(Succeed())
		key, lease := keyOf(ctx, c.Client(), "/p/", e1.ID())
		Expect(key).To(HavePrefix("/p/"))
		granted, err := c.Client().TimeToLive(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Expect(time.Duration(granted.GrantedTTL) * time.Second).To(Equal(election.DefaultTTL))
	})
})

var _ = Describe("an election", func() {
	const prefix = "/test/election/"
	var c *etcdtest.Cluster

	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	It("has exactly one leader at a time, and Resign hands over to the next in line at once", func(ctx SpecContext) {
		n1, n2, n3 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2"), newNode(c, prefix, "n3")
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		Expect(n1.e.Token()).To(BeNumerically(">", 0))
		r2 := n2.campaign(ctx)
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		r3 := n3.campaign(ctx)
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(3))

		oneLeader := func(g Gomega) {
			ids := leaders(n1, n2, n3)
			g.Expect(ids).To(HaveLen(1))
			id, err := n1.e.GetLeader(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(id).To(Equal(ids[0]), "etcd's leader")
		}
		Consistently(oneLeader).WithTimeout(time.Second).Should(Succeed())
		Expect(leaders(n1, n2, n3)).To(Equal([]string{"n1"}))
		Expect(fencedPut(ctx, n1, "/test/data")).To(BeTrue())
		Expect(fencedPut(ctx, n2, "/test/data")).To(BeFalse(), "a candidate that does not lead is fenced")

		By("n1 resigns: n2, next in line, leads within milliseconds")
		guard1 := n1.e.Guard()
		start := time.Now()
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Expect(n1.e.IsLeader()).To(BeFalse())
		Expect(n1.e.LeaderContext().Err()).To(HaveOccurred())
		Eventually(r2).Should(Receive(BeNil()))
		AddReportEntry("resign to next leader", time.Since(start).String())
		Expect(leaders(n1, n2, n3)).To(Equal([]string{"n2"}))
		resp, err := c.Client().Txn(ctx).If(guard1).Then(clientv3.OpPut("/test/data", "n1")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Succeeded).To(BeFalse(), "the old leader's guard no longer holds")
		Expect(n2.e.Token()).To(BeNumerically(">", 0))

		By("n2 resigns: n3 leads")
		Expect(n2.e.Resign(ctx)).To(Succeed())
		Eventually(r3).Should(Receive(BeNil()))
		Consistently(oneLeader).WithTimeout(500 * time.Millisecond).Should(Succeed())
		Expect(leaders(n1, n2, n3)).To(Equal([]string{"n3"}))

		By("Resign of a candidate that does not lead does nothing")
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Expect(n3.e.IsLeader()).To(BeTrue())
	})

	It("elects the next candidate when the leader's lease is revoked, and ends the old leader's context", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		Expect(n1.e.SessionAlive()).To(BeFalse(), "no session before the first campaign")
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		Expect(n1.e.SessionAlive()).To(BeTrue())
		lctx := n1.e.LeaderContext()
		r2 := n2.campaign(ctx)
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))

		_, lease := keyOf(ctx, c.Client(), prefix, "n1")
		_, err := c.Client().Revoke(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Eventually(r2).WithTimeout(within).Should(Receive(BeNil()))
		Eventually(lctx.Done()).Should(BeClosed())
		Expect(context.Cause(lctx)).To(MatchError(election.ErrSessionLost))
		Expect(n1.e.IsLeader()).To(BeFalse())
		Eventually(n1.e.SessionAlive).Should(BeFalse(), "a one-shot Campaign does not replace a lost session by itself")
		Eventually(n1.defeated.Load).Should(BeEquivalentTo(1))

		By("a one-shot Campaign after a lost session starts a new one")
		r1 := n1.campaign(ctx)
		Consistently(r1).WithTimeout(300 * time.Millisecond).ShouldNot(Receive())
		Expect(n2.e.Resign(ctx)).To(Succeed())
		Eventually(r1).Should(Receive(BeNil()))
		_, lease2 := keyOf(ctx, c.Client(), prefix, "n1")
		Expect(lease2).NotTo(Equal(lease))
	})

	It("never reports a leadership whose session ended while it waited (etcd #19597)", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		r2 := n2.campaign(ctx)
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))

		_, lease := keyOf(ctx, c.Client(), prefix, "n2")
		_, err := c.Client().Revoke(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Eventually(r2).Should(Receive(MatchError(election.ErrSessionLost)))
		Expect(n2.e.IsLeader()).To(BeFalse())
		Expect(n2.elected.Load()).To(BeZero())
		_, err = n2.e.GetLeader(ctx)
		Expect(err).To(MatchError(election.ErrNoLeader))
	})

	It("ends the leadership when the leader's key is deleted, and Run campaigns again", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		n1.run()
		Eventually(n1.e.IsLeader).Should(BeTrue())
		lctx := n1.e.LeaderContext()
		token := n1.e.Token()
		key, lease := keyOf(ctx, c.Client(), prefix, "n1")

		_, err := c.Client().Delete(ctx, key)
		Expect(err).NotTo(HaveOccurred())
		Eventually(lctx.Done()).Should(BeClosed())
		Eventually(n1.defeated.Load).Should(BeEquivalentTo(1))
		Eventually(n1.elected.Load).Should(BeEquivalentTo(2))
		Expect(n1.e.Token()).To(BeNumerically(">", token))
		_, lease2 := keyOf(ctx, c.Client(), prefix, "n1")
		Expect(lease2).To(Equal(lease), "the session lived on, so it is reused")
	})

	It("keeps campaigning under Run after the session is lost", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		n1.run()
		Eventually(n1.e.IsLeader).Should(BeTrue())
		n2.run()
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))

		_, lease := keyOf(ctx, c.Client(), prefix, "n1")
		_, err := c.Client().Revoke(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Eventually(n2.e.IsLeader).WithTimeout(within).Should(BeTrue())
		By("n1 is back in line with a new session")
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		_, lease2 := keyOf(ctx, c.Client(), prefix, "n1")
		Expect(lease2).NotTo(Equal(lease))
		Expect(n2.e.Resign(ctx)).To(Succeed())
		Eventually(n1.e.IsLeader).Should(BeTrue())
	})

	It("calls OnElected and OnDefeat once per transition, and Observe reports every change including no leader", func(ctx SpecContext) {
		n1, n2, watcher := newNode(c, prefix, "n1"), newNode(c, prefix, "n2"), newNode(c, prefix, "watcher")
		octx, stop := context.WithCancel(ctx)
		rec := record(watcher.e.Observe(octx))
		Eventually(rec.seen).Should(Equal([]string{""}))

		Expect(n1.e.Campaign(ctx)).To(Succeed())
		Eventually(rec.last).Should(Equal("n1"))
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Eventually(rec.last).Should(Equal(""))
		Expect(n2.e.Campaign(ctx)).To(Succeed())
		Eventually(rec.last).Should(Equal("n2"))
		_, lease := keyOf(ctx, c.Client(), prefix, "n2")
		_, err := c.Client().Revoke(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Eventually(rec.last).Should(Equal(""))
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		Eventually(rec.last).Should(Equal("n1"))
		Expect(n1.e.Close()).To(Succeed())
		Eventually(rec.last).Should(Equal(""))

		Expect(rec.seen()).To(Equal([]string{"", "n1", "", "n2", "", "n1", ""}))
		counts := func() []int32 {
			return []int32{n1.elected.Load(), n1.defeated.Load(), n2.elected.Load(), n2.defeated.Load()}
		}
		Eventually(counts).Should(Equal([]int32{2, 2, 1, 1}))
		Consistently(counts).WithTimeout(300 * time.Millisecond).Should(Equal([]int32{2, 2, 1, 1}))

		stop()
		Eventually(rec.closed).Should(BeClosed())
	})

	It("closes observers when the election is closed", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		rec := record(n1.e.Observe(ctx))
		Eventually(rec.seen).Should(Equal([]string{""}))
		Expect(n1.e.Close()).To(Succeed())
		Eventually(rec.closed).Should(BeClosed())
	})

	It("leaves the line when a waiting Campaign's context ends", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		cctx, cancel := context.WithCancel(ctx)
		r2 := n2.campaign(cctx)
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		cancel()
		Eventually(r2).Should(Receive(MatchError(context.Canceled)))
		Expect(candidates(ctx, c.Client(), prefix)).To(BeEquivalentTo(1))
		Expect(n2.e.IsLeader()).To(BeFalse())
	})

	It("on Close ends the leadership, calls OnDefeat, hands over at once, and refuses further calls", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		Expect(n1.e.SessionAlive()).To(BeFalse(), "no session before the first campaign")
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		Expect(n1.e.SessionAlive()).To(BeTrue())
		lctx := n1.e.LeaderContext()
		r2 := n2.campaign(ctx)
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		runDone := make(chan error, 1)
		go func() { runDone <- n1.e.Run(ctx) }()

		Expect(n1.e.Close()).To(Succeed())
		Expect(lctx.Err()).To(HaveOccurred())
		Expect(context.Cause(lctx)).To(MatchError(election.ErrClosed))
		Expect(n1.defeated.Load()).To(BeEquivalentTo(1), "OnDefeat has run when Close returns")
		Eventually(r2).Should(Receive(BeNil()))
		Eventually(runDone).Should(Receive(MatchError(election.ErrClosed)))

		Expect(n1.e.Campaign(ctx)).To(MatchError(election.ErrClosed))
		Expect(n1.e.Run(ctx)).To(MatchError(election.ErrClosed))
		Expect(n1.e.Close()).To(Succeed())
		Eventually(n1.e.Observe(ctx)).Should(BeClosed())
		Expect(n1.e.Token()).To(BeZero())
		resp, err := n1.cli.Txn(ctx).If(n1.e.Guard()).Then(clientv3.OpPut("/test/data", "n1")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Succeeded).To(BeFalse(), "the guard of a candidate that does not lead never holds")
	})

	It("stops Run with its context and resigns, so the next candidate leads at once", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- n1.e.Run(rctx) }()
		Eventually(n1.e.IsLeader).Should(BeTrue())
		n2.run()
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))

		cancel()
		Eventually(done).Should(Receive(BeNil()))
		Expect(n1.e.IsLeader()).To(BeFalse())
		Eventually(n2.e.IsLeader).Should(BeTrue())
		Expect(candidates(ctx, c.Client(), prefix)).To(BeEquivalentTo(1))
	})

	It("shares one campaign among several Run calls", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		ctxA, cancelA := context.WithCancel(ctx)
		ctxB, cancelB := context.WithCancel(ctx)
		doneA, doneB := make(chan error, 1), make(chan error, 1)
		go func() { doneA <- n1.e.Run(ctxA) }()
		go func() { doneB <- n1.e.Run(ctxB) }()
		Eventually(n1.e.IsLeader).Should(BeTrue())
		Consistently(func() int64 { return candidates(ctx, c.Client(), prefix) }).
			WithTimeout(300 * time.Millisecond).Should(BeEquivalentTo(1))

		cancelA()
		Eventually(doneA).Should(Receive(BeNil()))
		Expect(n1.e.IsLeader()).To(BeTrue(), "the other Run keeps the leadership")
		cancelB()
		Eventually(doneB).Should(Receive(BeNil()))
		Expect(n1.e.IsLeader()).To(BeFalse())
		Expect(candidates(ctx, c.Client(), prefix)).To(BeZero())
	})

	It("shares its keys' layout with etcd's concurrency.Election, so the two take turns", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(ttl/time.Second)))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(s.Close)
		theirs := concurrency.NewElection(s, strings.TrimSuffix(prefix, "/"))

		Expect(n1.e.Campaign(ctx)).To(Succeed())
		won := make(chan error, 1)
		go func() { won <- theirs.Campaign(ctx, "etcd") }()
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		Consistently(won).WithTimeout(300 * time.Millisecond).ShouldNot(Receive())
		resp, err := theirs.Leader(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Kvs[0].Value)).To(Equal("n1"))

		Expect(n1.e.Resign(ctx)).To(Succeed())
		Eventually(won).Should(Receive(BeNil()))
		r1 := n1.campaign(ctx)
		Consistently(r1).WithTimeout(300 * time.Millisecond).ShouldNot(Receive())
		id, err := n1.e.GetLeader(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(id).To(Equal("etcd"))
		Expect(theirs.Resign(ctx)).To(Succeed())
		Eventually(r1).Should(Receive(BeNil()))
	})

	It("returns an error, not a leadership, when etcd cannot be used", func(ctx SpecContext) {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		n1 := newNode(c, prefix, "n1")
		Expect(n1.cli.Close()).To(Succeed())
		err := n1.e.Campaign(cctx)
		Expect(err).To(HaveOccurred())
		Expect(errors.Is(err, election.ErrSessionLost)).To(BeFalse())
		Expect(n1.e.IsLeader()).To(BeFalse())
	})
})
