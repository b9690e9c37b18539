package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// BenchmarkFencedUpdateController measures the throughput of a leader-only controller (8
// workers) whose reconcile reads its key from the manager's cache and makes one fenced
// store.Update of a key under a prefix it does not watch, against 8 goroutines making the
// same transactions raw on the same etcd: the leader fence (the leader key's create
// revision is the term's token) as the outer If, the mod-revision precondition and the
// Put as an inner Txn, one per key, over as many keys. Both rounds give etcd the same work:
// the N input keys, put in transactions of 128, and the N fenced updates. The controller's
// round is timed from the first Put of its input keys until its N updates were accepted,
// so it includes the watch that brings the inputs to it; in the raw round the inputs go to
// a prefix no one watches, beside the writers, which know their keys from the start, and
// the round ends when both are done. A third side, hand, is a hand-written controller: a
// watch of its inputs feeds 8 writers the keys as their puts arrive (x-hand). Rounds rotate
// which goes first.
func BenchmarkFencedUpdateController(b *testing.B) {
	const keys, workers = 5000, 8
	ctx := context.Background()
	run := fmt.Sprint(time.Now().UnixNano())
	base := "/bench/fenced/" + run + "/"
	in, out, rawIn, rawOut := base+"in/", base+"out/", base+"rawin/", base+"raw/"
	handIn, handOut := base+"handin/", base+"hand/"
	cli := newClient(b)

	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("%06d", i)
	}
	// The output keys exist before the rounds, so that every write is an Update with the
	// mod revision the writer remembers from its last write.
	createOut := func(prefix string) map[string]*atomic.Int64 {
		revs := make(map[string]*atomic.Int64, keys)
		data, _ := json.Marshal(benchObject{Phase: "Pending"})
		for i := 0; i < keys; i += 128 {
			var ops []clientv3.Op
			for j := i; j < min(i+128, keys); j++ {
				ops = append(ops, clientv3.OpPut(prefix+names[j], string(data)))
			}
			resp, err := cli.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				b.Fatal(err)
			}
			for j := i; j < min(i+128, keys); j++ {
				revs[names[j]] = new(atomic.Int64)
				revs[names[j]].Store(resp.Header.Revision)
			}
		}
		return revs
	}
	ourRevs, rawRevs, handRevs := createOut(out), createOut(rawOut), createOut(handOut)

	mcli, err := cluster.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mcli.Close() }) // after the manager's stop, registered below
	mgr, err := manager.New(manager.Options{
		Client: mcli, Name: "bench-fenced-" + run, LeaseTTL: 3 * time.Second, GracefulShutdownTimeout: 10 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	inputs, err := store.New[benchObject](mcli, in, store.Options[benchObject]{Cache: mgr.GetCache()})
	if err != nil {
		b.Fatal(err)
	}
	outputs, err := store.New[benchObject](mcli, out, store.Options[benchObject]{}) // not cached: /out/ is not watched
	if err != nil {
		b.Fatal(err)
	}
	var (
		updated  atomic.Int64
		target   atomic.Int64
		allDone  = make(chan time.Time, 1)
		unfenced atomic.Int64
		failed   atomic.Pointer[error]
	)
	err = manager.NewControllerManagedBy(mgr).Named("fenced").
		For(source.Prefix(in)).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: workers}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if _, ok := fence.From(ctx); !ok {
				unfenced.Add(1)
			}
			obj, err := inputs.Cached(req.Key)
			if errors.Is(err, store.ErrNotFound) {
				return reconcile.Result{}, nil
			}
			if err != nil {
				failed.Store(&err)
				return reconcile.Result{}, err
			}
			name := strings.TrimPrefix(req.Key, in)
			rev := ourRevs[name]
			o, err := outputs.Update(ctx, outputs.Key(name), &obj.Value, rev.Load())
			if err != nil {
				failed.Store(&err)
				return reconcile.Result{}, err
			}
			rev.Store(o.ModRevision)
			if updated.Add(1) == target.Load() {
				allDone <- time.Now()
			}
			return reconcile.Result{}, nil
		}))
	if err != nil {
		b.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(mctx) }() // the manager; ends with mctx
	b.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			b.Error(err)
		}
	})
	select {
	case <-mgr.Elected():
	case err := <-stopped:
		b.Fatalf("manager stopped before it was elected: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("manager not elected in 30 s")
	}
	term, ok := mgr.Election().Term()
	if !ok {
		b.Fatal("manager elected but leads no term")
	}

	// putInputs puts the N input keys (value round) under prefix in transactions of 128.
	putInputs := func(prefix string, round int) error {
		data, _ := json.Marshal(benchObject{Phase: "Running", Count: round})
		for i := 0; i < keys; i += 128 {
			var ops []clientv3.Op
			for j := i; j < min(i+128, keys); j++ {
				ops = append(ops, clientv3.OpPut(prefix+names[j], string(data)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
		}
		return nil
	}
	// ours puts the N input keys and waits for the N updates of the reconciles.
	ours := func(round int) time.Duration {
		target.Store(updated.Load() + keys)
		t0 := time.Now()
		if err := putInputs(in, round); err != nil {
			b.Fatal(err)
		}
		select {
		case end := <-allDone:
			return end.Sub(t0)
		case <-time.After(time.Minute):
			if err := failed.Load(); err != nil {
				b.Fatalf("reconcile: %v", *err)
			}
			b.Fatalf("%d of %d updates in a minute", updated.Load()-(target.Load()-keys), keys)
			return 0
		}
	}
	// rawUpdate makes the fenced, guarded transaction of one key under prefix.
	rawUpdate := func(prefix, name string, revs map[string]*atomic.Int64, round int) error {
		k, rev := prefix+name, revs[name]
		data, _ := json.Marshal(benchObject{Phase: "Running", Count: round})
		resp, err := cli.Txn(ctx).If(term.Guard).Then(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", rev.Load())},
			[]clientv3.Op{clientv3.OpPut(k, string(data), clientv3.WithPrevKV())}, nil)).Commit()
		if err == nil && !(resp.Succeeded && resp.Responses[0].GetResponseTxn().Succeeded) {
			err = fmt.Errorf("raw txn on %s not applied: %v", k, resp)
		}
		if err != nil {
			return err
		}
		rev.Store(resp.Header.Revision)
		return nil
	}
	// raw makes the same fenced, guarded transactions from 8 goroutines, each taking the
	// next key, while the same input puts go to an unwatched prefix.
	raw := func(round int) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		var rawFailed atomic.Pointer[error]
		t0 := time.Now()
		wg.Add(1)
		go func() { // the input puts; ends when they are written
			defer wg.Done()
			if err := putInputs(rawIn, round); err != nil {
				rawFailed.Store(&err)
			}
		}()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() { // a writer; ends when every key is taken
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= keys {
						return
					}
					if err := rawUpdate(rawOut, names[i], rawRevs, round); err != nil {
						rawFailed.Store(&err)
						return
					}
				}
			}()
		}
		wg.Wait()
		d := time.Since(t0)
		if err := rawFailed.Load(); err != nil {
			b.Fatal(*err)
		}
		return d
	}
	// hand is the same as a hand-written controller: a watch of the inputs (opened at the
	// revision before the puts, so that it misses none) feeds 8 writers, which make the raw
	// transactions for the keys as their puts arrive.
	hand := func(round int) time.Duration {
		now, err := cli.Get(ctx, handIn, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		wch := cli.Watch(wctx, handIn, clientv3.WithPrefix(), clientv3.WithRev(now.Header.Revision+1))
		work := make(chan string, keys)
		var wg sync.WaitGroup
		var handFailed atomic.Pointer[error]
		t0 := time.Now()
		wg.Add(2)
		go func() { // the input puts; ends when they are written
			defer wg.Done()
			if err := putInputs(handIn, round); err != nil {
				handFailed.Store(&err)
			}
		}()
		go func() { // the watch's reader; ends after the round's events, or when the watch does
			defer wg.Done()
			defer close(work)
			n := 0
			for resp := range wch {
				for _, ev := range resp.Events {
					work <- strings.TrimPrefix(string(ev.Kv.Key), handIn)
					if n++; n == keys {
						return
					}
				}
			}
		}()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() { // a writer; ends when the watch's reader does
				defer wg.Done()
				for name := range work {
					if err := rawUpdate(handOut, name, handRevs, round); err != nil {
						handFailed.Store(&err)
						cancel()
					}
				}
			}()
		}
		wg.Wait()
		d := time.Since(t0)
		if err := handFailed.Load(); err != nil {
			b.Fatal(*err)
		}
		return d
	}

	var oursTotal, rawTotal, handTotal time.Duration
	rounds := max(b.N, 6)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		switch r % 3 { // which goes first rotates
		case 0:
			rawTotal += raw(r)
			handTotal += hand(r)
			oursTotal += ours(r)
		case 1:
			oursTotal += ours(r)
			rawTotal += raw(r)
			handTotal += hand(r)
		default:
			handTotal += hand(r)
			oursTotal += ours(r)
			rawTotal += raw(r)
		}
	}
	b.StopTimer()
	if n := unfenced.Load(); n > 0 {
		b.Fatalf("%d reconciles ran without the leader fence", n)
	}
	oursRate := float64(rounds*keys) / oursTotal.Seconds()
	rawRate := float64(rounds*keys) / rawTotal.Seconds()
	b.ReportMetric(oursRate, "keys/s")
	b.ReportMetric(rawRate, "raw-keys/s")
	handRate := float64(rounds*keys) / handTotal.Seconds()
	b.ReportMetric(oursRate/rawRate, "x-raw")
	b.ReportMetric(handRate, "hand-keys/s")
	b.ReportMetric(oursRate/handRate, "x-hand")
}
