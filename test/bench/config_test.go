package bench_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/config"
)

// BenchmarkConfigGet measures a cached GetString against the baseline of a raw Get of the
// same key.
func BenchmarkConfigGet(b *testing.B) {
	ctx := context.Background()
	cli := newClient(b)
	prefix := fmt.Sprintf("/bench/config-%d/", time.Now().UnixNano())
	// Written before the Manager starts, so that its first list holds it and every read
	// below is served from the cache.
	if _, err := cli.Put(ctx, prefix+"database/host", `"db.internal.example.com"`); err != nil {
		b.Fatal(err)
	}
	m, err := config.NewManager(cli, prefix, config.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitForSync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	ratio(b, b.N, func() {
		if _, err := m.GetString(ctx, "database/host"); err != nil {
			b.Fatal(err)
		}
	}, func() {
		resp, err := cli.Get(ctx, prefix+"database/host")
		if err != nil || len(resp.Kvs) != 1 {
			b.Fatal(err, resp)
		}
	})
}
