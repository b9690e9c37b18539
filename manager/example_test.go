package manager_test

import (
	"context"
	"fmt"
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

	mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "jobs", ID: "replica-1", LeaseTTL: 5})
	if err != nil {
		fmt.Println(err)
		return
	}
	reconciled := make(chan string, 1)
	err = manager.NewControllerManagedBy(mgr).
		Named("jobs").
		Watches(source.Prefix("/jobs/")).
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
