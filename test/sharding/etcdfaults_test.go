//go:build unix

package sharding_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Faults of etcd itself, one after the other on one cluster, under a sharded manager of
// three members and three lock holders: a rolling restart, a kill -9 of the leading etcd
// member, and a SIGSTOP of it past an etcd election. The members keep their sessions and
// their shards through each, and the lock holders' calls all succeed. Last, a member of
// the manager is killed with etcd's leader, and its shards are owned again after etcd's
// election and the TTL.
const (
	// faultTTL is the members' LeaseTTL and the lock holders' session TTL in these specs:
	// long enough to ride through an etcd election (about 1-2 s with etcd's default
	// timing), short enough to be lost to a longer outage.
	faultTTL = 5 * time.Second
	// hang is how long the leading etcd member stays stopped: well past an election and
	// past the TTL, so that a session kept alive through the stopped member alone is lost.
	hang = 8 * time.Second
	// unansweredMsg is what internal/lease logs when a session ends because no keep-alive
	// was answered before its deadline.
	unansweredMsg = "keep-alives went unanswered"
)

// world is what the manager's sessions and shards look like in etcd at one revision.
type world struct {
	rev int64
	// regs are the keys that the members' sessions hold, by key under the root: each
	// member's record (members/<id>) and candidacy (election/<lease>), with their create
	// revision and lease.
	regs   map[string][2]int64
	owners map[int]owner
	assign map[int]assignment
}

// world reads the manager's keys with cli, in one request.
func (h *harness) world(ctx context.Context, cli *clientv3.Client) (world, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, root, clientv3.WithPrefix())
	if err != nil {
		return world{}, err
	}
	w := world{rev: resp.Header.Revision, regs: map[string][2]int64{}, owners: map[int]owner{}, assign: map[int]assignment{}}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), root)
		if s, ok := shardOfKey(rest, "owners/"); ok {
			w.owners[s] = owner{Member: string(kv.Value), Token: kv.CreateRevision, Mod: kv.ModRevision}
		}
		if s, ok := shardOfKey(rest, "assignments/"); ok {
			w.assign[s] = assignment{Member: string(kv.Value), Mod: kv.ModRevision}
		}
		if strings.HasPrefix(rest, "members/") || strings.HasPrefix(rest, "election/") {
			w.regs[rest] = [2]int64{kv.CreateRevision, kv.Lease}
		}
	}
	return w, nil
}

// worldNow waits for a reading of the manager's keys with cli.
func (h *harness) worldNow(ctx context.Context, cli *clientv3.Client) world {
	GinkgoHelper()
	var w world
	Eventually(func(g Gomega) {
		var err error
		w, err = h.world(ctx, cli)
		g.Expect(err).NotTo(HaveOccurred())
	}).Should(Succeed())
	return w
}

// registrations counts, in etcd's history, the keys created under members/ and election/
// at revisions in (from, to]: a record or candidacy made again, each after a lost session.
func (h *harness) registrations(ctx context.Context, from, to int64) (int, error) {
	evs, err := h.events(ctx, root)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ev := range evs {
		rest := strings.TrimPrefix(string(ev.Kv.Key), root)
		if rev := ev.Kv.ModRevision; rev > from && rev <= to && ev.IsCreate() &&
			(strings.HasPrefix(rest, "members/") || strings.HasPrefix(rest, "election/")) {
			n++
		}
	}
	return n, nil
}

// shardsMoved returns the shards whose owner key is no longer the one of before.
func shardsMoved(before, after world) []int {
	var moved []int
	for s := range shards {
		if before.owners[s] != after.owners[s] {
			moved = append(moved, s)
		}
	}
	return moved
}

// unanswered counts the sessions of the members that ended because no keep-alive was
// answered in time, as their logs tell.
func (h *harness) unanswered() int {
	n := 0
	for _, m := range h.members {
		n += bytes.Count(m.Err.Contents(), []byte(unansweredMsg))
	}
	return n
}

