package bench_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdkit/etcdkit/lock"
)

// benchLocker is what both locks offer to these benchmarks.
type benchLocker interface {
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

// newBenchLock returns an etcdkit lock on key through cli, closed at the benchmark's end.
func newBenchLock(b *testing.B, cli *clientv3.Client, key string) *lock.Lock {
	b.Helper()
	l, err := lock.New(cli, key, lock.Options{TTL: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

// newBenchMutex returns etcd's concurrency.Mutex on key, on a session of its own.
func newBenchMutex(b *testing.B, cli *clientv3.Client, key string) *concurrency.Mutex {
	b.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return concurrency.NewMutex(s, key)
}

// BenchmarkLockUncontended times Lock+Unlock of a free lock (one session, kept between
// rounds) against etcd's concurrency.Mutex doing the same on the same etcd.
func BenchmarkLockUncontended(b *testing.B) {
	ctx := context.Background()
	cli := newClient(b)
	prefix := fmt.Sprintf("/bench/lock-uncontended/%d", time.Now().UnixNano())
	ours := newBenchLock(b, cli, prefix+"/etcdkit")
	base := newBenchMutex(b, cli, prefix+"/mutex")
	round := func(l benchLocker) func() {
		return func() {
			if err := l.Lock(ctx); err != nil {
				b.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The first round of each starts its session or warms its paths; it is not timed.
	round(ours)()
	round(base)()
	b.ResetTimer()
	ratio(b, b.N, round(ours), round(base))
}

// BenchmarkLockHandoff measures the handoff of a contended lock: the time from the
// holder's Unlock call to the return of the Lock of the process waiting for it (each with
// its own client and session), for etcdkit and for concurrency.Mutex in alternation.
//
// "immediate": the holder lets go as soon as the waiter is queued, as in a busy queue of
// short critical sections. "settled": the holder keeps the lock 150 ms longer, so that
// both waiters' watches are fully set up (etcd syncs late-starting watches every 100 ms)
// and only the handoff itself is timed.
func BenchmarkLockHandoff(b *testing.B) {
	b.Run("immediate", func(b *testing.B) { benchHandoff(b, 0) })
	b.Run("settled", func(b *testing.B) { benchHandoff(b, 150*time.Millisecond) })
}

func benchHandoff(b *testing.B, hold time.Duration) {
	ctx := context.Background()
	prefix := fmt.Sprintf("/bench/lock-handoff/%d", time.Now().UnixNano())
	oursKey, baseKey := prefix+"/etcdkit", prefix+"/mutex"
	oursHolder, oursWaiter := newBenchLock(b, newClient(b), oursKey), newBenchLock(b, newClient(b), oursKey)
	baseHolder, baseWaiter := newBenchMutex(b, newClient(b), baseKey), newBenchMutex(b, newClient(b), baseKey)
	watcher := newClient(b)

	handoff := func(holder, waiter benchLocker, key string) time.Duration {
		if err := holder.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		type result struct {
			at  time.Time
			err error
		}
		done := make(chan result, 1)
		// The waiter belongs to this round: it ends when its Lock returns, which the
		// holder's Unlock below brings about, and the round waits for it.
		go func() {
			err := waiter.Lock(ctx)
			done <- result{time.Now(), err}
		}()
		waitQueued(b, watcher, key, 2)
		if hold > 0 {
			// The holder's critical section; not a wait for a condition.
			time.Sleep(hold)
		}
		start := time.Now()
		if err := holder.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			b.Fatal(r.err)
		}
		if err := waiter.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		return r.at.Sub(start)
	}

	handoff(oursHolder, oursWaiter, oursKey)
	handoff(baseHolder, baseWaiter, baseKey)
	b.ResetTimer()
	ours := make([]time.Duration, 0, b.N)
	base := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		base = append(base, handoff(baseHolder, baseWaiter, baseKey))
		ours = append(ours, handoff(oursHolder, oursWaiter, oursKey))
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	oursP50, baseP50 := percentile(ours, 50), percentile(base, 50)
	b.ReportMetric(ms(oursP50), "p50-ms-etcdkit")
	b.ReportMetric(ms(percentile(ours, 99)), "p99-ms-etcdkit")
	b.ReportMetric(ms(baseP50), "p50-ms-baseline")
	b.ReportMetric(ms(percentile(base, 99)), "p99-ms-baseline")
	b.ReportMetric(float64(oursP50)/float64(baseP50), "x-baseline")
}

// waitQueued waits until n keys are queued under key/, so that the waiter is in line
// before the holder lets go.
func waitQueued(b *testing.B, cli *clientv3.Client, key string, n int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		resp, err := cli.Get(ctx, key+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if resp.Count >= n {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("the waiter did not queue under %s", key)
		case <-time.After(time.Millisecond):
		}
	}
}
