package manager_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/internal/shard"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// tally counts reconciles by member and key.
type tally struct {
	mu sync.Mutex
	by map[string]map[string]int // member -> key -> reconciles
}

func newTally() *tally { return &tally{by: map[string]map[string]int{}} }

func (t *tally) add(member, key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.by[member] == nil {
		t.by[member] = map[string]int{}
	}
	t.by[member][key]++
}

// of returns how often member reconciled each of keys.
func (t *tally) of(member string, keys []string) map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(keys))
	for _, k := range keys {
		out[k] = t.by[member][k]
	}
	return out
}

// reconciled returns the keys among keys that any member has reconciled.
func (t *tally) reconciled(keys []string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, k := range keys {
		for _, m := range t.by {
			if m[k] > 0 {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

var notSkipped = source.NewPredicateFuncs(func(kv *mvccpb.KeyValue) bool { return string(kv.Value) != "skip" })

var _ = Describe("a manager's event filters", func() {
	var c *etcdtest.Cluster
	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	// A TTL of 5 s: a session lost on a loaded machine would resync and blur the counts.
	newManager := func(id string, sharding *manager.ShardingOptions) *manager.Manager {
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		mgr, err := manager.New(manager.Options{Client: cli, Name: "filtered", ID: id, LeaseTTL: 5 * time.Second,
			GracefulShutdownTimeout: 10 * time.Second, Sharding: sharding})
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}
	put := func(ctx context.Context, k, v string) {
		_, err := c.Client().Put(ctx, k, v)
		Expect(err).NotTo(HaveOccurred())
	}
	noop := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })

	It("reports each mistake of the builder where it is made", func() {
		mgr := newManager("a", nil)
		b := func() *manager.Builder { return manager.NewControllerManagedBy(mgr).Named("c") }
		Expect(b().Watches(source.Prefix("/j/"), nil).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": Watches("/j/") needs a handler`)))
		Expect(b().For(source.Prefix("/j/")).WithOptions(reconcile.Options{}).WithOptions(reconcile.Options{}).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": WithOptions was called 2 times`)))
		Expect(b().For(source.Prefix("/j/")).For(source.Prefix("")).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": For (watch 2) needs a non-empty prefix`)))
		Expect(b().For(source.Prefix("/j/")).WithEventFilter(source.ValueChanged(), nil).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": WithEventFilter: predicate 2 is nil`)))
		Expect(b().For(source.Prefix("/j/")).WithEventFilter(source.Not(source.And(source.DeleteOnly(), nil))).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": WithEventFilter: predicate 1 is nil (a nil predicate, or an And, Or, Not`)))
		Expect(b().For(source.Prefix("/j/")).For(source.Prefix("/k/").WithPredicates(source.KeyMatches(nil))).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": source /k/: Options.Predicates[0] is nil`)))
		Expect(b().For(source.Prefix("/j/")).WithOptions(reconcile.Options{EventFilters: []source.Predicate{nil}}).Complete(noop)).
			To(MatchError(ContainSubstring(`controller "c": EventFilters[0] is nil`)))
		// None of the mistakes added the controller: the name is free.
		Expect(b().For(source.Prefix("/j/").WithPredicates(source.ValueChanged())).
			WithEventFilter(source.KeyHasPrefix("/j/x")).Complete(noop)).To(Succeed())
	})

	It("admit the same keys on the next leader's resync as live, and a change filter lets the resync through", func(ctx SpecContext) {
		for i := 1; i <= 5; i++ {
			put(ctx, fmt.Sprintf("/lf/keep/%d", i), "ok")
		}
		put(ctx, "/lf/keep/6", "skip")
		put(ctx, "/lf/drop/1", "ok")
		admitted := []string{"/lf/keep/1", "/lf/keep/2", "/lf/keep/3", "/lf/keep/4", "/lf/keep/5", "/lf/keep/7"}
		refused := []string{"/lf/keep/6", "/lf/keep/8", "/lf/drop/1", "/lf/drop/2"}
		all := append(append([]string(nil), admitted...), refused...)

		seen := newTally()
		replicas := map[string]*replica{}
		for _, id := range []string{"a", "b"} {
			mgr := newManager(id, nil)
			Expect(manager.NewControllerManagedBy(mgr).Named("lf").
				For(source.Prefix("/lf/").WithPredicates(notSkipped)).
				WithEventFilter(source.KeyHasPrefix("/lf/keep/"), source.ValueChanged()).
				Complete(reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
					seen.add(id, req.Key)
					return reconcile.Result{}, nil
				}))).To(Succeed())
			replicas[id] = startReplica(mgr)
		}
		var leader, follower string
		Eventually(func() int {
			n := 0
			for id, r := range replicas {
				if r.mgr.IsLeader() {
					leader, n = id, n+1
				}
			}
			return n
		}).Should(Equal(1))
		follower = map[string]string{"a": "b", "b": "a"}[leader]

		// Live: the same value again (ValueChanged drops it), refused keys, then an admitted
		// key, last.
		put(ctx, "/lf/keep/1", "ok")
		put(ctx, "/lf/keep/8", "skip")
		put(ctx, "/lf/drop/2", "ok")
		put(ctx, "/lf/keep/7", "ok")
		once := map[string]int{}
		for _, k := range admitted {
			once[k] = 1
		}
		Eventually(func() map[string]int { return seen.of(leader, admitted) }).Should(Equal(once))
		Consistently(func() map[string]int { return seen.of(leader, admitted) }, 500*time.Millisecond).Should(Equal(once))
		Expect(seen.reconciled(refused)).To(BeEmpty())
		Expect(seen.reconciled(all)).To(ConsistOf(admitted))
		Expect(seen.of(follower, admitted)).To(HaveEach(0))

		replicas[leader].shutdown() // resigns: the follower leads at once and resyncs
		Eventually(func() bool { return replicas[follower].mgr.IsLeader() }, 10*time.Second).Should(BeTrue())
		// Every admitted key, /lf/keep/1 too, whose value has not changed since it was
		// reconciled, and none of the refused ones.
		Eventually(func() map[string]int { return seen.of(follower, admitted) }).Should(Equal(once))
		Consistently(func() []string { return seen.reconciled(refused) }, time.Second).Should(BeEmpty())
		replicas[follower].shutdown()
	})

	It("on a newly claimed shard reconcile every key they admit and none they refuse", func(ctx SpecContext) {
		const shards = 16
		var admitted, refused []string
		for i := 0; i < 40; i++ {
			k := fmt.Sprintf("/sf/%02d/spec", i)
			if i < 30 {
				put(ctx, k, "ok")
				admitted = append(admitted, k)
			} else {
				put(ctx, k, "skip") // refused by the watch's value filter
				refused = append(refused, k)
			}
		}
		for i := 0; i < 10; i++ {
			k := fmt.Sprintf("/sf/%02d/status", i) // refused by the controller's key filter
			put(ctx, k, "ok")
			refused = append(refused, k)
		}
		specs, err := source.KeyGlob("/sf/*/spec")
		Expect(err).NotTo(HaveOccurred())

		seen := newTally()
		newMember := func(id string) *replica {
			mgr := newManager(id, &manager.ShardingOptions{Shards: shards, DrainTimeout: 5 * time.Second})
			// UpdateOnly drops every live create: only the initial list and the resyncs that
			// follow a claim, which it lets through, reconcile these keys.
			Expect(manager.NewControllerManagedBy(mgr).Named("sf").
				For(source.Prefix("/sf/").WithPredicates(notSkipped)).
				WithEventFilter(specs, source.UpdateOnly()).
				Complete(reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
					seen.add(id, req.Key)
					return reconcile.Result{}, nil
				}))).To(Succeed())
			return startReplica(mgr)
		}
		status := func(r *replica) manager.ShardStatus {
			st, ok := r.mgr.ShardStatus(context.Background())
			Expect(ok).To(BeTrue())
			return st
		}
		settled := func(r *replica, members int) func(g Gomega) {
			return func(g Gomega) {
				st := status(r)
				g.Expect(st.Settled()).To(BeTrue(), "assignment %v, owners %v", st.Assignment, st.Owners)
				owners := map[string]bool{}
				for _, o := range st.Owners {
					owners[o] = true
				}
				g.Expect(owners).To(HaveLen(members))
			}
		}

		a := newMember("a")
		Eventually(settled(a, 1)).Should(Succeed())
		b := newMember("b")
		defer b.shutdown()
		Eventually(settled(a, 2)).Should(Succeed())
		Eventually(settled(b, 2)).Should(Succeed())
		Eventually(func() []string { return seen.reconciled(admitted) }).Should(ConsistOf(admitted))

		// The admitted keys of a's shards, and how often b has reconciled them so far.
		var leaving []string
		ofA := map[int]bool{}
		for _, o := range status(a).Owned {
			ofA[o.Shard] = true
		}
		for _, k := range admitted {
			if ofA[shard.Of(k, shards)] {
				leaving = append(leaving, k)
			}
		}
		Expect(leaving).NotTo(BeEmpty())
		before := seen.of("b", leaving)

		a.shutdown() // a graceful leave: b claims a's shards and resyncs their keys
		Eventually(settled(b, 1)).Should(Succeed())
		Eventually(func(g Gomega) {
			now := seen.of("b", leaving)
			for _, k := range leaving {
				g.Expect(now[k]).To(BeNumerically(">", before[k]), k)
			}
		}).Should(Succeed())
		Consistently(func() []string { return seen.reconciled(refused) }, time.Second).Should(BeEmpty())
	})
})
