package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/shard"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// ledger records which member reconciled which key, and flags a key reconciled by two
// members at once.
type ledger struct {
	mu      sync.Mutex
	running map[string]string // key -> member reconciling it now
	last    map[string]string // key -> member that reconciled its latest value
	seen    map[string]string // key -> value seen last
	overlap []string
}

func newLedger() *ledger {
	return &ledger{running: map[string]string{}, last: map[string]string{}, seen: map[string]string{}}
}

func (l *ledger) begin(key, member string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if other, ok := l.running[key]; ok && other != member {
		l.overlap = append(l.overlap, fmt.Sprintf("%s by %s and %s", key, other, member))
	}
	l.running[key] = member
}

func (l *ledger) end(key, member, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[key] == member {
		delete(l.running, key)
	}
	l.last[key], l.seen[key] = member, value
}

func (l *ledger) overlaps() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.overlap...)
}

// convergedOn reports the keys whose latest reconciled value is not want[key].
func (l *ledger) stale(want map[string]string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, v := range want {
		if l.seen[k] != v {
			out = append(out, k)
		}
	}
	return out
}

// writeStatus is the sharded specs' reconcile of an item: it records it in led (with the
// item's value read after it) and writes /status/<item> = member, through st, so fenced by
// the reconcile's shard or slice.
func writeStatus(ctx context.Context, led *ledger, cli *clientv3.Client, st *store.Store[string], member, item string) error {
	led.begin(item, member)
	defer func() {
		resp, err := cli.Get(context.Background(), item)
		v := ""
		if err == nil && len(resp.Kvs) > 0 {
			v = string(resp.Kvs[0].Value)
		}
		led.end(item, member, v)
	}()
	key := "/status/" + strings.TrimPrefix(item, "/items/")
	owner := member
	cur, err := st.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = st.Create(ctx, key, &owner)
	case err == nil && cur.Value != owner:
		_, err = st.Update(ctx, key, &owner, cur.ModRevision)
	}
	return err
}

