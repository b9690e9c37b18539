package election_test

import (
	"context"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// haProbe is a primary and a secondary function that record how many of them run at once
// in one process, and how many times each started.
type haProbe struct {
	running   atomic.Int32
	both      atomic.Int32 // starts that found the other function still running
	primaries atomic.Int32
	seconds   atomic.Int32
}

func (p *haProbe) play(started *atomic.Int32) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if p.running.Add(1) > 1 {
			p.both.Add(1)
		}
		started.Add(1)
		<-ctx.Done()
		// A little clean-up work, during which the other function must not start.
		time.Sleep(20 * time.Millisecond)
		p.running.Add(-1)
		return nil
	}
}

func newCoordinator(n *node, p *haProbe) *election.HACoordinator {
	GinkgoHelper()
	h, err := election.NewHACoordinator(n.e, p.play(&p.primaries), p.play(&p.seconds), election.HAOptions{})
	Expect(err).NotTo(HaveOccurred())
	return h
}

var _ = Describe("an HA coordinator", func() {
	const prefix = "/test/ha/"
	var c *etcdtest.Cluster

	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	It("rejects bad input", func() {
		n := newNode(c, prefix, "n1")
		_, err := election.NewHACoordinator(nil, func(context.Context) error { return nil }, nil, election.HAOptions{})
		Expect(err).To(MatchError("election: HACoordinator needs an Election, got nil"))
		_, err = election.NewHACoordinator(n.e, nil, nil, election.HAOptions{})
		Expect(err).To(MatchError("election: HACoordinator needs a primary function, got nil"))
	})

	It("runs the primary on the leader and the secondary elsewhere, switching both ways, one function at a time", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		p1, p2 := &haProbe{}, &haProbe{}
		h1, h2 := newCoordinator(n1, p1), newCoordinator(n2, p2)
		Expect(h1.Role()).To(Equal(election.RoleNone))
		s1 := startBlocking(h1.Start)
		Eventually(h1.Role).Should(Equal(election.RolePrimary))
		s2 := startBlocking(h2.Start)
		Eventually(h2.Role).Should(Equal(election.RoleSecondary))

		roles := func() []election.Role { return []election.Role{h1.Role(), h2.Role()} }
		By("n1 resigns: n2 becomes primary, n1 secondary")
		// n2 is a secondary from its start, before its candidacy is in line: a resign before
		// that would find no one to hand over to, and n1 would lead again.
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Eventually(roles).Should(Equal([]election.Role{election.RoleSecondary, election.RolePrimary}))
		Expect(n2.e.IsLeader()).To(BeTrue())

		By("n2 loses its session: n1 is primary again")
		_, lease := keyOf(ctx, c.Client(), prefix, "n2")
		_, err := c.Client().Revoke(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Eventually(roles).WithTimeout(within).Should(Equal([]election.Role{election.RolePrimary, election.RoleSecondary}))

		By("n1's coordinator stops: it hands over to n2")
		// n2 campaigns again with a new session; n1 hands over once n2 is in line.
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		Expect(s1.stop()).To(Succeed())
		Expect(h1.Role()).To(Equal(election.RoleNone))
		Expect(p1.running.Load()).To(BeZero())
		Eventually(h2.Role).Should(Equal(election.RolePrimary))
		Expect(s2.stop()).To(Succeed())

		Expect(p1.both.Load()).To(BeZero(), "n1 ran both functions at once")
		Expect(p2.both.Load()).To(BeZero(), "n2 ran both functions at once")
		// Each starts as a secondary until it is elected.
		Expect([]int32{p1.primaries.Load(), p1.seconds.Load()}).To(Equal([]int32{2, 2}))
		Expect([]int32{p2.primaries.Load(), p2.seconds.Load()}).To(Equal([]int32{2, 2}))
	})

	It("blocks in Start until its context ends, leaves nothing running, refuses a concurrent Start and runs again at the next Start", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		p := &haProbe{}
		h := newCoordinator(n1, p)

		s := startBlocking(h.Start)
		Eventually(h.Role).Should(Equal(election.RolePrimary))
		Expect(h.Start(ctx)).To(MatchError("election: HACoordinator already running: Start was called before the previous Start returned"))
		Consistently(s.done).WithTimeout(200*time.Millisecond).ShouldNot(BeClosed(), "Start returned while its context lives")
		Expect(taskGoroutines()).NotTo(BeEmpty(), "the check for goroutines left finds those of a running Start")

		By("the context ends: Start returns, once the primary has returned and the candidate has left the election")
		Expect(s.stop()).To(Succeed())
		Expect(p.running.Load()).To(BeZero(), "a function still runs")
		Expect(h.Role()).To(Equal(election.RoleNone))
		Expect(n1.e.IsLeader()).To(BeFalse())
		Expect(candidates(ctx, c.Client(), prefix)).To(BeZero(), "the candidate's key is still in line")
		Eventually(taskGoroutines).Should(BeEmpty())

		By("a new Start (a new term): the coordinator campaigns and runs the primary again")
		s = startBlocking(h.Start)
		Eventually(h.Role).Should(Equal(election.RolePrimary))
		Eventually(p.primaries.Load).Should(BeEquivalentTo(2))
		Expect(s.stop()).To(Succeed())
		Expect(h.Role()).To(Equal(election.RoleNone))
		Expect(candidates(ctx, c.Client(), prefix)).To(BeZero())
		Eventually(taskGoroutines).Should(BeEmpty())

		By("the Election is closed while Start runs: Start returns ErrClosed, and so does the next Start")
		s = startBlocking(h.Start)
		Eventually(h.Role).Should(Equal(election.RolePrimary))
		Expect(n1.e.Close()).To(Succeed())
		Eventually(s.done).Should(BeClosed())
		Expect(s.err).To(MatchError(election.ErrClosed))
		Expect(h.Role()).To(Equal(election.RoleNone))
		Expect(h.Start(ctx)).To(MatchError(election.ErrClosed))
		Eventually(taskGoroutines).Should(BeEmpty())
		Expect(p.both.Load()).To(BeZero())
	})

	It("restarts a function that returns while its role holds", func() {
		n1 := newNode(c, prefix, "n1")
		var starts atomic.Int32
		h, err := election.NewHACoordinator(n1.e, func(context.Context) error {
			starts.Add(1)
			return nil
		}, nil, election.HAOptions{})
		Expect(err).NotTo(HaveOccurred())
		s := startBlocking(h.Start)
		Eventually(starts.Load).Should(BeNumerically(">=", 2))
		Expect(h.Role()).To(Equal(election.RolePrimary))
		Expect(s.stop()).To(Succeed())
	})
})
