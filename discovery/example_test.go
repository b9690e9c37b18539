package discovery_test

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/discovery"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// Register two instances of a service, find them, and route requests to them in turn.
func Example() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx) // an in-process etcd for the example
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()

	reg, err := discovery.NewRegistry(etcd.Client(), "/services", discovery.Options{TTL: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	for i, id := range []string{"api-1", "api-2"} {
		err := reg.Register(ctx, discovery.ServiceInfo{
			Name: "api-server", ID: id, Address: "10.0.0.1", Port: 8080 + i,
			Metadata: map[string]string{"version": "1.0.0"},
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}

	found, err := reg.Discover(ctx, "api-server")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range found {
		fmt.Printf("found %s at %s (version %s)\n", s.ID, s.HostPort(), s.Metadata["version"])
	}

	lb, err := discovery.NewLoadBalancer(reg, discovery.RoundRobin)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lb.Close()
	for i := 0; i < 3; i++ {
		s, err := lb.GetService(ctx, "api-server")
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("route to", s.ID)
	}
	// Output:
	// found api-1 at 10.0.0.1:8080 (version 1.0.0)
	// found api-2 at 10.0.0.1:8081 (version 1.0.0)
	// route to api-1
	// route to api-2
	// route to api-1
}

// Watch a service: the instances present come first, then the changes.
func ExampleRegistry_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	reg, err := discovery.NewRegistry(etcd.Client(), "/services", discovery.Options{TTL: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	_ = reg.Register(ctx, discovery.ServiceInfo{Name: "api-server", ID: "api-1", Address: "10.0.0.1", Port: 8080})

	events := make(chan discovery.ServiceEvent, 10)
	if err := reg.Watch(ctx, "api-server", func(ev discovery.ServiceEvent) { events <- ev }); err != nil {
		fmt.Println(err)
		return
	}
	_ = reg.Register(ctx, discovery.ServiceInfo{Name: "api-server", ID: "api-2", Address: "10.0.0.2", Port: 8080})
	_ = reg.Deregister(ctx, "api-server", "api-1")
	for i := 0; i < 3; i++ {
		ev := <-events
		fmt.Println(ev.Type, ev.Service.ID)
	}
	// Output:
	// added api-1
	// added api-2
	// removed api-1
}

// LeastConn sends each request to the instance with the fewest requests in flight.
func ExampleLoadBalancer_Acquire() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	reg, err := discovery.NewRegistry(etcd.Client(), "/services", discovery.Options{TTL: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	for _, id := range []string{"api-1", "api-2"} {
		_ = reg.Register(ctx, discovery.ServiceInfo{Name: "api-server", ID: id, Address: "10.0.0.1", Port: 8080})
	}
	lb, err := discovery.NewLoadBalancer(reg, discovery.LeastConn)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lb.Close()

	slow, releaseSlow, _ := lb.Acquire(ctx, "api-server") // a long request holds api-1
	fmt.Println("long request to", slow.ID)
	for i := 0; i < 2; i++ {
		s, release, _ := lb.Acquire(ctx, "api-server")
		fmt.Println("short request to", s.ID)
		release()
	}
	releaseSlow()
	// Output:
	// long request to api-1
	// short request to api-2
	// short request to api-2
}
