package election_test

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("Observe", func() {
	const prefix = "/test/observe/"
	var c *etcdtest.Cluster
	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	// put writes a candidate's key straight to etcd, each in its own revision: the keys put
	// first are the oldest.
	put := func(ctx context.Context, name, id string) {
		GinkgoHelper()
		_, err := c.Client().Put(ctx, prefix+name, id)
		Expect(err).NotTo(HaveOccurred())
	}
	del := func(ctx context.Context, name string) {
		GinkgoHelper()
		_, err := c.Client().Delete(ctx, prefix+name)
		Expect(err).NotTo(HaveOccurred())
	}
	// line puts the candidates ids, in this order, each in its own revision, under keys
	// named after them in lower case: the first leads.
	line := func(ctx context.Context, ids ...string) {
		GinkgoHelper()
		for _, id := range ids {
			put(ctx, strings.ToLower(id), id)
		}
	}
	// proxiedObserver starts an observer on a client that reaches etcd through a proxy the
	// spec can cut, and waits for its first value.
	proxiedObserver := func(ctx context.Context, first string) (*etcdtest.Proxy, *recorder) {
		GinkgoHelper()
		px, err := etcdtest.NewProxy(c.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(px.Close)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{px.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		e, err := election.New(cli, prefix, election.Options{ID: "watcher", TTL: ttl})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(e.Close)
		rec := record(e.Observe(ctx))
		Eventually(rec.seen).Should(Equal([]string{first}))
		return px, rec
	}

	It("reports the leader as its first value when there is one, with nothing before it", func(ctx SpecContext) {
		n1, watcher := newNode(c, prefix, "n1"), newNode(c, prefix, "watcher")
		Expect(n1.e.Campaign(ctx)).To(Succeed())
		rec := record(watcher.e.Observe(ctx))
		Eventually(rec.seen).Should(Equal([]string{"n1"}))
		Consistently(rec.seen).WithTimeout(300 * time.Millisecond).Should(Equal([]string{"n1"}))
	})

	It("reports a transaction that changes several candidates as one change, and names the leader GetLeader names", func(ctx SpecContext) {
		line(ctx, "A", "B", "C")
		watcher := newNode(c, prefix, "watcher")
		rec := record(watcher.e.Observe(ctx))
		Eventually(rec.seen).Should(Equal([]string{"A"}))

		_, err := c.Client().Txn(ctx).Then(clientv3.OpDelete(prefix+"a"), clientv3.OpDelete(prefix+"b")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Eventually(rec.seen).Should(Equal([]string{"A", "C"}))

		By("keys one transaction created are as old as each other: the first by key leads")
		_, err = c.Client().Txn(ctx).Then(clientv3.OpPut(prefix+"e", "E"), clientv3.OpPut(prefix+"d", "D"), clientv3.OpDelete(prefix+"c")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Eventually(rec.seen).Should(Equal([]string{"A", "C", "D"}))
		Expect(watcher.e.GetLeader(ctx)).To(Equal("D"))
		Consistently(rec.seen).WithTimeout(300 * time.Millisecond).Should(Equal([]string{"A", "C", "D"}))
	})

	It("waits for a reader that does not read, and misses none of the changes meanwhile", func(ctx SpecContext) {
		line(ctx, "A", "B", "C")
		watcher := newNode(c, prefix, "watcher")
		ch := watcher.e.Observe(ctx)
		Eventually(ch).Should(Receive(Equal("A")))
		del(ctx, "a")
		del(ctx, "b")
		put(ctx, "b", "B2")
		del(ctx, "c")
		del(ctx, "b")
		rec := record(ch)
		Eventually(rec.seen).Should(Equal([]string{"B", "C", "B2", ""}))
	})

	It("reports the leader of every revision it missed while cut off from etcd, in order", func(ctx SpecContext) {
		line(ctx, "A", "B", "C", "D")
		px, rec := proxiedObserver(ctx, "A")

		// The watch resumed after the cut catches up in one response that spans the revisions.
		px.Block()
		del(ctx, "a")
		del(ctx, "b")
		del(ctx, "c")
		px.Unblock()
		Eventually(rec.seen).WithTimeout(15 * time.Second).Should(Equal([]string{"A", "B", "C", "D"}))
		del(ctx, "d")
		Eventually(rec.seen).Should(Equal([]string{"A", "B", "C", "D", ""}))
	})

	It("after a compaction took what it missed, reports the leader of the moment it lists again, and goes on", func(ctx SpecContext) {
		line(ctx, "A", "B", "C")
		px, rec := proxiedObserver(ctx, "A")

		px.Block()
		del(ctx, "a")
		del(ctx, "b")
		put(ctx, "e", "E")
		_, err := c.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		px.Unblock()
		// B led for a while, but the list after the compaction never saw it: neither it, nor a
		// state halfway through applying the list's differences, is reported.
		Eventually(rec.seen).WithTimeout(15 * time.Second).Should(Equal([]string{"A", "C"}))
		Consistently(rec.seen).WithTimeout(300 * time.Millisecond).Should(Equal([]string{"A", "C"}))

		del(ctx, "c")
		Eventually(rec.seen).Should(Equal([]string{"A", "C", "E"}))
		del(ctx, "e")
		Eventually(rec.seen).Should(Equal([]string{"A", "C", "E", ""}))
	})

	It("reports the leader of its first list, then a change that follows at once", func(ctx SpecContext) {
		watcher := newNode(c, prefix, "watcher")
		ch := watcher.e.Observe(ctx)
		put(ctx, "a", "A")
		rec := record(ch)
		Eventually(rec.seen).Should(Or(Equal([]string{"A"}), Equal([]string{"", "A"})))
		Consistently(rec.seen).WithTimeout(300 * time.Millisecond).Should(Or(Equal([]string{"A"}), Equal([]string{"", "A"})))
	})

	It("closes at once, reporting nothing, when its context has ended", func(ctx SpecContext) {
		watcher := newNode(c, prefix, "watcher")
		octx, cancel := context.WithCancel(ctx)
		cancel()
		rec := record(watcher.e.Observe(octx))
		Eventually(rec.closed).Should(BeClosed())
		Expect(rec.seen()).To(BeEmpty())
	})

	It("ends while its reader does not read, when the context ends or the Election closes", func(ctx SpecContext) {
		put(ctx, "a", "A")
		watcher := newNode(c, prefix, "watcher")
		octx, cancel := context.WithCancel(ctx)
		byCtx := watcher.e.Observe(octx)
		byClose := watcher.e.Observe(ctx)
		del(ctx, "a") // both observers wait to send "A", then ""
		cancel()
		Eventually(byCtx).Should(BeClosed())
		Expect(watcher.e.Close()).To(Succeed()) // it waits for the observer's goroutines
		Eventually(byClose).Should(BeClosed())
	})
})
