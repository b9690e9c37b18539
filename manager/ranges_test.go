package manager_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
	"github.com/etcdkit/etcdkit/test/rangecheck"
)

// sliceOf returns the slice of a status that holds the slice key sk (retired ones aside).
func sliceOf(st manager.ShardStatus, sk string) (manager.SliceStatus, bool) {
	for _, s := range st.Slices {
		if !s.Retired && sk >= s.Lo && (s.Hi == "" || sk < s.Hi) {
			return s, true
		}
	}
	return manager.SliceStatus{}, false
}

var _ = Describe("a range-sharded manager", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
		led *ledger
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
		led = newLedger()
	})

	newMember := func(id string) *manager.Manager {
		mc, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(mc.Close)
		mgr, err := manager.New(manager.Options{
			Client: mc, Name: "ranged", ID: id, LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 10 * time.Second, Logger: GinkgoLogr,
			Sharding: &manager.ShardingOptions{Mode: manager.RangeShards, ReportInterval: 200 * time.Millisecond, DrainTimeout: 5 * time.Second},
		})
		Expect(err).NotTo(HaveOccurred())
		st, err := store.New[string](mgr.Client(), "/status/", store.Options[string]{})
		Expect(err).NotTo(HaveOccurred())
		err = manager.NewControllerManagedBy(mgr).Named("items").
			For(source.Prefix("/items/")).
			WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).
			Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
				// A write fenced by the slice: the item's status names its reconciler.
				return reconcile.Result{}, writeStatus(ctx, led, cli, st, id, req.Key)
			}))
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}
	status := func(m *manager.Manager) manager.ShardStatus {
		st, ok := m.ShardStatus(context.Background())
		Expect(ok).To(BeTrue())
		return st
	}
	put := func(want map[string]string, names []string, v string) {
		for _, n := range names {
			k := "/items/" + n
			want[k] = v
			_, err := cli.Put(context.Background(), k, v)
			Expect(err).NotTo(HaveOccurred())
		}
	}
	names := func(format string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf(format, i))
		}
		return out
	}

	It("splits the keys into slices over its members, splits a hot range, and never lets two members own one key", func(ctx SpecContext) {
		want := map[string]string{}
		put(want, names("cold-%03d", 120), "v1")
		a, b_, d := newMember("a"), newMember("b"), newMember("c")
		ra, rb, rd := startReplica(a), startReplica(b_), startReplica(d)
		defer ra.shutdown()
		defer rb.shutdown()
		defer rd.shutdown()

		By("the slices settle over the three members, and every key is reconciled")
		Eventually(func(g Gomega) {
			st := status(a)
			g.Expect(st.Settled()).To(BeTrue(), "slices %+v", st.Slices)
			owners := map[string]bool{}
			for _, s := range st.Slices {
				owners[s.Owner] = true
			}
			g.Expect(owners).To(HaveLen(3), "slices %+v", st.Slices)
		}).WithTimeout(30 * time.Second).Should(Succeed())
		Eventually(func() []string { return led.stale(want) }).WithTimeout(30 * time.Second).Should(BeEmpty())

		By("a hot range appears in one slice: the leader splits it and spreads it")
		hot := names("hot-%04d", 600)
		before := status(a)
		hotSlice, ok := sliceOf(before, "hot-0000")
		Expect(ok).To(BeTrue())
		put(want, hot, "v1")
		Eventually(func(g Gomega) {
			st := status(a)
			g.Expect(st.Settled()).To(BeTrue(), "slices %+v", st.Slices)
			owners := map[string]bool{}
			for _, n := range hot {
				s, ok := sliceOf(st, n)
				g.Expect(ok).To(BeTrue())
				g.Expect(s.ID).NotTo(Equal(hotSlice.ID), "the hot slice is still whole")
				owners[s.Owner] = true
			}
			g.Expect(owners).To(HaveLen(3), "owners of the hot range; slices %+v", st.Slices)
		}).WithTimeout(60 * time.Second).Should(Succeed())
		Eventually(func() []string { return led.stale(want) }).WithTimeout(30*time.Second).Should(BeEmpty(), func() string {
			var b strings.Builder
			for _, m := range []*manager.Manager{a, b_, d} {
				st := status(m)
				fmt.Fprintf(&b, "%s: owned %+v queue %v\n", st.Member, st.Owned, st.QueueDepth)
				if m == a {
					fmt.Fprintf(&b, "slices %+v\n", st.Slices)
				}
			}
			return b.String()
		})

		By("no two members owned one key at once, and every status was written by the owner of its key's slice")
		By("each member caches the keys of its own slices only")
		Eventually(func(g Gomega) {
			total := 0
			for _, m := range []*manager.Manager{a, b_, d} {
				st := status(m)
				owned := 0
				for _, s := range st.Slices {
					if s.Owner == st.Member && !s.Retired {
						owned += s.Keys
					}
				}
				g.Expect(st.CachedKeys).To(Equal(owned), "%s caches %d keys, owns slices of %d", st.Member, st.CachedKeys, owned)
				total += st.CachedKeys
			}
			g.Expect(total).To(Equal(len(want)))
		}).WithTimeout(30 * time.Second).Should(Succeed())

		By("a store reading through a member's cache reads the keys of its slices, and says so of the others")
		items, err := store.New[string](a.Client(), "/items/", store.Options[string]{Cache: a.GetCache()})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			st := status(a)
			mine, other := 0, 0
			for k := range want {
				s, ok := sliceOf(st, strings.TrimPrefix(k, "/items/"))
				g.Expect(ok).To(BeTrue())
				_, err := items.Cached(k)
				if s.Owner == st.Member {
					g.Expect(err).NotTo(HaveOccurred(), k)
					mine++
				} else {
					g.Expect(err).To(MatchError(store.ErrNotCached), k)
					other++
				}
			}
			g.Expect(mine).To(BeNumerically(">", 0))
			g.Expect(other).To(BeNumerically(">", 0))
		}).WithTimeout(30 * time.Second).Should(Succeed())
		_, err = items.Cached("/items/no-such-key-0")
		Expect(err).To(Or(MatchError(store.ErrNotFound), MatchError(store.ErrNotCached)))

		Expect(led.overlaps()).To(BeEmpty())
		rep, err := rangecheck.Check(ctx, cli, "/etcdkit/ranged/", func(key string, value []byte) (string, string, bool) {
			name, ok := strings.CutPrefix(key, "/status/")
			return name, string(value), ok
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(rep.Violations).To(BeEmpty())
		Expect(rep.Writes).To(BeNumerically(">=", len(want)), "status writes checked")
	})

	It("refuses a shard count or an unknown mode", func() {
		_, err := manager.New(manager.Options{Client: cli, Name: "ranged", ID: "x",
			Sharding: &manager.ShardingOptions{Mode: manager.RangeShards, Shards: 8}})
		Expect(err).To(MatchError(ContainSubstring("the range mode has no shard count")))
		_, err = manager.New(manager.Options{Client: cli, Name: "ranged", ID: "x",
			Sharding: &manager.ShardingOptions{Mode: 7}})
		Expect(err).To(MatchError(ContainSubstring("neither HashShards nor RangeShards")))
	})

	It("registers the address it advertises, and refuses one without a port", func(ctx SpecContext) {
		_, err := manager.New(manager.Options{Client: cli, Name: "advertised", ID: "x", AdvertiseAddress: "replica-x.example",
			Sharding: &manager.ShardingOptions{Mode: manager.RangeShards}})
		Expect(err).To(MatchError(ContainSubstring("AdvertiseAddress must be a host:port")))
		mgr, err := manager.New(manager.Options{Client: cli, Name: "advertised", ID: "x", LeaseTTL: 2 * time.Second,
			HealthProbeAddr: "127.0.0.1:0", AdvertiseAddress: "replica-x.example:8081",
			Sharding: &manager.ShardingOptions{Mode: manager.RangeShards}})
		Expect(err).NotTo(HaveOccurred())
		r := startReplica(mgr)
		defer r.shutdown()
		Eventually(func(g Gomega) {
			st := status(mgr)
			g.Expect(st.Members).To(HaveLen(1))
			g.Expect(st.Members[0].Address).To(Equal("replica-x.example:8081"))
		}).Should(Succeed())
	})
})
