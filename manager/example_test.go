package manager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// A manager elects a leader and runs a controller on it; Start returns after a graceful
// shutdown.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "jobs", ID: "replica-1", LeaseTTL: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	reconciled := make(chan string, 1)
	err = manager.NewControllerManagedBy(mgr).
		Named("jobs").
		For(source.Prefix("/jobs/")).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			select {
			case reconciled <- req.Key:
			default:
			}
			return reconcile.Result{}, nil
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- mgr.Start(runCtx) }()

	_, _ = c.Client().Put(ctx, "/jobs/build", "{}")
	fmt.Println("reconciled", <-reconciled, "on the leader:", mgr.IsLeader())
	stop()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// reconciled /jobs/build on the leader: true
	// stopped: <nil>
}

// Two replicas share the keys of a sharded controller: each owns half of the shards, and
// each key is reconciled by the owner of its shard, in a context fenced by the shard's
// token.
func Example_sharding() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	type replica struct {
		mgr     *manager.Manager
		stopped chan error
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var replicas []replica
	reconciledBy := make(chan string, 16)
	for _, id := range []string{"replica-1", "replica-2"} {
		cli, err := c.NewClient() // one client, and so one session, per replica
		if err != nil {
			fmt.Println(err)
			return
		}
		defer cli.Close()
		mgr, err := manager.New(manager.Options{
			Client: cli, Name: "jobs", ID: id, LeaseTTL: 5 * time.Second,
			Sharding: &manager.ShardingOptions{Shards: 8},
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		err = manager.NewControllerManagedBy(mgr).
			Named("jobs").
			For(source.Prefix("/jobs/")).
			Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
				s, _ := manager.ShardFrom(ctx)
				reconciledBy <- fmt.Sprintf("%s: shard %d by %s", req.Key, s.ID, id)
				return reconcile.Result{}, nil
			}))
		if err != nil {
			fmt.Println(err)
			return
		}
		r := replica{mgr: mgr, stopped: make(chan error, 1)}
		go func() { r.stopped <- mgr.Start(runCtx) }()
		replicas = append(replicas, r)
	}
	// Wait until the shards are spread over both replicas.
	for {
		st, _ := replicas[0].mgr.ShardStatus(ctx)
		if st.Settled() && len(st.Owned) == 4 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, _ = c.Client().Put(ctx, "/jobs/build", "{}")
	got := <-reconciledBy
	st, _ := replicas[0].mgr.ShardStatus(ctx)
	shard := manager.ShardOf("/jobs/build", 8)
	fmt.Println(got == fmt.Sprintf("/jobs/build: shard %d by %s", shard, st.Owners[shard]))
	stop()
	for _, r := range replicas {
		fmt.Println("stopped:", <-r.stopped)
	}
	// Output:
	// true
	// stopped: <nil>
	// stopped: <nil>
}

// A manager serves /healthz for a liveness probe and /readyz for a readiness probe, each
// with checks of its own, and closes Elected once the replica leads.
func Example_probes() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	mgr, err := manager.New(manager.Options{
		Client: c.Client(), Name: "jobs", ID: "replica-1", LeaseTTL: 5 * time.Second, HealthProbeAddr: "127.0.0.1:0",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var loaded atomic.Bool
	err = errors.Join(
		mgr.AddHealthzCheck("ping", manager.Ping),
		mgr.AddReadyzCheck("loaded", func(*http.Request) error {
			if !loaded.Load() {
				return errors.New("still loading")
			}
			return nil
		}),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	show := func(path string) {
		resp, err := http.Get("http://" + mgr.HealthProbeAddr() + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%s %d\n%s\n", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- mgr.Start(runCtx) }()

	<-mgr.Elected()
	show("/healthz")
	show("/readyz")
	loaded.Store(true)
	show("/readyz")
	stop()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// /healthz 200
	// ok
	// /readyz 503
	// [+]etcd ok
	// [+]session ok
	// [+]caches ok
	// [+]refusals ok
	// [-]loaded failed: still loading
	// readyz check failed
	// /readyz 200
	// ok
	// stopped: <nil>
}
