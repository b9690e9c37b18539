package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/gate"
	"github.com/etcdkit/etcdkit/internal/metrics"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// start runs a controller over prefix with r and returns a stop function that waits for
// Start to return.
func start(cli *clientv3.Client, prefix string, opts reconcile.Options, r reconcile.Reconciler, setup ...gate.Setup) (*reconcile.Controller, *source.Source, func()) {
	src, err := source.New(cli, prefix, source.Options{})
	Expect(err).NotTo(HaveOccurred())
	c, err := reconcile.New(opts, r)
	Expect(err).NotTo(HaveOccurred())
	for _, s := range setup { // what a manager gives its controllers
		Expect(gate.Configure(c, s)).To(Succeed())
	}
	Expect(c.Watch(src, nil)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	return c, src, func() {
		cancel()
		Eventually(done, 10*time.Second).Should(Receive(BeNil()))
	}
}

// calls records reconcile calls per key with their times.
type calls struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func newCalls() *calls { return &calls{at: map[string][]time.Time{}} }

func (c *calls) record(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at[key] = append(c.at[key], time.Now())
	return len(c.at[key])
}

func (c *calls) times(key string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.at[key]...)
}

func (c *calls) count(key string) int { return len(c.times(key)) }

var _ = Describe("a controller", func() {
	var cli *clientv3.Client
	BeforeEach(func() { cli = etcdtest.New(GinkgoT()).Client() })

	It("reconciles the final state of every key written by a concurrent writer", func(ctx SpecContext) {
		const keys, writes = 300, 3000
		var mu sync.Mutex
		seen := map[string]string{} // the value each key had when last reconciled
		var src *source.Source
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			kv, ok := src.Get(req.Key)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				seen[req.Key] = string(kv.Value)
			} else {
				seen[req.Key] = "<deleted>"
			}
			return reconcile.Result{}, nil
		})
		var stop func()
		_, src, stop = start(cli, "/c/", reconcile.Options{Name: "final", MaxConcurrentReconciles: 4}, r)
		defer stop()
		for i := 0; i < writes; i++ {
			k := fmt.Sprintf("/c/%03d", i%keys)
			var err error
			if i%11 == 0 {
				_, err = cli.Delete(ctx, k)
			} else {
				_, err = cli.Put(ctx, k, fmt.Sprint(i))
			}
			Expect(err).NotTo(HaveOccurred())
		}
		resp, err := cli.Get(ctx, "/c/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		want := map[string]string{}
		for i := 0; i < keys; i++ {
			want[fmt.Sprintf("/c/%03d", i)] = "<deleted>"
		}
		for _, kv := range resp.Kvs {
			want[string(kv.Key)] = string(kv.Value)
		}
		Eventually(func() map[string]string {
			mu.Lock()
			defer mu.Unlock()
			out := make(map[string]string, len(seen))
			for k, v := range seen {
				out[k] = v
			}
			return out
		}, 20*time.Second).Should(Equal(want))
	})

	It("never reconciles one key on two workers at once with MaxConcurrentReconciles=8", func(ctx SpecContext) {
		var (
			mu        sync.Mutex
			inFlight  = map[string]bool{}
			overlaps  int
			busy, top int
			total     atomic.Int64
		)
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			mu.Lock()
			if inFlight[req.Key] {
				overlaps++
			}
			inFlight[req.Key] = true
			busy++
			top = max(top, busy)
			mu.Unlock()
			time.Sleep(2 * time.Millisecond) // a reconcile that takes time, so that adds pile up
			mu.Lock()
			inFlight[req.Key] = false
			busy--
			mu.Unlock()
			total.Add(1)
			return reconcile.Result{}, nil
		})
		c, _, stop := start(cli, "/o/", reconcile.Options{Name: "overlap", MaxConcurrentReconciles: 8}, r)
		defer stop()
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				for i := 0; i < 150; i++ {
					_, err := cli.Put(ctx, fmt.Sprintf("/o/%d", i%10), fmt.Sprint(i))
					Expect(err).NotTo(HaveOccurred())
				}
			}()
		}
		wg.Wait()
		Eventually(func() int { return c.QueueLen() }).Should(BeZero())
		mu.Lock()
		defer mu.Unlock()
		Expect(overlaps).To(BeZero())
		Expect(top).To(BeNumerically(">", 1), "the workers must have run concurrently for the check to mean anything")
		Expect(total.Load()).To(BeNumerically("<", 600), "adds of a queued key collapse")
	})

	It("reconciles again after RequeueAfter", func(ctx SpecContext) {
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if rec.record(req.Key) == 1 {
				return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
			}
			return reconcile.Result{}, nil
		})
		_, _, stop := start(cli, "/ra/", reconcile.Options{Name: "requeue-after"}, r)
		defer stop()
		_, err := cli.Put(ctx, "/ra/k", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { return rec.count("/ra/k") }).Should(Equal(2))
		ts := rec.times("/ra/k")
		Expect(ts[1].Sub(ts[0])).To(BeNumerically(">=", 200*time.Millisecond))
		Consistently(func() int { return rec.count("/ra/k") }, 300*time.Millisecond).Should(Equal(2))
	})

	It("retries errors with exponential backoff, and stops at a terminal error", func(ctx SpecContext) {
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			n := rec.record(req.Key)
			if req.Key == "/e/terminal" {
				return reconcile.Result{}, reconcile.TerminalError(errors.New("bad spec"))
			}
			if n <= 4 {
				return reconcile.Result{}, fmt.Errorf("attempt %d fails", n)
			}
			return reconcile.Result{}, nil
		})
		_, _, stop := start(cli, "/e/", reconcile.Options{Name: "backoff", BaseDelay: 20 * time.Millisecond}, r)
		defer stop()
		_, err := cli.Put(ctx, "/e/k", "v")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/e/terminal", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { return rec.count("/e/k") }).Should(Equal(5))
		ts := rec.times("/e/k")
		for i, min := range []time.Duration{20, 40, 80, 160} {
			Expect(ts[i+1].Sub(ts[i])).To(BeNumerically(">=", min*time.Millisecond), "retry %d", i+1)
		}
		Consistently(func() int { return rec.count("/e/terminal") }, 300*time.Millisecond).Should(Equal(1))
		Expect(reconcile.IsTerminal(reconcile.TerminalError(errors.New("x")))).To(BeTrue())
		Expect(errors.Is(fmt.Errorf("wrapped: %w", reconcile.TerminalError(errors.New("x"))), reconcile.TerminalError(nil))).To(BeTrue())
		Expect(reconcile.TerminalError(nil).Error()).To(Equal("terminal error"))
	})

	It("recovers a panic as an error and counts it", func(ctx SpecContext) {
		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg)
		Expect(err).NotTo(HaveOccurred())
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if rec.record(req.Key) == 1 {
				panic("nil map")
			}
			return reconcile.Result{}, nil
		})
		_, _, stop := start(cli, "/p/", reconcile.Options{Name: "panics"}, r, gate.Setup{Metrics: m})
		defer stop()
		_, err = cli.Put(ctx, "/p/k", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { return rec.count("/p/k") }).Should(Equal(2))
		Expect(testutil.ToFloat64(m.ReconcilePanics.WithLabelValues("panics"))).To(Equal(1.0))
		Eventually(func() float64 { return testutil.ToFloat64(m.ReconcileTotal.WithLabelValues("panics", "success")) }).Should(Equal(1.0))
		Expect(testutil.ToFloat64(m.ReconcileTotal.WithLabelValues("panics", "error"))).To(Equal(1.0))
	})

	It("counts a fenced reconcile as fenced, not as a failure of the reconciler", func(ctx SpecContext) {
		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg)
		Expect(err).NotTo(HaveOccurred())
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if rec.record(req.Key) == 1 {
				return reconcile.Result{}, fmt.Errorf("writing: %w", &fence.Error{Key: req.Key, Holder: "an earlier owner"})
			}
			return reconcile.Result{}, nil
		})
		_, _, stop := start(cli, "/f/", reconcile.Options{Name: "fenced"}, r, gate.Setup{Metrics: m})
		defer stop()
		_, err = cli.Put(ctx, "/f/k", "v")
		Expect(err).NotTo(HaveOccurred())
		// Without a gate the retry runs, and succeeds.
		Eventually(func() float64 { return testutil.ToFloat64(m.ReconcileTotal.WithLabelValues("fenced", "success")) }).Should(Equal(1.0))
		Expect(testutil.ToFloat64(m.FencedWrites.WithLabelValues("fenced"))).To(Equal(1.0))
		Expect(testutil.ToFloat64(m.ReconcileErrors.WithLabelValues("fenced"))).To(Equal(0.0))
	})

	It("gives every reconcile a logger and the gate's fence, and drops what the gate refuses", func(ctx SpecContext) {
		lease, err := cli.Grant(ctx, 30)
		Expect(err).NotTo(HaveOccurred())
		owner, err := cli.Put(ctx, "/owner", "me", clientv3.WithLease(lease.ID))
		Expect(err).NotTo(HaveOccurred())
		f := fence.Fence{Cmps: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/owner"), "=", owner.Header.Revision)}, Holder: "test owner"}
		jobs, err := store.New[map[string]string](cli, "/g/", store.Options[map[string]string]{})
		Expect(err).NotTo(HaveOccurred())
		var results sync.Map
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			rec.record(req.Key)
			_, hasFence := fence.From(ctx)
			Expect(hasFence).To(BeTrue())
			Expect(reconcile.LoggerFrom(ctx).GetSink()).NotTo(BeNil())
			_, err := jobs.Mutate(ctx, req.Key, func(v *map[string]string) error { (*v)["status"] = "done"; return nil })
			results.Store(req.Key, err)
			if errors.Is(err, fence.ErrFenced) {
				return reconcile.Result{}, reconcile.TerminalError(err)
			}
			return reconcile.Result{}, err
		})
		g := gateFunc(func(ctx context.Context, key string) (context.Context, func(), bool) {
			return fence.With(ctx, f), nil, key != "/g/not-mine"
		})
		_, _, stop := start(cli, "/g/", reconcile.Options{Name: "gated", Logger: GinkgoLogr}, r, gate.Setup{Gate: g})
		defer stop()
		for _, k := range []string{"/g/a", "/g/not-mine"} {
			_, err := cli.Put(ctx, k, `{"spec":"x"}`)
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() any { v, _ := results.Load("/g/a"); return v }).Should(BeNil())
		// Its own status write wakes it once more, and Mutate writes nothing then: no loop.
		Consistently(func() int { return rec.count("/g/a") }, 200*time.Millisecond).Should(BeNumerically("<=", 2))
		Expect(rec.count("/g/not-mine")).To(BeZero())

		_, err = cli.Revoke(ctx, lease.ID) // ownership lost
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/g/a", `{"spec":"y"}`)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error { v, _ := results.Load("/g/a"); e, _ := v.(error); return e }).Should(MatchError(fence.ErrFenced))
		got, err := jobs.Get(ctx, "/g/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value["status"]).To(BeEmpty(), "the fenced write was not accepted")
	})

	It("lets a reconcile in flight finish at shutdown, within the graceful timeout", func(ctx SpecContext) {
		entered := make(chan struct{})
		var finished, cancelled atomic.Bool
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if req.Key == "/s/slow" {
				close(entered)
				select {
				case <-time.After(300 * time.Millisecond):
					finished.Store(true)
				case <-ctx.Done():
					cancelled.Store(true)
				}
			}
			return reconcile.Result{}, nil
		})
		_, _, stop := start(cli, "/s/", reconcile.Options{Name: "graceful", GracefulShutdownTimeout: 5 * time.Second}, r)
		_, err := cli.Put(ctx, "/s/slow", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(entered).Should(BeClosed())
		stop()
		Expect(finished.Load()).To(BeTrue())
		Expect(cancelled.Load()).To(BeFalse())
	})

	It("cancels a reconcile that outlives the graceful timeout", func(ctx SpecContext) {
		entered := make(chan struct{})
		var cancelled atomic.Bool
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			close(entered)
			<-ctx.Done()
			cancelled.Store(true)
			return reconcile.Result{}, ctx.Err()
		})
		_, _, stop := start(cli, "/t/", reconcile.Options{Name: "timeout", GracefulShutdownTimeout: 100 * time.Millisecond}, r)
		_, err := cli.Put(ctx, "/t/k", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(entered).Should(BeClosed())
		stop()
		Expect(cancelled.Load()).To(BeTrue())
	})

	It("Resync queues every cached key again through the handlers", func(ctx SpecContext) {
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			rec.record(req.Key)
			return reconcile.Result{}, nil
		})
		for _, k := range []string{"/rs/a", "/rs/b"} {
			_, err := cli.Put(ctx, k, "v")
			Expect(err).NotTo(HaveOccurred())
		}
		c, _, stop := start(cli, "/rs/", reconcile.Options{Name: "resync"}, r)
		defer stop()
		Eventually(func() []int { return []int{rec.count("/rs/a"), rec.count("/rs/b")} }).Should(Equal([]int{1, 1}))
		c.Resync()
		Eventually(func() []int { return []int{rec.count("/rs/a"), rec.count("/rs/b")} }).Should(Equal([]int{2, 2}))
	})

	It("with a Filter gate, queues only what the filter wants, and ResyncWhere brings the rest in later", func(ctx SpecContext) {
		rec := newCalls()
		release := make(chan struct{})
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			rec.record(req.Key)
			if req.Key == "/f/a" {
				<-release // holds the only worker, so that queued keys stay queued
			}
			return reconcile.Result{}, nil
		})
		var wantB atomic.Bool
		f := &filterGate{wants: func(req reconcile.Request) bool { return req.Key != "/f/b" || wantB.Load() }}
		for _, k := range []string{"/f/a", "/f/b", "/f/c"} {
			_, err := cli.Put(ctx, k, "v")
			Expect(err).NotTo(HaveOccurred())
		}
		c, _, stop := start(cli, "/f/", reconcile.Options{Name: "filtered"}, r, gate.Setup{Gate: f})
		defer stop()
		Eventually(func() int { return rec.count("/f/a") }).Should(Equal(1))
		// /f/c waits behind /f/a; /f/b was never queued.
		Eventually(c.Queued).Should(ConsistOf(reconcile.Request{Key: "/f/c"}))
		c.Enqueue(reconcile.Request{Key: "/f/b"})
		Expect(c.Queued()).To(ConsistOf(reconcile.Request{Key: "/f/c"}))

		wantB.Store(true)
		c.ResyncWhere(func(req reconcile.Request) bool { return req.Key == "/f/b" })
		Expect(c.Queued()).To(ConsistOf(reconcile.Request{Key: "/f/c"}, reconcile.Request{Key: "/f/b"}))
		close(release)
		Eventually(func() []int { return []int{rec.count("/f/a"), rec.count("/f/b"), rec.count("/f/c")} }).Should(Equal([]int{1, 1, 1}))
	})

	It("rejects bad options with clear errors", func() {
		noop := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })
		_, err := reconcile.New(reconcile.Options{}, noop)
		Expect(err).To(MatchError(ContainSubstring("Name must not be empty")))
		_, err = reconcile.New(reconcile.Options{Name: "x"}, nil)
		Expect(err).To(MatchError(ContainSubstring(`controller "x": reconciler must not be nil`)))
		_, err = reconcile.New(reconcile.Options{Name: "x", MaxConcurrentReconciles: -1}, noop)
		Expect(err).To(MatchError(ContainSubstring("MaxConcurrentReconciles must be at least 1, got -1")))
		c, err := reconcile.New(reconcile.Options{Name: "x"}, noop)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Watch(nil, nil)).To(MatchError(ContainSubstring("source must not be nil")))
	})
})

// gateFunc queues every key and admits what it returns ok for.
type gateFunc func(context.Context, string) (context.Context, func(), bool)

func (g gateFunc) Wants(string) bool { return true }

func (g gateFunc) Admit(ctx context.Context, key string) (context.Context, func(), bool) {
	return g(ctx, key)
}

// filterGate admits everything, unfenced, and queues what wants accepts.
type filterGate struct{ wants func(reconcile.Request) bool }

func (g *filterGate) Admit(ctx context.Context, _ string) (context.Context, func(), bool) {
	return ctx, nil, true
}

func (g *filterGate) Wants(key string) bool { return g.wants(reconcile.Request{Key: key}) }
