package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// lastSeen records, per key, the value a reconcile last saw in the controller's cache.
type lastSeen struct {
	mu sync.Mutex
	v  map[string]string
}

func (l *lastSeen) set(k, v string) {
	l.mu.Lock()
	l.v[k] = v
	l.mu.Unlock()
}

func (l *lastSeen) snapshot() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.v))
	for k, v := range l.v {
		out[k] = v
	}
	return out
}

// cacheRecorder is a reconciler that records what the manager's cache holds for the key.
func cacheRecorder(seen *lastSeen, cache *manager.Cache) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		if kv, ok := cache.Get(req.Key); ok {
			seen.set(req.Key, string(kv.Value))
		} else {
			seen.set(req.Key, "<deleted>")
		}
		return reconcile.Result{}, nil
	})
}

// runManager starts mgr and returns a function that stops it and waits.
func runManager(mgr *manager.Manager) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		Eventually(done, 30*time.Second).Should(Receive(BeNil()))
	}
}

// finalState reads prefix from etcd; keys that the writer touched but that are gone map to
// "<deleted>".
func finalState(ctx context.Context, cli *clientv3.Client, prefix string, touched []string) map[string]string {
	want := map[string]string{}
	for _, k := range touched {
		want[k] = "<deleted>"
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	Expect(err).NotTo(HaveOccurred())
	for _, kv := range resp.Kvs {
		want[string(kv.Key)] = string(kv.Value)
	}
	return want
}

var _ = Describe("a controller under load and faults", func() {
	It("reconciles the final state of each of 100k keys written by a concurrent writer", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT())
		mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "load", DisableLeaderElection: true})
		Expect(err).NotTo(HaveOccurred())
		seen := &lastSeen{v: map[string]string{}}
		err = manager.NewControllerManagedBy(mgr).Named("load").For(source.Prefix("/load/")).
			WithOptions(reconcile.Options{MaxConcurrentReconciles: 8}).Complete(cacheRecorder(seen, mgr.GetCache()))
		Expect(err).NotTo(HaveOccurred())

		// Half the keys exist before the controller starts (its initial list), half are
		// written while it runs; then a tenth of all are rewritten.
		const keys = 100000
		touched := make([]string, keys)
		for i := range touched {
			touched[i] = fmt.Sprintf("/load/%06d", i)
		}
		write := func(from, to int, value string) {
			for i := from; i < to; i += 128 {
				var ops []clientv3.Op
				for j := i; j < min(i+128, to); j++ {
					ops = append(ops, clientv3.OpPut(touched[j], value))
				}
				_, err := c.Client().Txn(ctx).Then(ops...).Commit()
				Expect(err).NotTo(HaveOccurred())
			}
		}
		write(0, keys/2, "v1")
		stop := runManager(mgr)
		defer stop()
		write(keys/2, keys, "v1")
		for i := 0; i < keys; i += 10 {
			_, err := c.Client().Put(ctx, touched[i], "v2")
			Expect(err).NotTo(HaveOccurred())
		}
		want := finalState(ctx, c.Client(), "/load/", touched)
		Eventually(seen.snapshot, 3*time.Minute, 100*time.Millisecond).Should(Equal(want))
	})

	It("loses no change across an etcd restart and a compaction while it lags, relisting at most once", func(ctx SpecContext) {
		c := etcdtest.NewProcesses(GinkgoT(), etcdtest.WithMembers(3), etcdtest.WithElectionTimeout(50*time.Millisecond, 500*time.Millisecond))
		// The controller talks to member 0 only; the writer to the others.
		cfg := c.ClientConfig()
		cfg.Endpoints = []string{c.Endpoint(0)}
		ctrlCli, err := clientv3.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		defer ctrlCli.Close()
		cfg.Endpoints = []string{c.Endpoint(1), c.Endpoint(2)}
		cfg.Logger = zap.NewNop()
		writer, err := clientv3.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		defer writer.Close()

		mgr, err := manager.New(manager.Options{Client: ctrlCli, Name: "faults", DisableLeaderElection: true})
		Expect(err).NotTo(HaveOccurred())
		seen := &lastSeen{v: map[string]string{}}
		err = manager.NewControllerManagedBy(mgr).Named("faults").For(source.Prefix("/f/")).
			WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).Complete(cacheRecorder(seen, mgr.GetCache()))
		Expect(err).NotTo(HaveOccurred())
		var touched []string
		put := func(i int, v string) {
			k := fmt.Sprintf("/f/%03d", i)
			touched = append(touched, k)
			Eventually(func() error {
				wctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				_, err := writer.Put(wctx, k, v)
				return err
			}).Should(Succeed())
		}
		for i := 0; i < 100; i++ {
			put(i, "a")
		}
		stop := runManager(mgr)
		defer stop()
		Eventually(func() int { return len(seen.snapshot()) }).Should(Equal(100))

		By("restarting the member the controller watches through")
		Expect(c.Restart(ctx, 0)).To(Succeed())
		for i := 50; i < 150; i++ {
			put(i, "b")
		}
		Eventually(seen.snapshot, 30*time.Second).Should(Equal(finalState(ctx, writer, "/f/", touched)))

		By("pausing it while the others change, delete and compact the history")
		Expect(c.Pause(0)).To(Succeed())
		for i := 0; i < 150; i += 3 {
			_, err := writer.Delete(ctx, fmt.Sprintf("/f/%03d", i))
			Expect(err).NotTo(HaveOccurred())
		}
		for i := 1; i < 200; i += 3 {
			put(i, "c")
		}
		resp, err := writer.Get(ctx, "rev")
		Expect(err).NotTo(HaveOccurred())
		_, err = writer.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Resume(0)).To(Succeed())
		Eventually(seen.snapshot, 60*time.Second).Should(Equal(finalState(ctx, writer, "/f/", touched)))
		src, err := mgr.GetCache().Source("/f/")
		Expect(err).NotTo(HaveOccurred())
		Expect(src.Stats().Relists).To(BeNumerically("<=", 1))
	})

	It("retries a conflicting Update until it converges, while a value that does not decode stops only its own key", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT())
		type counter struct{ N, Touched int }
		counters, err := store.New[counter](c.Client(), "/n/", store.Options[counter]{})
		Expect(err).NotTo(HaveOccurred())
		mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "conflicts", DisableLeaderElection: true})
		Expect(err).NotTo(HaveOccurred())
		var mu sync.Mutex
		failures := map[string]int{}
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			obj, err := counters.Get(ctx, req.Key)
			if errors.Is(err, store.ErrNotFound) {
				return reconcile.Result{}, nil
			}
			if err != nil {
				mu.Lock()
				failures[req.Key]++
				mu.Unlock()
				return reconcile.Result{}, err
			}
			if obj.Value.N >= 10 {
				return reconcile.Result{}, nil
			}
			obj.Value.N++
			_, err = counters.Update(ctx, req.Key, &obj.Value, obj.ModRevision) // the writer below races it
			return reconcile.Result{}, err
		})
		Expect(manager.NewControllerManagedBy(mgr).Named("conflicts").For(source.Prefix("/n/")).
			WithOptions(reconcile.Options{MaxConcurrentReconciles: 2}).Complete(r)).To(Succeed())
		stop := runManager(mgr)
		defer stop()
		_, err = c.Client().Put(ctx, "/n/bad", "{not json")
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i < 5; i++ {
			_, err := counters.Create(ctx, counters.Key(fmt.Sprint(i)), &counter{})
			Expect(err).NotTo(HaveOccurred())
		}
		// Another writer updates the same objects, so that the reconciles' Updates meet
		// conflicts; neither side may lose the other's changes.
		for j := 0; j < 20; j++ {
			for i := 0; i < 5; i++ {
				_, err := counters.Mutate(ctx, counters.Key(fmt.Sprint(i)), func(v *counter) error { v.Touched++; return nil })
				Expect(err).NotTo(HaveOccurred())
			}
		}
		Eventually(func() []counter {
			var cs []counter
			for i := 0; i < 5; i++ {
				obj, err := counters.Get(ctx, counters.Key(fmt.Sprint(i)))
				Expect(err).NotTo(HaveOccurred())
				cs = append(cs, obj.Value)
			}
			return cs
		}, 20*time.Second).Should(HaveEach(counter{N: 10, Touched: 20}))
		mu.Lock()
		defer mu.Unlock()
		Expect(failures["/n/bad"]).To(BeNumerically(">=", 2), "the bad key is retried with backoff")
		Expect(failures).To(HaveLen(1), "only the bad key fails")
	})
})
