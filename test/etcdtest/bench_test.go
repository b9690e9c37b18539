package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// BenchmarkStartEmbedded measures how long a 1-member in-process etcd takes from Start to a
// ready client, and how long Close takes.
func BenchmarkStartEmbedded(b *testing.B) {
	var ready, closing time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		c, err := etcdtest.Start(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		ready += t1.Sub(t0)
		closing += time.Since(t1)
	}
	b.ReportMetric(float64(ready.Milliseconds())/float64(b.N), "ms-ready")
	b.ReportMetric(float64(closing.Milliseconds())/float64(b.N), "ms-close")
}
