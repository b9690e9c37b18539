package bench_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/discovery"
)

// BenchmarkLoadBalancerGetService measures a pick from the load balancer's watch-fed view
// against the baseline of reading the service's instances from etcd with a prefix Get.
func BenchmarkLoadBalancerGetService(b *testing.B) {
	ctx := context.Background()
	cli := newClient(b)
	prefix := fmt.Sprintf("/bench/discovery-%d", time.Now().UnixNano())
	reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	for i := 0; i < 3; i++ {
		info := discovery.ServiceInfo{Name: "api", ID: fmt.Sprintf("api-%d", i), Address: "10.0.0.1", Port: 8080 + i,
			Metadata: map[string]string{"version": "1.0.0"}}
		if err := reg.Register(ctx, info); err != nil {
			b.Fatal(err)
		}
	}
	lb, err := discovery.NewLoadBalancer(reg, discovery.RoundRobin)
	if err != nil {
		b.Fatal(err)
	}
	defer lb.Close()
	if _, err := lb.GetService(ctx, "api"); err != nil { // starts the watch
		b.Fatal(err)
	}
	b.ResetTimer()
	ratio(b, b.N, func() {
		if _, err := lb.GetService(ctx, "api"); err != nil {
			b.Fatal(err)
		}
	}, func() {
		resp, err := cli.Get(ctx, prefix+"/api/", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 3 {
			b.Fatal(err, resp)
		}
	})
}
