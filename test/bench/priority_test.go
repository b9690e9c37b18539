package bench_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// BenchmarkLiveChangeDuringResync measures how long a live change waits for its reconcile
// while a resync of 100k keys (no-op reconciles, 8 workers) drains, against two baselines
// of the same run on the same etcd and controller: the same change on an idle controller,
// and the same change behind the same 100k keys queued as one FIFO (each key enqueued as a
// live request, which is how every key was queued before live changes went first). Live
// puts are made every 2 ms from the moment the backlog starts to be queued until it has
// drained; each is timed from just before its Put to the start of its reconcile.
// It runs with 1 worker (the default) and with 8, each with a controller of its own over
// the same keys; peak-depth is the longest queue seen while sampling, how much backlog a
// live change could have waited behind.
func BenchmarkLiveChangeDuringResync(b *testing.B) {
	const keys = 100000
	prefix := fmt.Sprintf("/bench/prio/%d/", time.Now().UnixNano())
	seedKeys(b, context.Background(), newClient(b), prefix+"k/", keys)
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprint("workers=", workers), func(b *testing.B) {
			liveChangeDuringResync(b, prefix, keys, workers)
		})
	}
}

func liveChangeDuringResync(b *testing.B, prefix string, keys, workers int) {
	const every = 2 * time.Millisecond
	cli := newClient(b)
	ctx := context.Background()
	var peak int

	var (
		backlog  atomic.Int64 // reconciles of the seeded keys
		putAt    sync.Map     // live key -> time.Time just before its Put
		latency  = make(chan time.Duration, 1<<16)
		liveSeen atomic.Int64
	)
	c, src := startPriorityController(b, cli, prefix, workers, reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
		if strings.HasPrefix(req.Key, prefix+"k/") {
			backlog.Add(1)
		} else if t0, ok := putAt.LoadAndDelete(req.Key); ok {
			latency <- time.Since(t0.(time.Time))
			liveSeen.Add(1)
		}
		return reconcile.Result{}, nil
	}))
	waitFor(b, func() bool { return backlog.Load() >= int64(keys) }, 5*time.Minute) // the initial list

	// sample runs queue (nil: none) on a goroutine of its own and makes live puts every
	// `every` from that moment until the backlog it queued has been reconciled (n puts when
	// queue is nil), waits for their reconciles, and returns their latencies and how long
	// the backlog took to be queued and drained.
	var seq int
	sample := func(mode string, n int, queue func()) ([]time.Duration, time.Duration) {
		issued := liveSeen.Load()
		t0, start := time.Now(), backlog.Load()
		if queue != nil {
			go queue() // ends once every key is queued
		}
		var drain time.Duration
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			peak = max(peak, c.QueueLen())
			if queue != nil && backlog.Load()-start >= int64(keys) {
				drain = time.Since(t0)
				break
			}
			if queue == nil && i == n {
				break
			}
			seq++
			k := fmt.Sprintf("%slive/%d/%s/%d", prefix, workers, mode, seq)
			putAt.Store(k, time.Now())
			if _, err := cli.Put(ctx, k, "v"); err != nil {
				b.Fatal(err)
			}
			issued++
			<-tick.C
		}
		waitFor(b, func() bool { return liveSeen.Load() >= issued }, 5*time.Minute)
		var out []time.Duration
		for len(latency) > 0 {
			out = append(out, <-latency)
		}
		return out, drain
	}

	var idle, prio, fifo []time.Duration
	var prioDrain, fifoDrain time.Duration
	rounds := max(b.N, 1)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		ds, _ := sample("idle", 200, nil)
		idle = append(idle, ds...)
		runPrio := func() {
			ds, d := sample("prio", 0, c.Resync)
			prio, prioDrain = append(prio, ds...), prioDrain+d
		}
		runFIFO := func() {
			ds, d := sample("fifo", 0, func() {
				for _, kv := range src.List(prefix + "k/") {
					c.Enqueue(reconcile.Request{Key: string(kv.Key)})
				}
			})
			fifo, fifoDrain = append(fifo, ds...), fifoDrain+d
		}
		if r%2 == 0 {
			runPrio()
			runFIFO()
		} else {
			runFIFO()
			runPrio()
		}
	}
	b.StopTimer()
	i50, i99 := percentile(idle, 50), percentile(idle, 99)
	p50, p99 := percentile(prio, 50), percentile(prio, 99)
	f50, f99 := percentile(fifo, 50), percentile(fifo, 99)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(i50), "idle-p50-ms")
	b.ReportMetric(ms(i99), "idle-p99-ms")
	b.ReportMetric(ms(p50), "prio-p50-ms")
	b.ReportMetric(ms(p99), "prio-p99-ms")
	b.ReportMetric(ms(f50), "fifo-p50-ms")
	b.ReportMetric(ms(f99), "fifo-p99-ms")
	b.ReportMetric(ms(p99-i99), "prio-p99-over-idle-ms")
	b.ReportMetric(float64(p99)/float64(f99), "prio-p99-x-fifo")
	b.ReportMetric(float64(prioDrain)/float64(fifoDrain), "drain-x-fifo")
	b.ReportMetric(float64(len(prio))/float64(rounds), "prio-samples/round")
	b.ReportMetric(float64(len(fifo))/float64(rounds), "fifo-samples/round")
	b.ReportMetric(float64(peak), "peak-depth")
}

// seedKeys writes n keys under prefix, 128 to a transaction, from 8 writers.
func seedKeys(b *testing.B, ctx context.Context, cli *clientv3.Client, prefix string, n int) {
	b.Helper()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() { // a writer of every 8th batch; ends with its last batch
			defer wg.Done()
			for i := w * 128; i < n; i += 8 * 128 {
				var ops []clientv3.Op
				for j := i; j < min(i+128, n); j++ {
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%06d", prefix, j), "v"))
				}
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					failed.Store(&err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
}

// startPriorityController runs a controller over prefix with r until the benchmark ends,
// and returns it with its source.
func startPriorityController(b *testing.B, cli *clientv3.Client, prefix string, workers int, r reconcile.Reconciler) (*reconcile.Controller, *source.Source) {
	b.Helper()
	src, err := source.New(cli, prefix, source.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := reconcile.New(reconcile.Options{Name: "bench-priority", MaxConcurrentReconciles: workers}, r)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Watch(src, nil); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Start(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	return c, src
}

// waitFor polls cond until it holds, failing the benchmark after timeout.
func waitFor(b *testing.B, cond func() bool, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("not reached in %s", timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
