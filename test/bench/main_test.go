package bench_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// cluster is the one in-process etcd that every benchmark of this package shares, so that a
// figure and its baseline always run against the same server in the same run.
var cluster *etcdtest.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	c, err := etcdtest.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	_ = c.Close()
	os.Exit(code)
}

// newClient returns a client of the shared etcd that the benchmark closes at its end.
func newClient(b *testing.B) *clientv3.Client {
	b.Helper()
	cli, err := cluster.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cli.Close() })
	return cli
}

// percentile returns the p-th percentile (0 < p <= 100) of ds, which it sorts.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(float64(len(ds))*p/100+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(ds) {
		i = len(ds) - 1
	}
	return ds[i]
}

// ratio times fn and baseline for n rounds each, interleaved in blocks that alternate which
// goes first, so that both see the same machine, and reports ours/baseline (below 1 is
// faster than the baseline).
func ratio(b *testing.B, n int, fn, baseline func()) {
	b.Helper()
	var ours, base time.Duration
	const block = 10
	timed := func(f func(), k int) time.Duration {
		t0 := time.Now()
		for i := 0; i < k; i++ {
			f()
		}
		return time.Since(t0)
	}
	for done, odd := 0, false; done < n; done, odd = done+block, !odd {
		k := min(block, n-done)
		if odd {
			ours += timed(fn, k)
			base += timed(baseline, k)
		} else {
			base += timed(baseline, k)
			ours += timed(fn, k)
		}
	}
	b.ReportMetric(float64(ours)/float64(n), "ns/op-etcdkit")
	b.ReportMetric(float64(base)/float64(n), "ns/op-baseline")
	b.ReportMetric(float64(ours)/float64(base), "x-baseline")
}
