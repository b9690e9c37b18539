package lock_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// throughProxies returns a client of the suite's etcd through n silent proxies, all
// forwarding, once the client has had answers through each (so that its connections are
// ready and take requests in turn); both are closed after the spec.
func throughProxies(ctx context.Context, n int) (*clientv3.Client, []*etcdtest.SilentProxy) {
	GinkgoHelper()
	var ps []*etcdtest.SilentProxy
	var eps []string
	for range n {
		p, err := etcdtest.NewSilentProxy(cluster.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(p.Close)
		ps = append(ps, p)
		eps = append(eps, p.Endpoint())
	}
	cfg := cluster.ClientConfig()
	cfg.Endpoints = eps
	cli, err := clientv3.New(cfg)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	Eventually(func(g Gomega) {
		_, err := cli.Get(ctx, "warm-up")
		g.Expect(err).NotTo(HaveOccurred())
		for _, p := range ps {
			answers, _ := p.Counts()
			g.Expect(answers).To(BeNumerically(">=", 3), "answers through %s", p.Endpoint())
		}
	}).WithContext(ctx).WithPolling(time.Millisecond).Should(Succeed())
	return cli, ps
}

// historyOf returns every event under key/ from revision 1.
func historyOf(ctx context.Context, key string) []*clientv3.Event {
	GinkgoHelper()
	resp, err := cluster.Client().Get(ctx, "history-probe", clientv3.WithCountOnly())
	Expect(err).NotTo(HaveOccurred())
	var evs []*clientv3.Event
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cluster.Client().Watch(wctx, key+"/", clientv3.WithPrefix(), clientv3.WithRev(1)) {
		Expect(wr.Err()).NotTo(HaveOccurred())
		evs = append(evs, wr.Events...)
		if len(wr.Events) > 0 && wr.Events[len(wr.Events)-1].Kv.ModRevision >= resp.Header.Revision {
			break
		}
		if wr.IsProgressNotify() && wr.Header.Revision >= resp.Header.Revision {
			break
		}
	}
	return evs
}

var _ = Describe("a lock whose etcd member keeps requests without answering", func() {
	It("locks, try-locks, read-locks and unlocks through the other members", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		ps[0].Forward(false, false)
		key := uniqueKey("silent-member")
		l := newLock(cli, key, 2*time.Second)
		rw, err := lock.NewRW(cli, key, lock.Options{TTL: 2 * time.Second, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(rw.Close)
		for range 3 {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			Expect(l.Lock(cctx)).To(Succeed())
			Expect(l.Unlock(cctx)).To(Succeed())
			Expect(l.TryLock(cctx)).To(BeTrue())
			Expect(rw.TryRLock(cctx)).To(BeFalse())
			Expect(l.Unlock(cctx)).To(Succeed())
			Expect(rw.RLock(cctx)).To(Succeed())
			Expect(rw.RUnlock(cctx)).To(Succeed())
			cancel()
		}
		Eventually(queueLen(key)).WithContext(ctx).Should(BeZero())
		_, held := ps[0].Counts()
		Expect(held).To(BeNumerically(">", 0), "requests the silent member kept")
		ps[0].Forward(true, true)
	})

	It("recognises its own queue entry when etcd applied a request whose answer was lost", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		ps[0].Forward(true, false) // requests go through, answers do not
		key := uniqueKey("lost-answers")
		l := newLock(cli, key, 2*time.Second)
		var tokens []int64
		for range 10 {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			Expect(l.Lock(cctx)).To(Succeed())
			tokens = append(tokens, l.Token())
			Expect(l.Unlock(cctx)).To(Succeed())
			cancel()
		}
		_, held := ps[0].Counts()
		Expect(held).To(BeNumerically(">", 0), "answers lost")
		ps[0].Forward(true, true)

		By("each Lock held an entry created once, under its create revision")
		var created []int64
		for _, ev := range historyOf(ctx, key) {
			if ev.Type == clientv3.EventTypePut {
				Expect(ev.Kv.Version).To(BeEquivalentTo(1), "%s written again", ev.Kv.Key)
				created = append(created, ev.Kv.CreateRevision)
			}
		}
		Expect(created).To(ContainElements(tokens))
		By("an entry that a late attempt created after its Unlock goes with its session, while the lock lives on")
		Eventually(queueLen(key)).WithContext(ctx).Should(BeZero())
	})

	It("reports a release that etcd does not answer as of unknown outcome, and etcd frees the lock anyway", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		key := uniqueKey("unanswered-release")
		l := newLock(cli, key, 10*time.Second)
		Expect(l.Lock(ctx)).To(Succeed())
		for _, p := range ps {
			p.Forward(false, false)
		}
		uctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		Expect(l.Unlock(uctx)).To(MatchError(lock.ErrOutcomeUnknown))

		By("the session is abandoned: its lease is revoked once etcd answers, long before the TTL")
		for _, p := range ps {
			p.Forward(true, true)
		}
		Eventually(queueLen(key)).WithContext(ctx).WithTimeout(5 * time.Second).Should(BeZero())
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(l.Unlock(ctx)).To(Succeed())
	})
})
