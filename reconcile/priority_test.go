package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// putMany writes n keys under prefix, 128 to a transaction.
func putMany(ctx context.Context, cli *clientv3.Client, prefix string, n int) {
	for i := 0; i < n; i += 128 {
		var ops []clientv3.Op
		for j := i; j < min(i+128, n); j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%06d", prefix, j), "v"))
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		Expect(err).NotTo(HaveOccurred())
	}
}

// order records the keys a reconciler was called with, in order, and holds the reconcile of
// the key hold while a hold channel is set.
type order struct {
	mu       sync.Mutex
	keys     []string
	hold     string
	released chan struct{}
}

func (o *order) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	o.mu.Lock()
	o.keys = append(o.keys, req.Key)
	release := o.released
	if req.Key != o.hold {
		release = nil
	}
	o.mu.Unlock()
	if release != nil {
		<-release
	}
	return reconcile.Result{}, nil
}

// holdNext makes the next reconcile of key wait until the returned function is called.
func (o *order) holdNext(key string) func() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hold, o.released = key, make(chan struct{})
	ch := o.released
	return func() {
		o.mu.Lock()
		o.released = nil
		o.mu.Unlock()
		close(ch)
	}
}

// since returns the keys reconciled from index i on.
func (o *order) since(i int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.keys[min(i, len(o.keys)):]...)
}

func (o *order) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.keys)
}

var _ = Describe("a controller's queue priorities", func() {
	var cli *clientv3.Client
	BeforeEach(func() { cli = etcdtest.New(GinkgoT()).Client() })

	It("reconciles a live change before the backlog of a 20k-key resync, and drains the backlog", func(ctx SpecContext) {
		const keys = 20000
		putMany(ctx, cli, "/pq/", keys)
		o := &order{}
		release := o.holdNext("/pq/000000") // holds the only worker on the first key of the list
		c, _, stop := start(cli, "/pq/", reconcile.Options{Name: "priority"}, o)
		defer stop()

		By("the initial list: a live change goes next, before 19999 listed keys")
		Eventually(c.QueueLen, 30*time.Second).Should(Equal(keys - 1))
		_, err := cli.Put(ctx, "/pq/live", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(c.QueueLen).Should(Equal(keys))
		release()
		Eventually(o.len).Should(BeNumerically(">=", 2))
		Expect(o.since(0)[:2]).To(Equal([]string{"/pq/000000", "/pq/live"}))
		Eventually(o.len, 60*time.Second).Should(Equal(keys + 1))

		By("a Resync: a live change to a key it queued moves it up, a new key goes before the backlog too")
		release = o.holdNext("/pq/hold")
		mark := o.len()
		_, err = cli.Put(ctx, "/pq/hold", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(o.len).Should(Equal(mark + 1)) // the worker holds /pq/hold
		c.Resync()
		Expect(c.QueueLen()).To(Equal(keys + 1)) // every cached key but the one in process
		_, err = cli.Put(ctx, "/pq/live", "v2")  // queued by the resync: promoted
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/pq/live2", "v") // new: the source delivers it after /pq/live
		Expect(err).NotTo(HaveOccurred())
		Eventually(c.QueueLen).Should(Equal(keys + 2))
		release()
		Eventually(o.len).Should(BeNumerically(">=", mark+3))
		Expect(o.since(mark)[:3]).To(Equal([]string{"/pq/hold", "/pq/live", "/pq/live2"}))
		By("the backlog drains: every key reconciled once more")
		// /pq/hold, then the 20000 keys, /pq/live, /pq/live2 and /pq/hold again (the resync
		// added it while it was in process).
		Eventually(o.len, 60*time.Second).Should(Equal(mark + 1 + keys + 3))
	})

	It("retries as its RateLimiter says, and refuses BaseDelay with a RateLimiter", func(ctx SpecContext) {
		l := &recordingLimiter{d: 30 * time.Millisecond}
		rec := newCalls()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if rec.record(req.Key) <= 2 {
				return reconcile.Result{}, errors.New("not yet")
			}
			return reconcile.Result{}, nil
		})
		_, _, stop := start(cli, "/rl/", reconcile.Options{Name: "limited", RateLimiter: l}, r)
		defer stop()
		_, err := cli.Put(ctx, "/rl/k", "v")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { return rec.count("/rl/k") }).Should(Equal(3))
		ts := rec.times("/rl/k")
		Expect(ts[1].Sub(ts[0])).To(BeNumerically(">=", 30*time.Millisecond))
		Expect(ts[2].Sub(ts[1])).To(BeNumerically(">=", 30*time.Millisecond))
		Eventually(l.counts).Should(Equal([2]int{2, 1}), "two Whens, then a Forget after the success")

		noop := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil })
		_, err = reconcile.New(reconcile.Options{Name: "x", RateLimiter: l, BaseDelay: time.Millisecond}, noop)
		Expect(err).To(MatchError(ContainSubstring("BaseDelay and MaxDelay configure the default RateLimiter")))
	})

	It("builds client-go's default rate limiter from public parts", func() {
		l := reconcile.NewMaxOfRateLimiter(reconcile.NewExponentialRateLimiter(time.Millisecond, 4*time.Millisecond), reconcile.NewBucketRateLimiter(1, 3))
		var got []time.Duration
		for range 4 {
			got = append(got, l.When("k"))
		}
		Expect(got[:3]).To(Equal([]time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}))
		Expect(got[3]).To(BeNumerically(">", 900*time.Millisecond), "the bucket is empty after its burst of 3")
		Expect(l.NumRequeues("k")).To(Equal(4))
		l.Forget("k")
		Expect(l.NumRequeues("k")).To(BeZero())
		Expect(reconcile.DefaultRateLimiter().When("k")).To(Equal(reconcile.DefaultBaseDelay))
	})
})

// recordingLimiter delays every retry by d and counts its Whens and Forgets.
type recordingLimiter struct {
	d              time.Duration
	mu             sync.Mutex
	n              map[string]int
	whens, forgets int
}

func (l *recordingLimiter) When(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	l.n[key]++
	l.whens++
	return l.d
}

func (l *recordingLimiter) Forget(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.n, key)
	l.forgets++
}

func (l *recordingLimiter) NumRequeues(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[key]
}

// counts returns the Whens and the Forgets.
func (l *recordingLimiter) counts() [2]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return [2]int{l.whens, l.forgets}
}