// leasesExpired reads etcd member i's count of the leases it revoked as expired.
func (h *harness) leasesExpired(i int) (int, error) {
	resp, err := h.web.Get(h.c.Endpoint(i) + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_debugging_server_lease_expired_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("member %d: no etcd_debugging_server_lease_expired_total in its metrics: %v", i, sc.Err())
}

// outcome is what a fault of etcd tells rideThrough.
type outcome struct {
	// atResume is the manager's state at the end of a pause, read from the members that
	// ran, and resumed when the paused member was resumed; nil and zero without a pause.
	atResume *world
	resumed  time.Time
	// revoked, when not nil, reads how many leases the paused member revoked as expired
	// since it was resumed.
	revoked func() int
}

var _ = Describe("a sharded manager and lock holders while etcd's members fail", Ordered, func() {
	var (
		h          *harness
		m1, m2, m3 *member
		w          *writer
		lk         *lockers
	)
	BeforeAll(func(ctx SpecContext) {
		h = newHarness()
		h.memberTTL = faultTTL
		h.putItems(ctx, 100, "v0")
		m1, m2, m3 = h.start("m1"), h.start("m2"), h.start("m3")
		Eventually(h.settled(m1, m2, m3)).Should(Succeed())
		w = h.startWriter(100, 5*time.Millisecond)
		lk = h.startLockers(ctx, 3, faultTTL)
		w.more(100)
		lk.more(20)
	})

	// rideThrough runs a fault of etcd and checks that, through it, no session of a member
	// or lock holder ended for want of keep-alive answers, no member lost a session, no
	// shard moved, no lock round failed, and the lock's history holds.
	//
	// etcd 3.7 has a flaw of its own here: an etcd leader paused past the TTLs, once
	// resumed, may revoke every lease it did not renew meanwhile, though another member
	// leads (its check of its leadership, etcd issue #15247, passes on the clock ticks that
	// resume at once). When the paused member's count of expired leases says it did, the
	// sessions on those leases end at the resume, and so do the shards and locks held on
	// them: the spec checks the pause up to the resume, and that every loss after it was a
	// revocation (no session ended for want of answers, no lock round failed but by a lost
	// lock after the resume).
	rideThrough := func(ctx context.Context, name string, fault func() outcome) {
		GinkgoHelper()
		before := h.worldNow(ctx, h.cli)
		unansweredBefore, lockUnansweredBefore := h.unanswered(), lk.unanswered.Load()
		started := time.Now()
		out := fault()
		w.more(100)
		lk.more(20)
		Eventually(h.settled(m1, m2, m3)).WithTimeout(30 * time.Second).Should(Succeed())
		AddReportEntry(name+": the fault to settled with more writes and lock rounds", time.Since(started).String())

		after := h.worldNow(ctx, h.cli)
		lost, err := h.registrations(ctx, before.rev, after.rev)
		Expect(err).NotTo(HaveOccurred())
		moved := shardsMoved(before, after)
		AddReportEntry(name+": sessions lost, shards moved", fmt.Sprintf("%d sessions, %d shards %v", lost, len(moved), moved))
		revoked := 0
		if out.revoked != nil {
			revoked = out.revoked()
			AddReportEntry(name+": leases revoked as expired by the resumed etcd member", revoked)
		}
		if out.atResume != nil {
			lostPaused, err := h.registrations(ctx, before.rev, out.atResume.rev)
			Expect(err).NotTo(HaveOccurred())
			movedPaused := shardsMoved(before, *out.atResume)
			AddReportEntry(name+": sessions lost, shards moved while paused", fmt.Sprintf("%d sessions, %d shards %v", lostPaused, len(movedPaused), movedPaused))
			Expect(out.atResume.regs).To(Equal(before.regs), "the members' records and candidacies at the end of the pause: a session lost")
			Expect(movedPaused).To(BeEmpty(), "shards moved during the pause")
			Expect(out.atResume.assign).To(Equal(before.assign), "the assignment at the end of the pause")
		}
		Expect(h.unanswered()-unansweredBefore).To(BeZero(), "members' sessions ended for want of keep-alive answers")
		Expect(lk.unanswered.Load()-lockUnansweredBefore).To(BeZero(), "lock sessions ended for want of keep-alive answers")

		if revoked > 0 {
			AddReportEntry(name+": etcd revoked leases on the resumed member (etcd #15247): losses after the resume not counted", revoked)
			lk.check(ctx, h, before.rev, func(e lockErr) bool { return e.at.After(out.resumed) && lostLock(e.err) })
			return
		}
		AddReportEntry(name+": lock increments so far", lk.check(ctx, h, before.rev, nil))
		Expect(after.regs).To(Equal(before.regs), "the members' records and candidacies: a session lost")
		Expect(moved).To(BeEmpty(), "shards moved")
		Expect(lost).To(BeZero(), "records and candidacies made again")
		Expect(after.assign).To(Equal(before.assign), "the assignment")
	}

	It("keeps every session and shard, and every lock call succeeds, through a rolling restart of etcd", func(ctx SpecContext) {
		rideThrough(ctx, "rolling restart", func() outcome {
			for i := range h.c.Members() {
				By(fmt.Sprintf("restarting etcd member %d", i))
				Expect(h.c.Restart(ctx, i)).To(Succeed())
				lk.more(5)
			}
			return outcome{}
		})
	}, SpecTimeout(2*time.Minute))

	It("keeps every session and shard, and every lock call succeeds, through a kill -9 of etcd's leader", func(ctx SpecContext) {
		rideThrough(ctx, "kill -9 of etcd's leader", func() outcome {
			leader, err := h.c.Leader(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(h.c.Kill(leader)).To(Succeed())
			h.newEtcdLeader(ctx, leader, time.Now())
			lk.more(5)
			Expect(h.c.Restart(ctx, leader)).To(Succeed())
			return outcome{}
		})
	}, SpecTimeout(2*time.Minute))

	It("keeps every session and shard, and every lock call succeeds, through a SIGSTOP of etcd's leader past an election", func(ctx SpecContext) {
		var during int64
		rideThrough(ctx, "SIGSTOP of etcd's leader", func() outcome {
			leader, err := h.c.Leader(ctx)
			Expect(err).NotTo(HaveOccurred())
			expired, err := h.leasesExpired(leader)
			Expect(err).NotTo(HaveOccurred())
			cfg := h.c.ClientConfig()
			cfg.Endpoints = slices.Delete(slices.Clone(h.c.Endpoints()), leader, leader+1)
			others, err := clientv3.New(cfg)
			Expect(err).NotTo(HaveOccurred())
			defer others.Close()

			from := lk.rounds.Load()
			Expect(h.c.Pause(leader)).To(Succeed())
			paused := time.Now()
			DeferCleanup(func() { _ = h.c.Resume(leader) })
			h.newEtcdLeader(ctx, leader, paused)
			// The fault's length, not a condition: the stopped member comes back after hang.
			t := time.NewTimer(time.Until(paused.Add(hang)))
			defer t.Stop()
			select {
			case <-ctx.Done():
				Fail("the spec ended while etcd's leader was stopped")
			case <-t.C:
			}
			atResume := h.worldNow(ctx, others)
			during = lk.rounds.Load() - from
			Expect(h.c.Resume(leader)).To(Succeed())
			AddReportEntry("lock rounds while etcd's leader was stopped", during)
			return outcome{atResume: &atResume, resumed: time.Now(), revoked: func() int {
				n, err := h.leasesExpired(leader)
				Expect(err).NotTo(HaveOccurred())
				return n - expired
			}}
		})
		Expect(during).To(BeNumerically(">", 0), "lock rounds while etcd's leader was stopped: the holders went on with the other members")
	}, SpecTimeout(2*time.Minute))

	It("has the shards of a member killed with etcd's leader owned again after etcd's election and the TTL", func(ctx SpecContext) {
		lead := h.leader(m1, m2, m3)
		victim := slices.DeleteFunc([]*member{m1, m2, m3}, func(m *member) bool { return m == lead })[0]
		before := h.worldNow(ctx, h.cli)
		had := shardsOf(before.owners, victim.id)
		Expect(had).NotTo(BeEmpty())
		leader, err := h.c.Leader(ctx)
		Expect(err).NotTo(HaveOccurred())

		Expect(h.c.Kill(leader)).To(Succeed())
		victim.kill()
		h.newEtcdLeader(ctx, leader, victim.killed)
		var at time.Time
		Eventually(func(g Gomega) {
			now, err := h.world(ctx, h.cli)
			g.Expect(err).NotTo(HaveOccurred())
			for _, s := range had {
				g.Expect(now.owners).To(HaveKey(s), "shard %d unowned", s)
				g.Expect(now.owners[s].Member).NotTo(Equal(victim.id), "shard %d", s)
			}
			at = time.Now()
		}).WithTimeout(30 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
		took := at.Sub(victim.killed)
		AddReportEntry("kill -9 of a member with etcd's leader to its shards owned again", took.String())
		Expect(took).To(BeNumerically("<", faultTTL+5*time.Second), "etcd's election, the TTL, etcd's expiry scan and the claims")

		Expect(h.c.Restart(ctx, leader)).To(Succeed())
		rest := slices.DeleteFunc([]*member{m1, m2, m3}, func(m *member) bool { return m == victim })
		Eventually(h.settled(rest...)).Should(Succeed())
		w.more(100)
		lk.more(20)
		w.stop()
		lk.stop()
		Eventually(h.converged).Should(Succeed())
		_, _, t := h.check(ctx, overlapRules{untilCancelled: true})
		AddReportEntry("histories", t.String())
		AddReportEntry("lock increments", lk.check(ctx, h, before.rev, nil))
	}, SpecTimeout(2*time.Minute))
})

// newEtcdLeader waits until one of the etcd members other than old says it leads, and
// reports how long after since that took. Only those members are asked: a stopped one
// would keep a request until it resumes.
func (h *harness) newEtcdLeader(ctx context.Context, old int, since time.Time) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		for i := range h.c.Members() {
			if i == old {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			st, err := h.cli.Status(sctx, h.c.Endpoint(i))
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return
			}
		}
		g.Expect("").To(Equal("a leader"), "no member but %d leads", old)
	}).WithPolling(20 * time.Millisecond).Should(Succeed())
	AddReportEntry("etcd's new leader elected after", time.Since(since).String())
}

// more waits for n more writes of the writer to be accepted.
func (w *writer) more(n int64) {
	GinkgoHelper()
	from := w.writes.Load()
	Eventually(w.writes.Load).WithTimeout(30*time.Second).Should(BeNumerically(">=", from+n), "writes")
}
