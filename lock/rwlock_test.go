package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
)

// newRW returns a read-write lock on key through a client of its own, closed after the spec.
func newRW(key string) *lock.RWLock {
	rw, err := lock.NewRW(newClient(), key, lock.Options{TTL: 3 * time.Second, Logger: GinkgoLogr})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(rw.Close)
	return rw
}

var _ = Describe("RWLock", func() {
	It("lets readers of different processes share it, and queues a later reader behind a waiting writer", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("rw")
		r1, r2, w, r3 := newRW(key), newRW(key), newRW(key), newRW(key)

		By("two readers hold it together")
		Expect(r1.RLock(ctx)).To(Succeed())
		Expect(r2.RLock(ctx)).To(Succeed())
		Expect(w.TryLock(ctx)).To(BeFalse())

		By("a writer waits for them")
		wDone := async(func() error { return w.Lock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(3))
		Consistently(wDone).WithTimeout(200 * time.Millisecond).ShouldNot(Receive())

		By("a reader that comes after the waiting writer waits too")
		Expect(r3.TryRLock(ctx)).To(BeFalse())
		r3Done := async(func() error { return r3.RLock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(4))
		Consistently(r3Done).WithTimeout(200 * time.Millisecond).ShouldNot(Receive())

		By("the writer gets it when the earlier readers are gone, and holds it alone")
		Expect(r1.RUnlock(ctx)).To(Succeed())
		Consistently(wDone).WithTimeout(100 * time.Millisecond).ShouldNot(Receive())
		Expect(r2.RUnlock(ctx)).To(Succeed())
		Eventually(wDone).WithContext(ctx).Should(Receive(Succeed()))
		Expect(w.Token()).To(BeNumerically(">", 0))
		Expect(r1.TryRLock(ctx)).To(BeFalse())
		Consistently(r3Done).WithTimeout(200 * time.Millisecond).ShouldNot(Receive())

		By("the queued reader gets it after the writer")
		Expect(w.Unlock(ctx)).To(Succeed())
		Eventually(r3Done).WithContext(ctx).Should(Receive(Succeed()))
		Expect(r1.TryRLock(ctx)).To(BeTrue())
		Expect(r1.RUnlock(ctx)).To(Succeed())
		Expect(r3.RUnlock(ctx)).To(Succeed())
		Expect(r3.RUnlock(ctx)).To(MatchError(lock.ErrNotLocked))
		Expect(queue(ctx, key)).To(BeEmpty())
	})

	It("keeps writers exclusive and readers apart from writers under contention", specTimeout, func(ctx SpecContext) {
		const readers, writers, rounds = 3, 2, 8
		key, data := uniqueKey("rw-stress"), uniqueKey("rw-data")
		var reading, writing, violations, maxReading atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, readers+writers)
		run := func(rw *lock.RWLock, write bool) {
			defer GinkgoRecover()
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				if err := step(ctx, rw, write, data, &reading, &writing, &violations, &maxReading); err != nil {
					errs <- err
					return
				}
			}
		}
		for i := 0; i < readers+writers; i++ {
			rw := newRW(key)
			wg.Add(1)
			go run(rw, i < writers)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(violations.Load()).To(BeZero())
		resp, err := cluster.Client().Get(ctx, data)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs[0].Version).To(BeEquivalentTo(writers * rounds))
		Expect(queue(ctx, key)).To(BeEmpty())
		AddReportEntry("most readers at once", maxReading.Load())
	})

	It("shares read locks between goroutines of one RWLock and fences its writer", specTimeout, func(ctx SpecContext) {
		key, data := uniqueKey("rw-local"), uniqueKey("rw-local-data")
		rw, other := newRW(key), newRW(key)
		Expect(rw.RLock(ctx)).To(Succeed())
		Expect(rw.RLock(ctx)).To(Succeed())
		Expect(other.TryLock(ctx)).To(BeFalse())
		Expect(rw.RUnlock(ctx)).To(Succeed())
		Expect(other.TryLock(ctx)).To(BeFalse())
		Expect(rw.RUnlock(ctx)).To(Succeed())

		Expect(rw.Guard()).NotTo(BeNil())
		miss, err := cluster.Client().Txn(ctx).If(rw.Guard()).Then(clientv3.OpPut(data, "x")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(miss.Succeeded).To(BeFalse(), "Guard of a lock not held")
		Expect(rw.Lock(ctx)).To(Succeed())
		hit, err := cluster.Client().Txn(ctx).If(rw.Guard()).Then(clientv3.OpPut(data, "x")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(hit.Succeeded).To(BeTrue())
		Expect(other.TryRLock(ctx)).To(BeFalse())
		Expect(rw.Unlock(ctx)).To(Succeed())
	})

	It("ends a waiting reader whose session expires with an error", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("rw-expired")
		w, r := newRW(key), newRW(key)
		Expect(w.Lock(ctx)).To(Succeed())
		done := async(func() error { return r.RLock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(2))
		revoke(ctx, queue(ctx, key)[1])
		Expect(w.Unlock(ctx)).To(Succeed())
		Eventually(done).WithContext(ctx).Should(Receive(MatchError(lock.ErrSessionExpired)))
		Expect(r.RLock(ctx)).To(Succeed())
		Expect(r.RUnlock(ctx)).To(Succeed())
	})

	It("Close releases read and write holds and ends waiting calls", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("rw-close")
		a, b := newRW(key), newRW(key)
		Expect(a.RLock(ctx)).To(Succeed())
		Expect(a.RLock(ctx)).To(Succeed())
		done := async(func() error { return b.Lock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(3))
		Expect(b.Close()).To(Succeed())
		Eventually(done).WithContext(ctx).Should(Receive(MatchError(lock.ErrClosed)))
		Expect(a.Close()).To(Succeed())
		Expect(queue(ctx, key)).To(BeEmpty())
		Expect(a.RLock(ctx)).To(MatchError(lock.ErrClosed))
	})
})

// step takes rw for reading or writing once, checks that nobody holds it against the rules
// meanwhile, and lets a writer make a fenced write.
func step(ctx context.Context, rw *lock.RWLock, write bool, data string, reading, writing, violations, maxReading *atomic.Int32) error {
	if write {
		if err := rw.Lock(ctx); err != nil {
			return err
		}
		if writing.Add(1) != 1 || reading.Load() != 0 {
			violations.Add(1)
		}
		txn, err := cluster.Client().Txn(ctx).If(rw.Guard()).Then(clientv3.OpPut(data, fmt.Sprint(rw.Token()))).Commit()
		if err == nil && !txn.Succeeded {
			err = errors.New("a writer's fenced write was rejected")
		}
		writing.Add(-1)
		return errors.Join(err, rw.Unlock(ctx))
	}
	if err := rw.RLock(ctx); err != nil {
		return err
	}
	n := reading.Add(1)
	if writing.Load() != 0 {
		violations.Add(1)
	}
	for {
		m := maxReading.Load()
		if n <= m || maxReading.CompareAndSwap(m, n) {
			break
		}
	}
	// Hold the read lock for a moment so that readers have a chance to overlap.
	time.Sleep(5 * time.Millisecond)
	reading.Add(-1)
	return rw.RUnlock(ctx)
}
