package reconcile_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// counts returns how often each of keys was reconciled.
func (c *calls) counts(keys ...string) map[string]int {
	out := make(map[string]int, len(keys))
	for _, k := range keys {
		out[k] = c.count(k)
	}
	return out
}

var _ = Describe("a controller's event filters", func() {
	var cli *clientv3.Client
	BeforeEach(func() { cli = etcdtest.New(GinkgoT()).Client() })

	put := func(ctx context.Context, k, v string) {
		_, err := cli.Put(ctx, k, v)
		Expect(err).NotTo(HaveOccurred())
	}
	// startFiltered runs a controller over one source with the source's predicates and the
	// controller's event filters, recording its reconciles.
	startFiltered := func(prefix string, srcPreds, filters []source.Predicate) (*reconcile.Controller, *calls, func()) {
		rec := newCalls()
		src, err := source.New(cli, prefix, source.Options{Predicates: srcPreds})
		Expect(err).NotTo(HaveOccurred())
		c, err := reconcile.New(reconcile.Options{Name: "filtered", EventFilters: filters},
			reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
				rec.record(req.Key)
				return reconcile.Result{}, nil
			}))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Watch(src, nil)).To(Succeed())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Start(ctx) }()
		Eventually(c.HasSynced).Should(BeTrue())
		return c, rec, func() {
			cancel()
			Eventually(done, 10*time.Second).Should(Receive(BeNil()))
		}
	}

	It("drop the same keys on a resync as live, while a change filter lets every resync through", func(ctx SpecContext) {
		// The watch's own predicate judges the value, the controller's filters the key and
		// whether the value changed.
		notSkipped := source.NewPredicateFuncs(func(kv *mvccpb.KeyValue) bool { return string(kv.Value) != "skip" })
		specs, err := source.KeyGlob("/f/*/spec")
		Expect(err).NotTo(HaveOccurred())
		put(ctx, "/f/a/spec", "ok")
		put(ctx, "/f/b/spec", "skip")
		put(ctx, "/f/c/status", "ok")
		put(ctx, "/f/d/spec", "ok")
		c, rec, stop := startFiltered("/f/",
			[]source.Predicate{notSkipped},
			[]source.Predicate{specs, source.ValueChanged()})
		defer stop()

		admitted := []string{"/f/a/spec", "/f/d/spec", "/f/e/spec"}
		refused := []string{"/f/b/spec", "/f/c/status", "/f/g/spec", "/f/h/status"}
		Eventually(func() map[string]int { return rec.counts("/f/a/spec", "/f/d/spec") }).
			Should(Equal(map[string]int{"/f/a/spec": 1, "/f/d/spec": 1}))

		// Live: the same value again, a skipped value, a key outside the glob, then a key
		// that passes, last.
		put(ctx, "/f/a/spec", "ok")
		put(ctx, "/f/g/spec", "skip")
		put(ctx, "/f/h/status", "ok")
		put(ctx, "/f/e/spec", "ok")
		Eventually(func() int { return rec.count("/f/e/spec") }).Should(Equal(1))
		live := map[string]int{"/f/a/spec": 1, "/f/d/spec": 1, "/f/e/spec": 1}
		none := map[string]int{"/f/b/spec": 0, "/f/c/status": 0, "/f/g/spec": 0, "/f/h/status": 0}
		Consistently(func() map[string]int { return rec.counts(admitted...) }, 500*time.Millisecond).Should(Equal(live))
		Expect(rec.counts(refused...)).To(Equal(none))

		// A resync: the keys the filters admitted live come again, /f/a/spec too although
		// its value has not changed since; the refused ones stay out.
		c.Resync()
		resynced := map[string]int{"/f/a/spec": 2, "/f/d/spec": 2, "/f/e/spec": 2}
		Eventually(func() map[string]int { return rec.counts(admitted...) }).Should(Equal(resynced))
		Consistently(func() map[string]int { return rec.counts(refused...) }, 500*time.Millisecond).Should(Equal(none))
		Expect(rec.counts(admitted...)).To(Equal(resynced))

		// ResyncWhere selects among what the filters admit.
		c.ResyncWhere(func(req reconcile.Request) bool { return req.Key == "/f/d/spec" || req.Key == "/f/b/spec" })
		Eventually(func() int { return rec.count("/f/d/spec") }).Should(Equal(3))
		Consistently(func() map[string]int { return rec.counts(refused...) }, 500*time.Millisecond).Should(Equal(none))
		Expect(rec.counts("/f/a/spec", "/f/e/spec")).To(Equal(map[string]int{"/f/a/spec": 2, "/f/e/spec": 2}))
	})

	DescribeTable("as the only filter, treat a live create and a resync as the built-in says",
		func(ctx SpecContext, filter source.Predicate, liveCreate, resync bool) {
			put(ctx, "/t/old", "1")
			c, rec, stop := startFiltered("/t/", nil, []source.Predicate{filter})
			defer stop()
			initial := 0
			if resync { // the initial list is a resync as well
				initial = 1
				Eventually(func() int { return rec.count("/t/old") }).Should(Equal(1))
			}

			put(ctx, "/t/new", "1")
			if liveCreate {
				Eventually(func() int { return rec.count("/t/new") }).Should(Equal(1))
			} else {
				Consistently(func() int { return rec.count("/t/new") }, 500*time.Millisecond).Should(BeZero())
			}
			created := rec.count("/t/new")

			// A resync reconciles what the live event may have left out.
			c.Resync()
			want := map[string]int{"/t/old": initial, "/t/new": created}
			if resync {
				want = map[string]int{"/t/old": initial + 1, "/t/new": created + 1}
				Eventually(func() map[string]int { return rec.counts("/t/old", "/t/new") }).Should(Equal(want))
			}
			Consistently(func() map[string]int { return rec.counts("/t/old", "/t/new") }, 500*time.Millisecond).Should(Equal(want))
		},
		Entry("ValueChanged: both pass", source.ValueChanged(), true, true),
		Entry("UpdateOnly: a create is dropped, a resync passes", source.UpdateOnly(), false, true),
		Entry("CreateOnly: both pass", source.CreateOnly(), true, true),
		Entry("DeleteOnly: both are dropped", source.DeleteOnly(), false, false),
		Entry("Not(CreateOnly): both are dropped", source.Not(source.CreateOnly()), false, false),
	)

	It("reject a nil filter with an error naming it", func() {
		noop := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })
		_, err := reconcile.New(reconcile.Options{Name: "f", EventFilters: []source.Predicate{source.ValueChanged(), nil}}, noop)
		Expect(err).To(MatchError(ContainSubstring(`controller "f": EventFilters[1] is nil`)))
		_, err = reconcile.New(reconcile.Options{Name: "f", EventFilters: []source.Predicate{source.Or(source.DeleteOnly(), nil)}}, noop)
		Expect(err).To(MatchError(ContainSubstring(`controller "f": EventFilters[0] is nil (a nil predicate, or an And, Or, Not`)))
	})
})
