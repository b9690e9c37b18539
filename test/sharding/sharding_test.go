//go:build unix

package sharding_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/shard"
)

var _ = Describe("a sharded manager, one process per member", func() {
	var h *harness
	BeforeEach(func() { h = newHarness() })

	// startThree starts members m1, m2 and m3 over n items and waits for the assignment to
	// settle.
	startThree := func(ctx context.Context, n int) (*member, *member, *member) {
		GinkgoHelper()
		h.putItems(ctx, n, "v0")
		m1, m2, m3 := h.start("m1"), h.start("m2"), h.start("m3")
		Eventually(h.settled(m1, m2, m3)).Should(Succeed())
		return m1, m2, m3
	}
	// others returns the members of ms other than m.
	others := func(m *member, ms ...*member) []*member {
		return slices.DeleteFunc(slices.Clone(ms), func(o *member) bool { return o == m })
	}
	// reowned holds once every shard of had is owned by a member other than gone. It
	// stores when it first held in *at.
	reowned := func(ctx context.Context, gone string, had []int, at *time.Time) func(g Gomega) {
		return func(g Gomega) {
			now, err := h.owners(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			for _, s := range had {
				g.Expect(now).To(HaveKey(s), "shard %d unowned", s)
				g.Expect(now[s].Member).NotTo(Equal(gone), "shard %d", s)
			}
			*at = time.Now()
		}
	}
	// kept checks that the shards not in moved kept their owner key (same token, never
	// rewritten) and their assignment (never rewritten) from before to now.
	kept := func(ctx context.Context, beforeOwners map[int]owner, beforeAssign assignments, moved []int) {
		GinkgoHelper()
		nowOwners, err := h.owners(ctx)
		Expect(err).NotTo(HaveOccurred())
		nowAssign, err := h.assignments(ctx)
		Expect(err).NotTo(HaveOccurred())
		for s := 0; s < shards; s++ {
			if slices.Contains(moved, s) {
				continue
			}
			Expect(nowOwners[s]).To(Equal(beforeOwners[s]), "owner of shard %d, which the failed member did not hold", s)
			Expect(nowAssign.shards[s]).To(Equal(beforeAssign.shards[s]), "assignment of shard %d, which the failed member did not hold", s)
		}
	}
	// moreWrites waits for the writer to have n more writes accepted.
	moreWrites := func(w *writer, n int64) {
		GinkgoHelper()
		from := w.writes.Load()
		Eventually(w.writes.Load).Should(BeNumerically(">=", from+n))
	}

	It("reconciles every key on the owner of its shard", func(ctx SpecContext) {
		startThree(ctx, 300)
		Eventually(h.converged).Should(Succeed())

		By("new values are reconciled by the same owners")
		h.putItems(ctx, 300, "v1")
		Eventually(h.converged).Should(Succeed())

		_, _, t := h.check(ctx, overlapRules{})
		AddReportEntry("histories", t.String())
	}, SpecTimeout(2*time.Minute))

	It("rebalances on a join and a graceful leave under traffic, never reconciling a key on two members at once", func(ctx SpecContext) {
		m1, m2, m3 := startThree(ctx, 100)
		w := h.startWriter(100, 5*time.Millisecond)
		moreWrites(w, 100)

		By("a fourth member joins")
		m4 := h.start("m4")
		Eventually(h.settled(m1, m2, m3, m4)).Should(Succeed())
		moreWrites(w, 100)

		By("the leading member leaves with SIGTERM")
		lead := h.leader(m1, m2, m3, m4)
		lead.Terminate()
		Eventually(lead.Session).WithTimeout(20 * time.Second).Should(gexec.Exit(0))
		Expect(lead.Out).To(gbytes.Say(`stopped err=<nil>`))
		rest := others(lead, m1, m2, m3, m4)
		Eventually(h.settled(rest...)).Should(Succeed())
		moreWrites(w, 100)

		By("one more leaves while a fifth joins: shards move while others are still draining")
		leaver := rest[0]
		leaver.Terminate()
		m5 := h.start("m5")
		Eventually(leaver.Session).WithTimeout(20 * time.Second).Should(gexec.Exit(0))
		Eventually(h.settled(append(others(leaver, rest...), m5)...)).Should(Succeed())
		moreWrites(w, 100)

		w.stop()
		Eventually(h.converged).Should(Succeed())
		spans, _, t := h.check(ctx, overlapRules{})
		AddReportEntry("histories", t.String())

		By("the handoffs happened under traffic: keys moved to the newcomer and away from the leaver")
		var toNew, fromLeaver bool
		for _, s := range spans {
			toNew = toNew || (s.member == m4.id && s.result == "written")
		}
		slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
		last := map[string]string{}
		for _, s := range spans {
			if last[s.key] == lead.id && s.member != lead.id {
				fromLeaver = true
			}
			last[s.key] = s.member
		}
		Expect(toNew).To(BeTrue(), "the newcomer wrote nothing")
		Expect(fromLeaver).To(BeTrue(), "no key of the leaver was reconciled elsewhere")
	}, SpecTimeout(2*time.Minute))

	It("has the shards of a member killed with -9 owned again within the TTL and a second", func(ctx SpecContext) {
		m1, m2, m3 := startThree(ctx, 100)
		w := h.startWriter(100, 5*time.Millisecond)
		moreWrites(w, 100)

		lead := h.leader(m1, m2, m3)
		victim := others(lead, m1, m2, m3)[0]
		beforeOwners, err := h.owners(ctx)
		Expect(err).NotTo(HaveOccurred())
		beforeAssign, err := h.assignments(ctx)
		Expect(err).NotTo(HaveOccurred())
		had := shardsOf(beforeOwners, victim.id)
		Expect(had).NotTo(BeEmpty())

		victim.kill()
		var at time.Time
		Eventually(reowned(ctx, victim.id, had, &at)).
			WithTimeout(failover-time.Since(victim.killed)).WithPolling(20*time.Millisecond).
			Should(Succeed(), "the shards of %s owned by others within %s of its kill", victim.id, failover)
		AddReportEntry("kill -9 of a member to its shards owned again", at.Sub(victim.killed).String())

		rest := others(victim, m1, m2, m3)
		Eventually(h.settled(rest...)).Should(Succeed())
		kept(ctx, beforeOwners, beforeAssign, had)
		moreWrites(w, 100)
		w.stop()
		Eventually(h.converged).Should(Succeed())
		_, _, t := h.check(ctx, overlapRules{untilCancelled: true})
		AddReportEntry("histories", t.String())
	}, SpecTimeout(2*time.Minute))

	It("refuses every write of a member paused past its TTL, and gives it shards again once it resumes", func(ctx SpecContext) {
		m1, m2, m3 := startThree(ctx, 100)
		w := h.startWriter(100, 5*time.Millisecond)
		moreWrites(w, 100)

		lead := h.leader(m1, m2, m3)
		victim := others(lead, m1, m2, m3)[0]
		owners, err := h.owners(ctx)
		Expect(err).NotTo(HaveOccurred())
		had := shardsOf(owners, victim.id)
		Expect(had).NotTo(BeEmpty())
		tokens := map[int]int64{}
		for _, s := range had {
			tokens[s] = owners[s].Token
		}

		By("pausing it in the middle of a slow reconcile, which will write once it resumes")
		slow := ""
		for i := 1000; slow == ""; i++ {
			if slices.Contains(had, shard.Of(itemKey(i), shards)) {
				slow = itemKey(i)
			}
		}
		_, err = h.cli.Put(ctx, slow, slowPrefix+"1")
		Expect(err).NotTo(HaveOccurred())
		var paused span
		Eventually(func(g Gomega) {
			spans, err := readSpans([]*member{victim})
			g.Expect(err).NotTo(HaveOccurred())
			i := slices.IndexFunc(spans, func(s span) bool { return s.key == slow && s.end == 0 })
			g.Expect(i).To(BeNumerically(">=", 0), "no reconcile of %s in flight on %s", slow, victim.id)
			paused = spans[i]
		}).WithPolling(10 * time.Millisecond).Should(Succeed())
		victim.Signal(syscall.SIGSTOP)
		victim.paused = time.Now()

		var at time.Time
		Eventually(reowned(ctx, victim.id, had, &at)).WithPolling(20*time.Millisecond).
			Should(Succeed(), "the shards of the paused %s owned by others", victim.id)
		AddReportEntry("SIGSTOP of a member to its shards owned again", at.Sub(victim.paused).String())
		Eventually(func(g Gomega) {
			resp, err := h.cli.Get(ctx, outKey(slow))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.Kvs).To(HaveLen(1))
			var o output
			g.Expect(json.Unmarshal(resp.Kvs[0].Value, &o)).To(Succeed())
			g.Expect(o.Member).NotTo(Equal(victim.id))
			g.Expect(o.Item).To(Equal(slowPrefix + "1"))
		}).Should(Succeed(), "the new owner of %s reconciled it", slow)
		Expect(time.Since(victim.paused)).To(BeNumerically(">", ttl), "paused past its TTL")
		victim.Signal(syscall.SIGCONT)
		victim.resumed = time.Now()
		AddReportEntry("pause", victim.resumed.Sub(victim.paused).String())

		By("its write, made after the loss, is refused by the fence")
		Eventually(func(g Gomega) {
			spans, err := readSpans([]*member{victim})
			g.Expect(err).NotTo(HaveOccurred())
			i := slices.IndexFunc(spans, func(s span) bool { return s.seq == paused.seq })
			g.Expect(i).To(BeNumerically(">=", 0))
			g.Expect(spans[i].end).NotTo(BeZero(), "the paused reconcile of %s has not ended", slow)
			g.Expect(spans[i].result).To(Equal("fenced"), "the paused reconcile's write: %s", spans[i])
		}).Should(Succeed())

		By("it registers again and gets shards again")
		Eventually(func(g Gomega) {
			reg, err := h.registered(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(reg).To(HaveKey(victim.id))
		}).Should(Succeed())
		Eventually(h.settled(m1, m2, m3)).WithTimeout(30 * time.Second).Should(Succeed())
		AddReportEntry("SIGCONT to settled with the member again", time.Since(victim.resumed).String())
		moreWrites(w, 100)
		w.stop()
		Eventually(h.converged).Should(Succeed())
		_, ws, t := h.check(ctx, overlapRules{untilCancelled: true})
		AddReportEntry("histories", t.String())

		By("none of its writes under the tokens it lost was accepted after it lost them")
		evs, err := h.events(ctx, root+"owners/")
		Expect(err).NotTo(HaveOccurred())
		lost := map[int]int64{} // shard -> revision that deleted the victim's owner key
		for _, ev := range evs {
			s, ok := shardOfKey(string(ev.Kv.Key), root+"owners/")
			if ok && ev.Type == clientv3.EventTypeDelete && tokens[s] > 0 && ev.Kv.ModRevision > tokens[s] && lost[s] == 0 {
				lost[s] = ev.Kv.ModRevision
			}
		}
		for _, s := range had {
			Expect(lost[s]).NotTo(BeZero(), "owners/%d (token %d) was never deleted", s, tokens[s])
		}
		for _, wr := range ws {
			if wr.out.Member == victim.id && wr.out.Token == tokens[wr.out.Shard] {
				Expect(wr.rev).To(BeNumerically("<", lost[wr.out.Shard]),
					"%s written by the paused %s with token %d at revision %d, after owners/%d went at %d",
					wr.key, victim.id, wr.out.Token, wr.rev, wr.out.Shard, lost[wr.out.Shard])
			}
		}
	}, SpecTimeout(2*time.Minute))

	It("carries on when the leading member is killed: the others keep their shards and a new leader assigns the dead one's", func(ctx SpecContext) {
		m1, m2, m3 := startThree(ctx, 100)
		w := h.startWriter(100, 5*time.Millisecond)
		moreWrites(w, 100)

		lead := h.leader(m1, m2, m3)
		beforeOwners, err := h.owners(ctx)
		Expect(err).NotTo(HaveOccurred())
		beforeAssign, err := h.assignments(ctx)
		Expect(err).NotTo(HaveOccurred())
		had := shardsOf(beforeOwners, lead.id)
		Expect(had).NotTo(BeEmpty())

		lead.kill()
		var at time.Time
		Eventually(reowned(ctx, lead.id, had, &at)).WithPolling(20*time.Millisecond).
			Should(Succeed(), "the shards of the killed leader %s owned by others", lead.id)
		AddReportEntry("kill -9 of the leading member to its shards owned again", at.Sub(lead.killed).String())
		rest := others(lead, m1, m2, m3)
		GinkgoWriter.Println("new leader:", h.leader(rest...).id)
		Eventually(h.settled(rest...)).Should(Succeed())
		kept(ctx, beforeOwners, beforeAssign, had)

		moreWrites(w, 100)
		w.stop()
		Eventually(h.converged).Should(Succeed())
		_, _, t := h.check(ctx, overlapRules{untilCancelled: true})
		AddReportEntry("histories", t.String())
	}, SpecTimeout(2*time.Minute))

	It("breaks no invariant when etcd's leader is killed while items are written and a member joins", func(ctx SpecContext) {
		m1, m2, m3 := startThree(ctx, 100)
		w := h.startWriter(100, 5*time.Millisecond)
		moreWrites(w, 100)

		leader, err := h.c.Leader(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(h.c.Kill(leader)).To(Succeed())
		killed := time.Now()
		By("a fourth member joins while etcd elects a new leader: shards move during the failover")
		m4 := h.start("m4")
		moreWrites(w, 200)
		AddReportEntry("etcd leader killed to 200 more items written", time.Since(killed).String())
		Eventually(h.settled(m1, m2, m3, m4)).Should(Succeed())
		moreWrites(w, 100)

		w.stop()
		Eventually(h.converged).Should(Succeed())
		_, _, t := h.check(ctx, overlapRules{untilCancelled: true})
		AddReportEntry("histories", t.String())
		lost := 0
		for _, m := range h.members {
			lost += bytes.Count(m.Err.Contents(), []byte(`"msg"="session lost; every shard dropped`))
		}
		AddReportEntry("member sessions lost while etcd elected a new leader", lost)
	}, SpecTimeout(2*time.Minute))
})
