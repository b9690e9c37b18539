package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

type benchObject struct {
	Phase string `json:"phase"`
	Count int    `json:"count"`
}

// BenchmarkStoreUpdate compares store.Update (encode, a transaction guarded by the mod
// revision that also returns the new metadata) with a raw guarded Txn on the same etcd.
func BenchmarkStoreUpdate(b *testing.B) {
	cli := newClient(b)
	ctx := context.Background()
	run := fmt.Sprint(time.Now().UnixNano())
	s, err := store.New[benchObject](cli, "/bench/store/"+run+"/", store.Options[benchObject]{})
	if err != nil {
		b.Fatal(err)
	}
	ours, err := s.Create(ctx, s.Key("ours"), &benchObject{Phase: "Running"})
	if err != nil {
		b.Fatal(err)
	}
	rawKey := "/bench/store/" + run + "-raw"
	put, err := cli.Put(ctx, rawKey, `{"phase":"Running","count":0}`)
	if err != nil {
		b.Fatal(err)
	}
	rawRev := put.Header.Revision
	obj := ours.Value
	n := max(b.N, 200)
	b.ResetTimer()
	ratio(b, n, func() {
		obj.Count++
		o, err := s.Update(ctx, ours.Key, &obj, ours.ModRevision)
		if err != nil {
			b.Fatal(err)
		}
		ours = o
	}, func() {
		data, _ := json.Marshal(benchObject{Phase: "Running", Count: int(rawRev)})
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(rawKey), "=", rawRev)).
			Then(clientv3.OpPut(rawKey, string(data))).Commit()
		if err != nil || !resp.Succeeded {
			b.Fatalf("raw txn: %v %v", err, resp)
		}
		rawRev = resp.Header.Revision
	})
}

// writeKeys writes n keys of valueSize bytes under prefix in transactions of 128 puts.
func writeKeys(b *testing.B, cli *clientv3.Client, prefix string, n, valueSize int) {
	b.Helper()
	value := string(make([]byte, valueSize))
	for i := 0; i < n; i += 128 {
		var ops []clientv3.Op
		for j := i; j < min(i+128, n); j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%07d", prefix, j), value))
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInitialSync lists 100k keys into a source's cache (paged, at one revision) and
// compares it with the raw paged Gets of the same keys; it also reports the cache's heap
// bytes per key against the key and value bytes it holds.
func BenchmarkInitialSync(b *testing.B) {
	cli := newClient(b)
	ctx := context.Background()
	const keys, valueSize = 100000, 100
	prefix := fmt.Sprintf("/bench/sync/%d/", time.Now().UnixNano())
	writeKeys(b, cli, prefix, keys, valueSize)
	keyBytes := len(prefix) + 7

	var ours, raw time.Duration
	var perKey float64
	rounds := max(b.N, 1)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		t0 := time.Now()
		end := clientv3.GetPrefixRangeEnd(prefix)
		resp, err := cli.Get(ctx, prefix, clientv3.WithRange(end), clientv3.WithLimit(source.DefaultPageSize))
		if err != nil {
			b.Fatal(err)
		}
		got, rev := len(resp.Kvs), resp.Header.Revision
		for resp.More {
			next := string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
			if resp, err = cli.Get(ctx, next, clientv3.WithRange(end), clientv3.WithLimit(source.DefaultPageSize), clientv3.WithRev(rev)); err != nil {
				b.Fatal(err)
			}
			got += len(resp.Kvs)
		}
		raw += time.Since(t0)
		if got != keys {
			b.Fatalf("raw list got %d keys", got)
		}

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		t0 = time.Now()
		src, err := source.New(cli, prefix, source.Options{})
		if err != nil {
			b.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = src.Run(sctx, func(source.Event) {}) }()
		if err := src.WaitForSync(ctx); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if src.Len() != keys {
			b.Fatalf("source cached %d keys", src.Len())
		}
		perKey = float64(after.HeapAlloc-before.HeapAlloc) / keys
		cancel()
		<-done
		runtime.KeepAlive(src)
	}
	b.ReportMetric(float64(ours.Milliseconds())/float64(rounds), "ms-sync")
	b.ReportMetric(float64(raw.Milliseconds())/float64(rounds), "ms-raw-list")
	b.ReportMetric(float64(raw)/float64(ours), "x-raw-speed")
	b.ReportMetric(perKey, "heap-B/key")
	b.ReportMetric(float64(keyBytes+valueSize), "kv-B/key")
	b.ReportMetric(perKey/float64(keyBytes+valueSize), "x-kv-bytes")
}
