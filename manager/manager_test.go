package manager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// replica is a manager started on its own goroutine.
type replica struct {
	mgr  *manager.Manager
	stop context.CancelFunc
	done chan error
}

func startReplica(mgr *manager.Manager) *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{mgr: mgr, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- mgr.Start(ctx) }()
	return r
}

// shutdown stops the replica and waits for Start to return nil.
func (r *replica) shutdown() {
	r.stop()
	Eventually(r.done, 20*time.Second).Should(Receive(BeNil()))
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type counter struct {
	mu sync.Mutex
	by map[string]int // replica id -> reconciles
}

func (c *counter) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.by[id]++
}

func (c *counter) of(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[id]
}

var _ = Describe("a manager", func() {
	var c *etcdtest.Cluster
	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	newManager := func(id string, extra func(*manager.Options)) *manager.Manager {
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		opts := manager.Options{Client: cli, Name: "jobs", ID: id, LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 5 * time.Second}
		if extra != nil {
			extra(&opts)
		}
		mgr, err := manager.New(opts)
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}

	It("rejects bad options with errors that name them", func(ctx SpecContext) {
		cli := c.Client()
		for _, tc := range []struct {
			opts manager.Options
			want string
		}{
			{manager.Options{Client: cli}, "Name must not be empty"},
			{manager.Options{Client: cli, Name: "a/b"}, `Name may hold only letters, digits, '-', '_' and '.', got "a/b"`},
			{manager.Options{Name: "x"}, "give a Client or Endpoints"},
			{manager.Options{Client: cli, Name: "x", LeaseTTL: time.Second}, "manager: LeaseTTL must be at least 2s, got 1s"},
			{manager.Options{Client: cli, Name: "x", LeaseTTL: 2500 * time.Millisecond}, "manager: LeaseTTL must be a whole number of seconds (etcd leases count seconds), got 2.5s"},
			{manager.Options{Client: cli, Name: "x", RootPrefix: "etcdkit"}, `RootPrefix must start and end with '/' and not be the root, got "etcdkit"`},
			{manager.Options{Client: cli, Name: "x", ID: "a b"}, `ID must not hold '/' or white space, got "a b"`},
			{manager.Options{Client: cli, Name: "x", GracefulShutdownTimeout: -time.Second}, "GracefulShutdownTimeout must not be negative"},
		} {
			_, err := manager.New(tc.opts)
			Expect(err).To(MatchError(ContainSubstring(tc.want)))
		}
	})

	It("fails within the dial timeout, naming the endpoints, when etcd does not answer", func() {
		start := time.Now()
		_, err := manager.New(manager.Options{Name: "x", Endpoints: []string{"127.0.0.1:1"}, DialTimeout: 300 * time.Millisecond})
		Expect(err).To(MatchError(ContainSubstring("etcd at 127.0.0.1:1 did not answer within 300ms")))
		Expect(time.Since(start)).To(BeNumerically("<", 3*time.Second))
	})

	It("rejects a bad controller with a clear error", func() {
		mgr := newManager("a", nil)
		noop := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })
		Expect(manager.NewControllerManagedBy(mgr).For(source.Prefix("/j/")).Complete(noop)).To(MatchError(ContainSubstring("needs a name")))
		Expect(manager.NewControllerManagedBy(mgr).Named("c").Complete(noop)).To(MatchError(ContainSubstring(`controller "c" watches nothing`)))
		Expect(manager.NewControllerManagedBy(mgr).Named("c").For(source.Prefix("")).Complete(noop)).To(MatchError(ContainSubstring("non-empty prefix")))
		Expect(manager.NewControllerManagedBy(mgr).Named("c").For(source.Prefix("/j/")).Complete(nil)).To(MatchError(ContainSubstring("reconciler must not be nil")))
		Expect(manager.NewControllerManagedBy(mgr).Named("c").For(source.Prefix("/j/")).
			WithOptions(reconcile.Options{MaxConcurrentReconciles: -1}).Complete(noop)).To(MatchError(ContainSubstring("MaxConcurrentReconciles must be at least 1, got -1")))
		Expect(manager.NewControllerManagedBy(mgr).Named("c").For(source.Prefix("/j/")).Complete(noop)).To(Succeed())
		Expect(manager.NewControllerManagedBy(mgr).Named("c").For(source.Prefix("/j/")).Complete(noop)).To(MatchError(ContainSubstring(`a controller named "c" exists already`)))
		Expect(mgr.Add(nil)).To(MatchError(ContainSubstring("runnable must not be nil")))
	})

	It("reconciles on the leader only, and the next leader takes over with a resync", func(ctx SpecContext) {
		seen := &counter{by: map[string]int{}}
		replicas := map[string]*replica{}
		for _, id := range []string{"a", "b"} {
			mgr := newManager(id, nil)
			r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
				seen.add(id)
				return reconcile.Result{}, nil
			})
			Expect(manager.NewControllerManagedBy(mgr).Named("jobs").For(source.Prefix("/jobs/")).Complete(r)).To(Succeed())
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
		for id := range replicas {
			if id != leader {
				follower = id
			}
		}
		for i := 0; i < 20; i++ {
			_, err := c.Client().Put(ctx, fmt.Sprintf("/jobs/%d", i), "x")
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() int { return seen.of(leader) }).Should(BeNumerically(">=", 20))
		Consistently(func() int { return seen.of(follower) }, 300*time.Millisecond).Should(BeZero())

		replicas[leader].shutdown() // resigns: the follower leads at once and resyncs
		Eventually(func() bool { return replicas[follower].mgr.IsLeader() }, 5*time.Second).Should(BeTrue())
		Eventually(func() int { return seen.of(follower) }).Should(BeNumerically(">=", 20))
		replicas[follower].shutdown()
	})

	It("fences the writes of a replica whose leadership was lost behind its back", func(ctx SpecContext) {
		mgr := newManager("a", nil)
		jobs, err := store.New[map[string]string](mgr.Client(), "/fj/", store.Options[map[string]string]{})
		Expect(err).NotTo(HaveOccurred())
		entered, release := make(chan struct{}), make(chan struct{})
		var first atomic.Pointer[error] // the outcome of the first reconcile's write
		var calls atomic.Int32
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if calls.Add(1) == 1 {
				close(entered)
				<-release // the replica is "paused" while its lease is taken away
				_, err := jobs.Mutate(ctx, req.Key, func(v *map[string]string) error { (*v)["status"] = "stale"; return nil })
				first.Store(&err)
				return reconcile.Result{}, err
			}
			// Later terms reconcile again, legitimately, under their own fence.
			return reconcile.Result{}, nil
		})
		Expect(manager.NewControllerManagedBy(mgr).Named("fj").For(source.Prefix("/fj/")).Complete(r)).To(Succeed())
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(mgr.IsLeader).Should(BeTrue())

		_, err = c.Client().Put(ctx, "/fj/slow", "{}")
		Expect(err).NotTo(HaveOccurred())
		Eventually(entered).Should(BeClosed())
		term := mgr.Election().LeaderContext()
		// Take the leadership away as an expired lease would: revoke the election lease.
		resp, err := c.Client().Get(ctx, mgr.RootPrefix()+"election/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		_, err = c.Client().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		Expect(err).NotTo(HaveOccurred())
		Eventually(term.Done()).Should(BeClosed())
		close(release)
		Eventually(first.Load).ShouldNot(BeNil())
		Expect(*first.Load()).To(Or(MatchError(fence.ErrFenced), MatchError(context.Canceled)))
		got, err := jobs.Get(ctx, "/fj/slow")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value).NotTo(HaveKeyWithValue("status", "stale"), "no write of the former leadership was accepted")
	})

	It("drains a reconcile in flight at shutdown while still leading, then resigns", func(ctx SpecContext) {
		mgr := newManager("a", nil)
		jobs, err := store.New[map[string]string](mgr.Client(), "/dr/", store.Options[map[string]string]{})
		Expect(err).NotTo(HaveOccurred())
		entered, release := make(chan struct{}), make(chan struct{})
		var written atomic.Pointer[error]
		var leadingWhileDraining atomic.Bool
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			close(entered)
			<-release
			leadingWhileDraining.Store(mgr.IsLeader() && ctx.Err() == nil)
			_, err := jobs.Mutate(ctx, req.Key, func(v *map[string]string) error { (*v)["status"] = "done"; return nil })
			written.Store(&err)
			return reconcile.Result{}, err
		})
		Expect(manager.NewControllerManagedBy(mgr).Named("drain").For(source.Prefix("/dr/")).Complete(r)).To(Succeed())
		rep := startReplica(mgr)
		Eventually(mgr.IsLeader).Should(BeTrue())
		_, err = c.Client().Put(ctx, "/dr/k", "{}")
		Expect(err).NotTo(HaveOccurred())
		Eventually(entered).Should(BeClosed())
		rep.stop() // shutdown begins with the reconcile in flight
		Consistently(rep.done, 200*time.Millisecond).ShouldNot(Receive(), "Start waits for the reconcile")
		close(release)
		Eventually(rep.done).Should(Receive(BeNil()))
		Expect(leadingWhileDraining.Load()).To(BeTrue(), "the replica resigns only after the drain")
		Expect(*written.Load()).NotTo(HaveOccurred())
		got, err := jobs.Get(ctx, "/dr/k")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value).To(HaveKeyWithValue("status", "done"))
		Expect(mgr.IsLeader()).To(BeFalse())
	})

	It("returns a controller's error when it cannot sync, and a leader runnable's error at once", func(ctx SpecContext) {
		mgr := newManager("a", nil)
		noop := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })
		future := source.Prefix("/fut/").WithOptions(source.Options{StartRevision: 1 << 40})
		Expect(manager.NewControllerManagedBy(mgr).Named("future").For(future).Complete(noop)).To(Succeed())
		Expect(mgr.Start(ctx)).To(MatchError(ContainSubstring("beyond etcd's current revision")))

		mgr2 := newManager("b", nil)
		boom := errors.New("boom")
		Expect(mgr2.Add(manager.RunnableFunc(func(context.Context) error { return boom }))).To(Succeed())
		Expect(mgr2.Add(manager.RunnableFunc(func(ctx context.Context) error { <-ctx.Done(); return nil }))).To(Succeed())
		done := make(chan error, 1)
		go func() { done <- mgr2.Start(ctx) }()
		Eventually(done).Should(Receive(MatchError(boom)))
	})

	It("runs leader runnables on the leader only and the others everywhere, and stops them all", func(ctx SpecContext) {
		var leaderRuns, everywhereRuns atomic.Int32
		mgr := newManager("a", nil)
		Expect(mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			leaderRuns.Add(1)
			<-ctx.Done()
			return nil
		}))).To(Succeed())
		Expect(mgr.Add(everywhereRunnable(func(ctx context.Context) error {
			everywhereRuns.Add(1)
			<-ctx.Done()
			return nil
		}))).To(Succeed())
		rep := startReplica(mgr)
		Eventually(leaderRuns.Load).Should(Equal(int32(1)))
		Eventually(everywhereRuns.Load).Should(Equal(int32(1)))
		rep.shutdown()
		Expect(mgr.Add(manager.RunnableFunc(func(context.Context) error { return nil }))).To(MatchError(ContainSubstring("Add after Start")))
	})

	It("runs an election.LeaderTask as a leader runnable, and again at the next term", func(ctx SpecContext) {
		mgr := newManager("a", nil)
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		e, err := election.New(cli, "/tasks/election/", election.Options{ID: "a", TTL: 2 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(e.Close)
		var runs atomic.Int32
		task, err := election.NewLeaderTask(e, func(context.Context) error { runs.Add(1); return nil }, election.TaskOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(mgr.Add(task)).To(Succeed())
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(runs.Load).Should(BeEquivalentTo(1))

		By("the manager's lease is revoked: the term ends, the task's Start returns, and the next term starts it again")
		resp, err := c.Client().Get(ctx, mgr.RootPrefix()+"election/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		_, err = c.Client().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		Expect(err).NotTo(HaveOccurred())
		Eventually(runs.Load).Should(BeNumerically(">=", 2))
		Expect(mgr.IsLeader()).To(BeTrue())
	})

	It("stops with the error of a failing runnable", func(ctx SpecContext) {
		mgr := newManager("a", func(o *manager.Options) { o.DisableLeaderElection = true })
		boom := errors.New("boom")
		Expect(mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return boom }))).To(Succeed())
		Expect(mgr.Start(ctx)).To(MatchError(boom))
	})

	It("replaces a revoked session by itself, and /readyz is ready again on the new lease", func(ctx SpecContext) {
		mgr := newManager("a", func(o *manager.Options) { o.HealthProbeAddr = "127.0.0.1:0" })
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(mgr.IsLeader).Should(BeTrue())
		url := "http://" + mgr.HealthProbeAddr() + "/readyz"
		Eventually(func() int { code, _ := get(url); return code }).Should(Equal(200))
		resp, err := c.Client().Get(ctx, mgr.RootPrefix()+"election/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs).To(HaveLen(1))
		_, err = c.Client().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		Expect(err).NotTo(HaveOccurred())
		// The lost session is noticed and replaced (the probe answers 503 in between, too
		// briefly to catch here; election's own suite checks SessionAlive).
		Eventually(func() int { code, _ := get(url); return code }).Should(Equal(200))
		Eventually(func() (int64, error) {
			resp, err := c.Client().Get(ctx, mgr.RootPrefix()+"election/", clientv3.WithPrefix())
			if err != nil || len(resp.Kvs) != 1 {
				return 0, err
			}
			return resp.Kvs[0].Lease, nil
		}).ShouldNot(BeElementOf(int64(0), resp.Kvs[0].Lease))
	})

	It("serves health, readiness and metrics with controller-runtime's series", func(ctx SpecContext) {
		gate := make(chan struct{})
		mgr := newManager("a", func(o *manager.Options) {
			o.HealthProbeAddr = "127.0.0.1:0"
			o.MetricsAddr = "127.0.0.1:0"
		})
		r := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })
		// A source whose first page cannot be read until the gate opens keeps readyz at 503.
		blocked := source.Prefix("/m/").WithOptions(source.Options{Predicates: []source.Predicate{func(source.Event) bool { <-gate; return true }}})
		_, err := c.Client().Put(ctx, "/m/k", "v")
		Expect(err).NotTo(HaveOccurred())
		Expect(manager.NewControllerManagedBy(mgr).Named("metered").For(blocked).Complete(r)).To(Succeed())
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		health, metricsURL := "http://"+mgr.HealthProbeAddr(), "http://"+mgr.MetricsAddr()
		Eventually(func() int { code, _ := get(health + "/healthz"); return code }).Should(Equal(200))
		code, _ := get(health + "/readyz")
		Expect(code).To(Equal(503))
		close(gate)
		Eventually(func() int { code, _ := get(health + "/readyz"); return code }).Should(Equal(200))
		Eventually(func() string { _, body := get(metricsURL + "/metrics"); return body }).Should(And(
			ContainSubstring(`controller_runtime_reconcile_total{controller="metered",result="success"} 1`),
			ContainSubstring(`workqueue_depth{controller="metered",name="metered"} 0`),
			ContainSubstring(`controller_runtime_max_concurrent_reconciles{controller="metered"} 1`),
			ContainSubstring("etcdkit_leader 1"),
			// Every key handed to a worker counts, also one that waited for the leadership.
			MatchRegexp(`workqueue_work_duration_seconds_count{controller="metered",name="metered"} [1-9]`),
			ContainSubstring(`etcdkit_source_relists_total{prefix="/m/"} 0`),
		))
		_, body := get(metricsURL + "/metrics")
		Expect(strings.Contains(body, "workqueue_queue_duration_seconds_bucket")).To(BeTrue())
	})
})

type everywhereRunnable func(ctx context.Context) error

func (f everywhereRunnable) Start(ctx context.Context) error { return f(ctx) }
func (everywhereRunnable) NeedLeaderElection() bool          { return false }
