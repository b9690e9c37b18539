package election_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// probeTask is a leader task function that counts its runs and checks, at every start,
// that no other run is in progress and that its node leads.
type probeTask struct {
	n        *node
	hold     time.Duration // how long a run lasts, ignoring its context
	runs     atomic.Int32
	inFlight atomic.Int32
	overlaps atomic.Int32
	unled    atomic.Int32 // runs started while the node did not lead
	mu       sync.Mutex
	causes   []error // why the contexts of the runs ended, for runs that saw it end
}

func (p *probeTask) fn(ctx context.Context) error {
	if p.inFlight.Add(1) > 1 {
		p.overlaps.Add(1)
	}
	defer p.inFlight.Add(-1)
	p.runs.Add(1)
	if !p.n.e.IsLeader() {
		p.unled.Add(1)
	}
	time.Sleep(p.hold)
	if ctx.Err() != nil {
		p.mu.Lock()
		p.causes = append(p.causes, context.Cause(ctx))
		p.mu.Unlock()
	}
	return nil
}

func (p *probeTask) lastCause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.causes) == 0 {
		return nil
	}
	return p.causes[len(p.causes)-1]
}

var _ = Describe("a leader task", func() {
	const prefix = "/test/task/"
	var c *etcdtest.Cluster

	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	It("rejects bad input", func() {
		n := newNode(c, prefix, "n1")
		_, err := election.NewLeaderTask(nil, func(context.Context) error { return nil }, election.TaskOptions{})
		Expect(err).To(MatchError("election: LeaderTask needs an Election, got nil"))
		_, err = election.NewLeaderTask(n.e, nil, election.TaskOptions{})
		Expect(err).To(MatchError("election: LeaderTask needs a function, got nil"))
		_, err = election.NewLeaderTask(n.e, func(context.Context) error { return nil }, election.TaskOptions{Interval: -time.Second})
		Expect(err).To(MatchError("election: LeaderTask Interval must not be negative, got -1s"))
	})

	It("runs only on the leader, never overlapping itself, and its context ends with the leadership", func(ctx SpecContext) {
		n1, n2 := newNode(c, prefix, "n1"), newNode(c, prefix, "n2")
		p1 := &probeTask{n: n1, hold: 30 * time.Millisecond}
		p2 := &probeTask{n: n2, hold: 30 * time.Millisecond}
		t1, err := election.NewLeaderTask(n1.e, p1.fn, election.TaskOptions{Interval: 10 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		t2, err := election.NewLeaderTask(n2.e, p2.fn, election.TaskOptions{Interval: 10 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		s1 := startBlocking(t1.Start)
		Eventually(n1.e.IsLeader).Should(BeTrue())
		s2 := startBlocking(t2.Start)

		Eventually(p1.runs.Load).Should(BeNumerically(">=", 5))
		Consistently(p2.runs.Load).WithTimeout(300 * time.Millisecond).Should(BeZero())

		By("the leader's lease is revoked: n1's run sees its context end, n2 takes over")
		_, lease := keyOf(ctx, c.Client(), prefix, "n1")
		_, err = c.Client().Revoke(ctx, lease)
		Expect(err).NotTo(HaveOccurred())
		Eventually(p2.runs.Load).Should(BeNumerically(">=", 5))
		Eventually(p1.lastCause).Should(MatchError(election.ErrSessionLost))
		n1Runs := p1.runs.Load()
		Consistently(p1.runs.Load).WithTimeout(300 * time.Millisecond).Should(Equal(n1Runs))

		By("n2 resigns: back to n1")
		// n1 campaigns again with a new session; n2 hands over once n1 is in line.
		Eventually(func() int64 { return candidates(ctx, c.Client(), prefix) }).Should(BeEquivalentTo(2))
		Expect(n2.e.Resign(ctx)).To(Succeed())
		Eventually(p1.runs.Load).Should(BeNumerically(">", n1Runs))
		Eventually(p2.lastCause).Should(MatchError(election.ErrResigned))

		Expect(s1.stop()).To(Succeed())
		Expect(s2.stop()).To(Succeed())
		for _, p := range []*probeTask{p1, p2} {
			Expect(p.overlaps.Load()).To(BeZero(), "overlapping runs of %s", p.n.id)
			Expect(p.unled.Load()).To(BeZero(), "runs of %s that started while it did not lead", p.n.id)
		}
	})

	It("blocks in Start until its context ends, leaves nothing running, refuses a concurrent Start and runs again at the next Start", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		p := &probeTask{n: n1}
		t, err := election.NewLeaderTask(n1.e, p.fn, election.TaskOptions{Interval: 10 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())

		s := startBlocking(t.Start)
		Eventually(p.runs.Load).Should(BeNumerically(">=", 3))
		Expect(t.Start(ctx)).To(MatchError("election: LeaderTask already running: Start was called before the previous Start returned"))
		Consistently(s.done).WithTimeout(200*time.Millisecond).ShouldNot(BeClosed(), "Start returned while its context lives")
		Expect(taskGoroutines()).NotTo(BeEmpty(), "the check for goroutines left finds those of a running Start")

		By("the context ends: Start returns, once the task has stopped and the candidate has left the election")
		Expect(s.stop()).To(Succeed())
		Expect(p.inFlight.Load()).To(BeZero(), "a run still in progress")
		Expect(n1.e.IsLeader()).To(BeFalse())
		Expect(candidates(ctx, c.Client(), prefix)).To(BeZero(), "the candidate's key is still in line")
		Eventually(taskGoroutines).Should(BeEmpty())
		runs := p.runs.Load()
		Consistently(p.runs.Load).WithTimeout(100 * time.Millisecond).Should(Equal(runs))

		By("a new Start (a new term): the task campaigns and runs again")
		s = startBlocking(t.Start)
		Eventually(p.runs.Load).Should(BeNumerically(">=", runs+3))
		Expect(n1.e.IsLeader()).To(BeTrue())
		Expect(s.stop()).To(Succeed())
		Expect(candidates(ctx, c.Client(), prefix)).To(BeZero())
		Eventually(taskGoroutines).Should(BeEmpty())

		By("the Election is closed while Start runs: Start returns ErrClosed, and so does the next Start")
		s = startBlocking(t.Start)
		Eventually(n1.e.IsLeader).Should(BeTrue())
		Expect(n1.e.Close()).To(Succeed())
		Eventually(s.done).Should(BeClosed())
		Expect(s.err).To(MatchError(election.ErrClosed))
		Expect(t.Start(ctx)).To(MatchError(election.ErrClosed))
		Eventually(taskGoroutines).Should(BeEmpty())
		Expect(p.overlaps.Load()).To(BeZero())
		Expect(p.unled.Load()).To(BeZero())
	})

	It("without an interval, runs once per leadership", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		p := &probeTask{n: n1}
		t, err := election.NewLeaderTask(n1.e, p.fn, election.TaskOptions{})
		Expect(err).NotTo(HaveOccurred())
		s := startBlocking(t.Start)
		Eventually(p.runs.Load).Should(BeEquivalentTo(1))
		Consistently(p.runs.Load).WithTimeout(200 * time.Millisecond).Should(BeEquivalentTo(1))

		By("a new leadership: one more run")
		token := n1.e.Token()
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Eventually(n1.e.Token).Should(BeNumerically(">", token))
		Eventually(p.runs.Load).Should(BeEquivalentTo(2))
		Consistently(p.runs.Load).WithTimeout(200 * time.Millisecond).Should(BeEquivalentTo(2))
		Expect(s.stop()).To(Succeed())
	})

	It("never overlaps a run that ignores its context with the next leadership's first run", func(ctx SpecContext) {
		n1 := newNode(c, prefix, "n1")
		p := &probeTask{n: n1, hold: 200 * time.Millisecond}
		t, err := election.NewLeaderTask(n1.e, p.fn, election.TaskOptions{Interval: time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		s := startBlocking(t.Start)
		Eventually(p.inFlight.Load).Should(BeEquivalentTo(1))

		By("resigning in the middle of a run: Run campaigns again and wins at once, alone")
		token := n1.e.Token()
		Expect(n1.e.Resign(ctx)).To(Succeed())
		Eventually(n1.e.Token).Should(BeNumerically(">", token))
		Eventually(p.runs.Load).Should(BeNumerically(">=", 3))
		Expect(s.stop()).To(Succeed())
		Expect(p.overlaps.Load()).To(BeZero())
		Expect(p.inFlight.Load()).To(BeZero(), "Start returns after the run in progress")
	})

	It("keeps going after a failing or panicking run", func() {
		n1 := newNode(c, prefix, "n1")
		var runs atomic.Int32
		t, err := election.NewLeaderTask(n1.e, func(context.Context) error {
			if runs.Add(1)%2 == 0 {
				panic("boom")
			}
			return errors.New("failed")
		}, election.TaskOptions{Interval: 5 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		s := startBlocking(t.Start)
		Eventually(runs.Load).Should(BeNumerically(">=", 4))
		Expect(s.stop()).To(Succeed())
	})
})
