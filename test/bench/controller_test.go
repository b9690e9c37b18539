package bench_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// startController runs a controller over prefix with r until the benchmark ends.
func startController(b *testing.B, cli *clientv3.Client, prefix string, workers int, r reconcile.Reconciler) {
	b.Helper()
	src, err := source.New(cli, prefix, source.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := reconcile.New(reconcile.Options{Name: "bench", MaxConcurrentReconciles: workers}, r)
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
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := src.WaitForSync(wctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEventToReconcile measures the time from a Put to the reconcile of its key,
// against the time from a Put to a raw watch delivering its event, on the same etcd.
func BenchmarkEventToReconcile(b *testing.B) {
	cli := newClient(b)
	ctx := context.Background()
	run := fmt.Sprint(time.Now().UnixNano())
	rawPrefix, ctlPrefix := "/bench/e2r/"+run+"/raw/", "/bench/e2r/"+run+"/ctl/"

	arrived := make(chan time.Time, 1)
	startController(b, cli, ctlPrefix, 1, reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		arrived <- time.Now()
		return reconcile.Result{}, nil
	}))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wc := cli.Watch(wctx, rawPrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-wc

	n := max(b.N, 300)
	raw, ours := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	b.ResetTimer()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%d", rawPrefix, i), "v"); err != nil {
			b.Fatal(err)
		}
		<-wc
		raw = append(raw, time.Since(t0))

		t0 = time.Now()
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%d", ctlPrefix, i), "v"); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, (<-arrived).Sub(t0))
	}
	b.StopTimer()
	rp50, rp99 := percentile(raw, 50), percentile(raw, 99)
	op50, op99 := percentile(ours, 50), percentile(ours, 99)
	b.ReportMetric(float64(op50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(op99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(rp50.Microseconds())/1000, "raw-p50-ms")
	b.ReportMetric(float64(rp99.Microseconds())/1000, "raw-p99-ms")
	b.ReportMetric(float64((op99-rp99).Microseconds())/1000, "p99-over-raw-ms")
	b.ReportMetric(float64(op50)/float64(rp50), "p50-x-raw")
}

// BenchmarkReconcileThroughput measures sustained no-op reconciles per second for a burst
// of distinct keys against the events per second of a raw watch on the same burst.
func BenchmarkReconcileThroughput(b *testing.B) {
	cli := newClient(b)
	ctx := context.Background()
	const keys = 20000
	run := fmt.Sprint(time.Now().UnixNano())
	var ratioSum float64
	var oursRate, rawRate float64
	rounds := max(b.N, 1)
	for round := 0; round < rounds; round++ {
		prefix := fmt.Sprintf("/bench/tp/%s/%d/", run, round)
		var reconciled atomic.Int64
		allDone := make(chan time.Time, 1)
		startController(b, cli, prefix, 8, reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			if reconciled.Add(1) == keys {
				allDone <- time.Now()
			}
			return reconcile.Result{}, nil
		}))
		wctx, cancel := context.WithCancel(ctx)
		wc := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-wc
		rawDone := make(chan time.Time, 1)
		go func() { // counts the raw watch's events; ends with wctx
			seen := 0
			for wr := range wc {
				seen += len(wr.Events)
				if seen == keys {
					rawDone <- time.Now()
				}
			}
		}()
		t0 := time.Now()
		for i := 0; i < keys; i += 128 {
			var ops []clientv3.Op
			for j := i; j < min(i+128, keys); j++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%06d", prefix, j), "v"))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
		}
		rawEnd, oursEnd := <-rawDone, <-allDone
		cancel()
		rawRate = keys / rawEnd.Sub(t0).Seconds()
		oursRate = keys / oursEnd.Sub(t0).Seconds()
		ratioSum += oursRate / rawRate
	}
	b.ReportMetric(oursRate, "reconciles/s")
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(ratioSum/float64(rounds), "x-raw")
}