var _ = Describe("a sharded manager", func() {
	const shards = 16
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

	// hook, when set, runs first in every reconcile.
	var hook func(ctx context.Context, member string, req reconcile.Request) error
	drainTimeout := 5 * time.Second
	BeforeEach(func() { hook, drainTimeout = nil, 5*time.Second })
	newMemberOn := func(id string, mc *clientv3.Client) *manager.Manager {
		mgr, err := manager.New(manager.Options{
			Client: mc, Name: "sharded", ID: id, LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 10 * time.Second,
			Sharding:        &manager.ShardingOptions{Shards: shards, DrainTimeout: drainTimeout},
			HealthProbeAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		})
		Expect(err).NotTo(HaveOccurred())
		err = manager.NewControllerManagedBy(mgr).Named("items").
			For(source.Prefix("/items/")).
			WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).
			Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
				if hook != nil {
					if err := hook(ctx, id, req); err != nil {
						return reconcile.Result{}, err
					}
				}
				// A write fenced by the shard: the status key of the item.
				st, err := store.New[string](mgr.Client(), "/status/", store.Options[string]{})
				if err != nil {
					return reconcile.Result{}, err
				}
				return reconcile.Result{}, writeStatus(ctx, led, cli, st, id, req.Key)
			}))
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}
	newMember := func(id string) *manager.Manager {
		mc, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(mc.Close)
		return newMemberOn(id, mc)
	}

	status := func(m *manager.Manager) manager.ShardStatus {
		st, ok := m.ShardStatus(context.Background())
		Expect(ok).To(BeTrue())
		return st
	}
	// settled succeeds when, as m sees it, the sharding is at rest (ShardStatus.Settled:
	// every shard owned by its assignee, balanced) over exactly n members.
	settled := func(m *manager.Manager, n int) func(g Gomega) {
		return func(g Gomega) {
			st := status(m)
			g.Expect(st.Settled()).To(BeTrue(), "assignment %v, owners %v", st.Assignment, st.Owners)
			owners := map[string]bool{}
			for _, o := range st.Owners {
				owners[o] = true
			}
			g.Expect(owners).To(HaveLen(n))
		}
	}

	It("spreads the keys over its members, each key reconciled by its shard's owner, and hands shards over on leave", func() {
		want := map[string]string{}
		for i := 0; i < 200; i++ {
			k := fmt.Sprintf("/items/%03d", i)
			want[k] = "v1"
			_, err := cli.Put(context.Background(), k, "v1")
			Expect(err).NotTo(HaveOccurred())
		}
		a, b, d := newMember("a"), newMember("b"), newMember("c")
		ra, rb, rd := startReplica(a), startReplica(b), startReplica(d)
		defer ra.shutdown()
		defer rd.shutdown()
		Eventually(settled(a, 3)).Should(Succeed())
		Eventually(func() []string { return led.stale(want) }).Should(BeEmpty())

		// Every key's status was written by its shard's owner.
		st := status(a)
		Eventually(func(g Gomega) {
			for k := range want {
				resp, err := cli.Get(context.Background(), "/status/"+k[len("/items/"):])
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(resp.Kvs).To(HaveLen(1))
				// A Store[string] writes the string as it is.
				g.Expect(string(resp.Kvs[0].Value)).To(Equal(st.Owners[shard.Of(k, shards)]), k)
			}
		}).Should(Succeed())

		// b leaves gracefully; its shards go to a and c; new writes are reconciled there.
		rb.shutdown()
		Eventually(settled(a, 2)).Should(Succeed())
		for k := range want {
			want[k] = "v2"
			_, err := cli.Put(context.Background(), k, "v2")
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() []string { return led.stale(want) }).Should(BeEmpty())
		Expect(led.overlaps()).To(BeEmpty())
		_ = d
	})

	It("refuses a shard count that differs from the stored one", func() {
		m := newMember("a")
		_ = m
		mc, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		defer mc.Close()
		_, err = manager.New(manager.Options{Client: mc, Name: "sharded", Sharding: &manager.ShardingOptions{Shards: 32}})
		Expect(err).To(MatchError(ContainSubstring("Sharding.Shards is 32, but manager \"sharded\" has run with 16 shards")))
		_, err = manager.New(manager.Options{Client: mc, Name: "sharded", Sharding: &manager.ShardingOptions{Shards: -1}})
		Expect(err).To(MatchError(ContainSubstring("Sharding.Shards must be between 1 and")))
	})

	It("refuses a second replica with the same ID, and leaves the first one alone", func() {
		first := startReplica(newMember("twin"))
		defer first.shutdown()
		Eventually(settled(first.mgr, 1)).Should(Succeed())
		second := startReplica(newMember("twin"))
		var err error
		Eventually(second.done).WithTimeout(15 * time.Second).Should(Receive(&err))
		Expect(err).To(MatchError(manager.ErrDuplicateID))
		Expect(err.Error()).To(ContainSubstring(`"twin" is registered`))
		Eventually(func() []manager.OwnedShard { return status(first.mgr).Owned }).Should(HaveLen(shards))
	})

	It("cut off from etcd past its TTL, stops reconciling, has its shards taken over, cannot write, and rejoins", func(ctx SpecContext) {
		px, err := etcdtest.NewProxy(c.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		defer px.Close()
		cfg := c.ClientConfig()
		cfg.Endpoints = []string{px.Endpoint()}
		pc, err := clientv3.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		defer pc.Close()

		// The cut-off member's reconcile of /items/slow waits for the cut, then tries a
		// write that ignores cancellation: its fence must reject it.
		started, resume := make(chan struct{}), make(chan struct{})
		written := make(chan error, 1)
		hook = func(ctx context.Context, member string, req reconcile.Request) error {
			if member != "cut" || req.Key != "/items/slow" {
				return nil
			}
			close(started)
			<-resume
			st, err := store.New[string](pc, "/status/", store.Options[string]{})
			Expect(err).NotTo(HaveOccurred())
			v := "from the cut-off member"
			_, err = st.Create(context.WithoutCancel(ctx), "/status/slow-fenced", &v)
			written <- err
			return err
		}
		cut := startReplica(newMemberOn("cut", pc))
		defer cut.shutdown()
		Eventually(settled(cut.mgr, 1)).Should(Succeed())
		_, err = cli.Put(ctx, "/items/slow", "x")
		Expect(err).NotTo(HaveOccurred())
		Eventually(started).Should(BeClosed())

		other := startReplica(newMember("other"))
		defer other.shutdown()
		Eventually(settled(other.mgr, 2)).Should(Succeed())
		px.Block()
		// The other member owns every shard once the cut-off member's lease has expired.
		Eventually(func(g Gomega) {
			st := status(other.mgr)
			g.Expect(st.Owned).To(HaveLen(shards))
		}).WithTimeout(15 * time.Second).Should(Succeed())
		// The cut-off member dropped its shards by its own clock.
		Expect(status(cut.mgr).Owned).To(BeEmpty())
		// Back in touch with etcd, the reconcile that outlived the ownership tries its write.
		px.Unblock()
		close(resume)
		Eventually(written).Should(Receive(MatchError(fence.ErrFenced)))
		resp, err := cli.Get(ctx, "/status/slow-fenced")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(BeEmpty())

		Eventually(settled(other.mgr, 2)).WithTimeout(20 * time.Second).Should(Succeed())
		Expect(led.overlaps()).To(BeEmpty())
	})

	It("serves /debug/shards and counts its shards in etcdkit_shards_owned", func() {
		r := startReplica(newMember("solo"))
		defer r.shutdown()
		Eventually(settled(r.mgr, 1)).Should(Succeed())
		Eventually(r.mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		// Polled: on a loaded machine a 2 s session may be lost and joined again meanwhile,
		// and the member then owns its shards again a moment later.
		Eventually(func(g Gomega) {
			code, body := get("http://" + r.mgr.HealthProbeAddr() + "/debug/shards")
			g.Expect(code).To(Equal(200))
			var st manager.ShardStatus
			g.Expect(json.Unmarshal([]byte(body), &st)).To(Succeed())
			g.Expect(st.Member).To(Equal("solo"))
			g.Expect(st.Leader).To(Equal("solo"))
			g.Expect(st.Owned).To(HaveLen(shards))
			g.Expect(st.Members).To(ConsistOf(HaveField("State", manager.MemberActive)))
			g.Expect(st.Owned[0].Token).To(BeNumerically(">", 0))
			g.Expect(st.Settled()).To(BeTrue())
			code, body = get("http://" + r.mgr.HealthProbeAddr() + "/metrics")
			g.Expect(code).To(Equal(200))
			g.Expect(body).To(ContainSubstring(fmt.Sprintf("etcdkit_shards_owned %d\n", shards)))
			g.Expect(body).To(ContainSubstring("etcdkit_leader 1\n"))
		}).Should(Succeed())
	})

	It("rejects sharding options that cannot work", func() {
		mc := c.Client()
		_, err := manager.New(manager.Options{Client: mc, Name: "x", DisableLeaderElection: true, Sharding: &manager.ShardingOptions{}})
		Expect(err).To(MatchError(ContainSubstring("Sharding needs leader election")))
		_, err = manager.New(manager.Options{Client: mc, Name: "x", Sharding: &manager.ShardingOptions{DrainTimeout: -time.Second}})
		Expect(err).To(MatchError(ContainSubstring("Sharding.DrainTimeout must not be negative, got -1s")))
		_, err = manager.New(manager.Options{Client: mc, Name: "x", Sharding: &manager.ShardingOptions{Shards: manager.MaxShards + 1}})
		Expect(err).To(MatchError(ContainSubstring("got 4097")))
		plain, err := manager.New(manager.Options{Client: mc, Name: "y"})
		Expect(err).NotTo(HaveOccurred())
		err = manager.NewControllerManagedBy(plain).Named("c").For(source.Prefix("/items/")).
			ShardKey(func(k string) string { return k }).
			Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }))
		Expect(err).To(MatchError(ContainSubstring("ShardKey needs a manager with Sharding")))
	})

	It("cancels a reconcile that outlives the drain timeout before the next owner takes its shard", func(ctx SpecContext) {
		drainTimeout = 300 * time.Millisecond
		type run struct {
			member      string
			start, stop time.Time
			cause       error
		}
		var mu sync.Mutex
		var runs []run
		var stuckKey string // set before the key is written
		hook = func(ctx context.Context, member string, req reconcile.Request) error {
			if req.Key != stuckKey {
				return nil
			}
			r := run{member: member, start: time.Now()}
			if member == "first" {
				<-ctx.Done() // a reconcile that only ends when it is cancelled
				r.cause = context.Cause(ctx)
			}
			r.stop = time.Now()
			mu.Lock()
			runs = append(runs, r)
			mu.Unlock()
			return nil
		}
		// "first" owns every shard and is stuck on a key whose shard goes to "second" when
		// it joins (the assignment is a pure function of the shards and the members).
		allFirst := map[int]string{}
		for s := 0; s < shards; s++ {
			allFirst[s] = "first"
		}
		target := shard.Assign(shards, []string{"first", "second"}, allFirst)
		key := ""
		for i := 0; key == ""; i++ {
			if k := fmt.Sprintf("/items/stuck-%d", i); target[shard.Of(k, shards)] == "second" {
				key = k
			}
		}
		stuckKey = key
		stuck := shard.Of(key, shards)
		first := startReplica(newMember("first"))
		defer first.shutdown()
		Eventually(settled(first.mgr, 1)).Should(Succeed())
		_, err := cli.Put(ctx, key, "x")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int {
			for _, o := range status(first.mgr).Owned {
				if o.Shard == stuck {
					return o.InFlight
				}
			}
			return 0
		}).Should(Equal(1))

		second := startReplica(newMember("second"))
		defer second.shutdown()
		Eventually(settled(second.mgr, 2)).Should(Succeed())
		Expect(status(second.mgr).Owners[stuck]).To(Equal("second"))
		Eventually(func() int { mu.Lock(); defer mu.Unlock(); return len(runs) }).Should(Equal(2))
		mu.Lock()
		defer mu.Unlock()
		Expect(runs[0].member).To(Equal("first"))
		Expect(runs[0].cause).To(MatchError(ContainSubstring("drain timed out")))
		Expect(runs[1].member).To(Equal("second"))
		Expect(runs[1].start).To(BeTemporally(">=", runs[0].stop), "the next owner started before the drained reconcile ended")
	})

	It("runs a LeaderOnly controller on the leader only, fenced by the leadership", func(ctx SpecContext) {
		var mu sync.Mutex
		by := map[string]int{}
		mk := func(id string) *replica {
			mc, err := c.NewClient()
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(mc.Close)
			mgr, err := manager.New(manager.Options{Client: mc, Name: "mixed", ID: id, LeaseTTL: 2 * time.Second, Sharding: &manager.ShardingOptions{Shards: 4}})
			Expect(err).NotTo(HaveOccurred())
			err = manager.NewControllerManagedBy(mgr).Named("global").LeaderOnly().
				For(source.Prefix("/global/")).
				Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
					_, sharded := manager.ShardFrom(ctx)
					_, fenced := fence.From(ctx)
					Expect(sharded).To(BeFalse())
					Expect(fenced).To(BeTrue())
					mu.Lock()
					by[id]++
					mu.Unlock()
					return reconcile.Result{}, nil
				}))
			Expect(err).NotTo(HaveOccurred())
			return startReplica(mgr)
		}
		a := mk("a")
		defer a.shutdown()
		Eventually(a.mgr.IsLeader).Should(BeTrue())
		b := mk("b")
		defer b.shutdown()
		for i := 0; i < 20; i++ {
			_, err := cli.Put(ctx, fmt.Sprintf("/global/%d", i), "x")
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() int { mu.Lock(); defer mu.Unlock(); return by["a"] }).Should(Equal(20))
		mu.Lock()
		defer mu.Unlock()
		Expect(by["b"]).To(BeZero())
	})
})
