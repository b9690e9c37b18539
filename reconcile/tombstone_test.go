package reconcile_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/gate"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// seen records what each reconcile of a key found in its context.
type seen struct {
	mu  sync.Mutex
	got map[string][]string // per key: the tombstone's value, or "-" when there was none
}

func (s *seen) record(ctx context.Context, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := "-"
	if t, ok := reconcile.TombstoneFrom(ctx); ok {
		v = string(t.KV.Value)
	}
	s.got[key] = append(s.got[key], v)
}

func (s *seen) of(key string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[key]...)
}

var nothing = reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
	return reconcile.Result{}, nil
})

var _ = Describe("tombstones", func() {
	var cli *clientv3.Client
	BeforeEach(func() { cli = etcdtest.New(GinkgoT()).Client() })

	It("hands a deleted key's last value to its reconcile until one ends without an error", func(ctx SpecContext) {
		s := &seen{got: map[string][]string{}}
		var failOnce atomic.Bool
		failOnce.Store(true)
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			s.record(ctx, req.Key)
			if _, deleted := reconcile.TombstoneFrom(ctx); deleted && failOnce.CompareAndSwap(true, false) {
				return reconcile.Result{}, errors.New("cleanup failed")
			}
			return reconcile.Result{}, nil
		})
		c, _, stop := start(cli, "/t/", reconcile.Options{Name: "tombs", BaseDelay: time.Millisecond}, r)
		defer stop()
		_, err := cli.Put(ctx, "/t/a", "last")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() []string { return s.of("/t/a") }).Should(Equal([]string{"-"}))
		_, err = cli.Delete(ctx, "/t/a")
		Expect(err).NotTo(HaveOccurred())
		// The failed reconcile is retried with the tombstone; the one that succeeds drops it.
		Eventually(func() []string { return s.of("/t/a") }).Should(Equal([]string{"-", "last", "last"}))
		Eventually(func() bool { _, ok := c.Tombstone("/t/a"); return ok }).Should(BeFalse())

		// A key deleted and created again is reconciled as present, without a tombstone.
		_, err = cli.Put(ctx, "/t/b", "one")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() []string { return s.of("/t/b") }).ShouldNot(BeEmpty())
		_, err = cli.Delete(ctx, "/t/b")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/t/b", "two")
		Expect(err).NotTo(HaveOccurred())
		// The delete may be reconciled with its tombstone before the put arrives; once it has
		// arrived, the key is reconciled as present.
		Eventually(func() bool { _, ok := c.Tombstone("/t/b"); return ok }).Should(BeFalse())
		Eventually(func() string { got := s.of("/t/b"); return got[len(got)-1] }).Should(Equal("-"))
	})

	It("keeps a tombstone where the key is not reconciled, hands it over on a resync, and lets it expire", func(ctx SpecContext) {
		s := &seen{got: map[string][]string{}}
		var admit atomic.Bool
		g := gateFunc(func(ctx context.Context, key string) (context.Context, func(), bool) {
			return ctx, nil, admit.Load()
		})
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			s.record(ctx, req.Key)
			return reconcile.Result{}, nil
		})
		c, _, stop := start(cli, "/f/", reconcile.Options{Name: "follower", TombstoneTTL: time.Hour}, r, gate.Setup{Gate: g})
		defer stop()
		Eventually(c.HasSynced).Should(BeTrue()) // the key's put and delete come after the initial list
		_, err := cli.Put(ctx, "/f/a", "owned-elsewhere")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Delete(ctx, "/f/a")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() bool { _, ok := c.Tombstone("/f/a"); return ok }).Should(BeTrue())
		Eventually(c.QueueLen).Should(BeZero()) // taken and dropped by the gate
		Expect(s.of("/f/a")).To(BeEmpty())

		// This replica takes the key over (as a new leader does): the resync hands the
		// delete to the reconciler, with the last value.
		admit.Store(true)
		c.Resync()
		Eventually(func() []string { return s.of("/f/a") }).Should(Equal([]string{"owned-elsewhere"}))
		Eventually(func() bool { _, ok := c.Tombstone("/f/a"); return ok }).Should(BeFalse())
	})

	It("drops the tombstones of keys it never reconciles after the TTL", func(ctx SpecContext) {
		g := gateFunc(func(ctx context.Context, key string) (context.Context, func(), bool) { return ctx, nil, false })
		c, _, stop := start(cli, "/x/", reconcile.Options{Name: "expiry", TombstoneTTL: time.Minute}, nothing, gate.Setup{Gate: g})
		defer stop()
		Eventually(c.HasSynced).Should(BeTrue()) // the keys' puts and deletes come after the initial list
		var mu sync.Mutex
		now := time.Now()
		reconcile.SetClock(c, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
		advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
		held := func() (n int) {
			for _, k := range []string{"/x/a", "/x/b", "/x/c"} {
				if _, ok := c.Tombstone(k); ok {
					n++
				}
			}
			return n
		}
		for _, k := range []string{"/x/a", "/x/b"} {
			_, err := cli.Put(ctx, k, "v")
			Expect(err).NotTo(HaveOccurred())
			_, err = cli.Delete(ctx, k)
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(held).Should(Equal(2))
		advance(40 * time.Second)
		_, err := cli.Put(ctx, "/x/c", "v")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Delete(ctx, "/x/c")
		Expect(err).NotTo(HaveOccurred())
		Eventually(held).Should(Equal(3))
		advance(30 * time.Second) // a and b are 70 s old, c 30 s
		Expect(held()).To(Equal(1))
		_, ok := c.Tombstone("/x/c")
		Expect(ok).To(BeTrue())
		advance(30 * time.Second)
		Expect(held()).To(BeZero())
	})

	It("rejects a negative TombstoneTTL", func() {
		_, err := reconcile.New(reconcile.Options{Name: "x", TombstoneTTL: -time.Second}, nothing)
		Expect(err).To(MatchError(ContainSubstring("durations must not be negative")))
	})
})
