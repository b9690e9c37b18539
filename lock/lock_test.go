package lock_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdkit/etcdkit/lock"
)

// newLock returns a lock on key through cli, closed after the spec.
func newLock(cli *clientv3.Client, key string, ttl time.Duration) *lock.Lock {
	l, err := lock.New(cli, key, lock.Options{TTL: ttl, Logger: GinkgoLogr})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(l.Close)
	return l
}

var _ = Describe("Lock", func() {
	It("excludes every other holder under contention: fenced increments add up exactly", specTimeout, func(ctx SpecContext) {
		const workers, rounds = 5, 20
		key, counter := uniqueKey("counter-lock"), uniqueKey("counter")
		var inside, overlaps atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			l := newLock(newClient(), key, 5*time.Second)
			cli := newClient()
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				for i := 0; i < rounds; i++ {
					err := l.WithLock(ctx, func() error {
						if inside.Add(1) != 1 {
							overlaps.Add(1)
						}
						defer inside.Add(-1)
						resp, err := cli.Get(ctx, counter)
						if err != nil {
							return err
						}
						n := 0
						if len(resp.Kvs) == 1 {
							n, _ = strconv.Atoi(string(resp.Kvs[0].Value))
						}
						txn, err := cli.Txn(ctx).If(l.Guard()).Then(clientv3.OpPut(counter, strconv.Itoa(n+1))).Commit()
						if err != nil {
							return err
						}
						if !txn.Succeeded {
							return errors.New("a fenced write of a holder was rejected")
						}
						return nil
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			Expect(err).NotTo(HaveOccurred())
		}
		Expect(overlaps.Load()).To(BeZero())
		resp, err := cluster.Client().Get(ctx, counter)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Kvs[0].Value)).To(Equal(strconv.Itoa(workers * rounds)))
		Expect(queue(ctx, key)).To(BeEmpty())
	})

	It("passes to the next waiter when the holder's lease ends, and fences the old holder", specTimeout, func(ctx SpecContext) {
		key, data := uniqueKey("fenced"), uniqueKey("data")
		a, b := newLock(newClient(), key, 3*time.Second), newLock(newClient(), key, 3*time.Second)
		Expect(a.Lock(ctx)).To(Succeed())
		oldToken, oldGuard, lost := a.Token(), a.Guard(), a.Lost()
		Expect(oldToken).To(BeNumerically(">", 0))
		Consistently(lost).WithTimeout(200 * time.Millisecond).ShouldNot(BeClosed())

		bDone := async(func() error { return b.Lock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(2))

		By("the holder's lease ends, as after a pause past its TTL")
		revoke(ctx, queue(ctx, key)[0])
		Eventually(bDone).WithContext(ctx).Should(Receive(Succeed()))
		Eventually(lost).WithContext(ctx).Should(BeClosed())
		Expect(b.Token()).To(BeNumerically(">", oldToken))

		By("the old holder's fenced write is rejected, the new holder's accepted")
		stale, err := cluster.Client().Txn(ctx).If(oldGuard).Then(clientv3.OpPut(data, "from the old holder")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(stale.Succeeded).To(BeFalse())
		stale, err = cluster.Client().Txn(ctx).If(a.Guard()).Then(clientv3.OpPut(data, "from the old holder")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(stale.Succeeded).To(BeFalse())
		fresh, err := cluster.Client().Txn(ctx).If(b.Guard()).Then(clientv3.OpPut(data, "from the new holder")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(fresh.Succeeded).To(BeTrue())

		By("the old holder learns it at Unlock, and its Lock works again on a new session")
		Expect(a.Unlock(ctx)).To(MatchError(lock.ErrLost))
		Expect(a.Token()).To(BeZero())
		aAgain := async(func() error { return a.Lock(ctx) })
		Consistently(aAgain).WithTimeout(200 * time.Millisecond).ShouldNot(Receive())
		Expect(b.Unlock(ctx)).To(Succeed())
		Eventually(aAgain).WithContext(ctx).Should(Receive(Succeed()))
		Expect(a.Unlock(ctx)).To(Succeed())
	})

	It("closes Lost when someone deletes the lock key", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("deleted")
		l := newLock(newClient(), key, 3*time.Second)
		Expect(l.Lock(ctx)).To(Succeed())
		lost := l.Lost()
		_, err := cluster.Client().Delete(ctx, key+"/", clientv3.WithPrefix())
		Expect(err).NotTo(HaveOccurred())
		Eventually(lost).WithContext(ctx).Should(BeClosed())
		Expect(l.Unlock(ctx)).To(MatchError(lock.ErrLost))
	})

	It("closes Lost at Unlock, and gives a closed channel when nothing is held", specTimeout, func(ctx SpecContext) {
		l := newLock(newClient(), uniqueKey("unlocked"), 3*time.Second)
		Expect(l.Lost()).To(BeClosed())
		Expect(l.Lock(ctx)).To(Succeed())
		lost := l.Lost()
		Expect(lost).NotTo(BeClosed())
		Expect(l.Unlock(ctx)).To(Succeed())
		Expect(lost).To(BeClosed())
	})

	It("returns an error, never success, when the waiter's session expires while it waits", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("expired-waiter")
		holder, waiter := newLock(newClient(), key, 3*time.Second), newLock(newClient(), key, 3*time.Second)
		Expect(holder.Lock(ctx)).To(Succeed())

		By("the waiter's lease ends, and at once the lock becomes free")
		done := async(func() error { return waiter.Lock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(2))
		revoke(ctx, queue(ctx, key)[1])
		Expect(holder.Unlock(ctx)).To(Succeed())
		Eventually(done).WithContext(ctx).Should(Receive(MatchError(lock.ErrSessionExpired)))
		Expect(waiter.Token()).To(BeZero())
		Expect(queue(ctx, key)).To(BeEmpty())

		By("the waiter's lease ends while the lock stays taken")
		Expect(holder.Lock(ctx)).To(Succeed())
		done = async(func() error { return waiter.Lock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(2))
		revoke(ctx, queue(ctx, key)[1])
		Eventually(done).WithContext(ctx).Should(Receive(MatchError(lock.ErrSessionExpired)))
		Expect(queue(ctx, key)).To(HaveLen(1))

		By("the waiter's next Lock starts a new session and gets the lock")
		Expect(holder.Unlock(ctx)).To(Succeed())
		Expect(waiter.Lock(ctx)).To(Succeed())
		Expect(waiter.Unlock(ctx)).To(Succeed())
	})

	It("starts a new session when the last one ended between two uses", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("between-uses")
		l := newLock(newClient(), key, 3*time.Second)
		Expect(l.Lock(ctx)).To(Succeed())
		first := queue(ctx, key)[0]
		Expect(l.Unlock(ctx)).To(Succeed())
		revoke(ctx, first)
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(queue(ctx, key)[0].lease).NotTo(Equal(first.lease))
		Expect(l.Unlock(ctx)).To(Succeed())
	})

	It("TryLock reports false while another session holds the lock, true once it is free", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("try")
		a, b := newLock(newClient(), key, 3*time.Second), newLock(newClient(), key, 3*time.Second)
		Expect(a.TryLock(ctx)).To(BeTrue())
		Expect(b.TryLock(ctx)).To(BeFalse())
		Expect(b.Token()).To(BeZero())
		Expect(queue(ctx, key)).To(HaveLen(1))
		Expect(a.Unlock(ctx)).To(Succeed())
		Expect(b.TryLock(ctx)).To(BeTrue())
		Expect(b.Unlock(ctx)).To(Succeed())
	})

	It("behaves like a sync.Mutex between goroutines of one process", specTimeout, func(ctx SpecContext) {
		l := newLock(newClient(), uniqueKey("local"), 3*time.Second)
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(l.TryLock(ctx)).To(BeFalse())
		second := async(func() error { return l.Lock(ctx) })
		Consistently(second).WithTimeout(200 * time.Millisecond).ShouldNot(Receive())
		Expect(l.Unlock(ctx)).To(Succeed())
		Eventually(second).WithContext(ctx).Should(Receive(Succeed()))
		Expect(l.Unlock(ctx)).To(Succeed())
		Expect(l.Unlock(ctx)).To(MatchError(lock.ErrNotLocked))
	})

	It("returns the context's error promptly when it ends during a wait, and leaves no key behind", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("cancel")
		holder, waiter := newLock(newClient(), key, 3*time.Second), newLock(newClient(), key, 3*time.Second)
		Expect(holder.Lock(ctx)).To(Succeed())

		wctx, cancel := context.WithCancel(ctx)
		done := async(func() error { return waiter.Lock(wctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(2))
		cancel()
		Eventually(done).WithTimeout(5 * time.Second).Should(Receive(MatchError(context.Canceled)))
		Expect(queue(ctx, key)).To(HaveLen(1))

		tctx, tcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer tcancel()
		Expect(waiter.Lock(tctx)).To(MatchError(context.DeadlineExceeded))
		Expect(queue(ctx, key)).To(HaveLen(1))

		Expect(holder.Unlock(ctx)).To(Succeed())
		Expect(waiter.TryLock(ctx)).To(BeTrue())
		Expect(waiter.Unlock(ctx)).To(Succeed())
	})

	It("releases even when Unlock's context has already ended", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("unlock-cancelled")
		l := newLock(newClient(), key, 3*time.Second)
		Expect(l.Lock(ctx)).To(Succeed())
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		Expect(l.Unlock(cctx)).To(Succeed())
		Expect(queue(ctx, key)).To(BeEmpty())
	})

	It("WithLock releases when fn fails and when it panics", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("withlock")
		l, other := newLock(newClient(), key, 3*time.Second), newLock(newClient(), key, 3*time.Second)
		boom := errors.New("boom")
		Expect(l.WithLock(ctx, func() error {
			Expect(other.TryLock(ctx)).To(BeFalse())
			return boom
		})).To(MatchError(boom))
		Expect(queue(ctx, key)).To(BeEmpty())

		Expect(func() { _ = l.WithLock(ctx, func() error { panic("fn panicked") }) }).To(PanicWith("fn panicked"))
		Expect(queue(ctx, key)).To(BeEmpty())
		Expect(other.TryLock(ctx)).To(BeTrue())
		Expect(other.Unlock(ctx)).To(Succeed())
	})

	It("Close releases the lock and ends a waiting call with ErrClosed", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("close")
		holder, waiter := newLock(newClient(), key, 3*time.Second), newLock(newClient(), key, 3*time.Second)
		Expect(holder.Lock(ctx)).To(Succeed())
		done := async(func() error { return waiter.Lock(ctx) })
		Eventually(queueLen(key)).WithContext(ctx).Should(Equal(2))
		Expect(waiter.Close()).To(Succeed())
		Eventually(done).WithContext(ctx).Should(Receive(MatchError(lock.ErrClosed)))
		Expect(waiter.Lock(ctx)).To(MatchError(lock.ErrClosed))
		Expect(queue(ctx, key)).To(HaveLen(1))

		Expect(holder.Close()).To(Succeed())
		Expect(queue(ctx, key)).To(BeEmpty())
		Expect(holder.Close()).To(Succeed())
	})

	It("excludes etcd's concurrency.Mutex and etcdctl lock on the same key, both ways", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("interop")
		l := newLock(newClient(), key, 3*time.Second)
		sess, err := concurrency.NewSession(newClient(), concurrency.WithTTL(3))
		Expect(err).NotTo(HaveOccurred())
		defer sess.Close()
		m := concurrency.NewMutex(sess, key)

		Expect(l.Lock(ctx)).To(Succeed())
		Expect(m.TryLock(ctx)).To(MatchError(concurrency.ErrLocked))
		Expect(l.Unlock(ctx)).To(Succeed())

		Expect(m.Lock(ctx)).To(Succeed())
		Expect(l.TryLock(ctx)).To(BeFalse())
		done := async(func() error { return l.Lock(ctx) })
		Consistently(done).WithTimeout(200 * time.Millisecond).ShouldNot(Receive())
		Expect(m.Unlock(ctx)).To(Succeed())
		Eventually(done).WithContext(ctx).Should(Receive(Succeed()))
		Expect(l.Unlock(ctx)).To(Succeed())
	})

	It("uses a session with the default TTL of 30 seconds when TTL is 0", specTimeout, func(ctx SpecContext) {
		key := uniqueKey("default-ttl")
		l := newLock(newClient(), key, 0)
		Expect(l.Lock(ctx)).To(Succeed())
		ttl, err := cluster.Client().TimeToLive(ctx, queue(ctx, key)[0].lease)
		Expect(err).NotTo(HaveOccurred())
		Expect(time.Duration(ttl.GrantedTTL) * time.Second).To(Equal(lock.DefaultTTL))
		Expect(l.Unlock(ctx)).To(Succeed())
	})
})
