package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// cachedStore returns a store of 1000 objects read through a synced source's cache, and the
// keys of the objects.
func cachedStore(b *testing.B) (*store.Store[benchObject], []string) {
	b.Helper()
	cli := newClient(b)
	ctx, cancel := context.WithCancel(context.Background())
	prefix := fmt.Sprintf("/bench/cache/%d/", time.Now().UnixNano())
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s%04d", prefix, i)
		if _, err := cli.Put(ctx, keys[i], `{"phase":"Running","count":42}`); err != nil {
			b.Fatal(err)
		}
	}
	src, err := source.New(cli, prefix, source.Options{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Run(ctx, func(source.Event) {}) }()
	b.Cleanup(func() { cancel(); <-done })
	if err := src.WaitForSync(ctx); err != nil {
		b.Fatal(err)
	}
	s, err := store.New[benchObject](cli, prefix, store.Options[benchObject]{Cache: src})
	if err != nil {
		b.Fatal(err)
	}
	return s, keys
}

// BenchmarkCachedRead compares a typed read of a source's cache (store.Cached: decoded
// once per revision, then shared) with a raw clientv3 Get of the same key.
func BenchmarkCachedRead(b *testing.B) {
	s, keys := cachedStore(b)
	cli := newClient(b)
	ctx := context.Background()
	n := max(b.N, 2000)
	i, j := 0, 0
	b.ResetTimer()
	ratio(b, n, func() {
		if _, err := s.Cached(keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}, func() {
		if _, err := cli.Get(ctx, keys[j%len(keys)]); err != nil {
			b.Fatal(err)
		}
		j++
	})
}

// BenchmarkCachedReadVsMapDecode compares a typed read of a source's cache with the least
// a cache without a memo would do: a plain map lookup of the stored bytes and a decode.
func BenchmarkCachedReadVsMapDecode(b *testing.B) {
	s, keys := cachedStore(b)
	plain := make(map[string][]byte, len(keys))
	for _, k := range keys {
		plain[k] = []byte(`{"phase":"Running","count":42}`)
	}
	n := max(b.N, 100000)
	i, j := 0, 0
	b.ResetTimer()
	ratio(b, n, func() {
		if _, err := s.Cached(keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}, func() {
		var obj benchObject
		if err := json.Unmarshal(plain[keys[j%len(keys)]], &obj); err != nil {
			b.Fatal(err)
		}
		j++
	})
}
