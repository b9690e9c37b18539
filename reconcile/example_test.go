package reconcile_test

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// A controller reconciles every key under a prefix; a RequeueAfter looks again later.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	done := make(chan string, 2)
	calls := 0 // one key: the queue never runs two reconciles of it at once
	r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		calls++
		done <- req.Key
		if calls == 1 {
			return reconcile.Result{RequeueAfter: 10 * time.Millisecond}, nil
		}
		return reconcile.Result{}, nil
	})
	src, _ := source.New(c.Client(), "/jobs/", source.Options{})
	ctrl, _ := reconcile.New(reconcile.Options{Name: "jobs"}, r)
	_ = ctrl.Watch(src, reconcile.EnqueueKey())

	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- ctrl.Start(runCtx) }() // returns once every worker has ended
	_, _ = c.Client().Put(ctx, "/jobs/build", "{}")
	fmt.Println(<-done)
	fmt.Println(<-done, "again")
	stop()
	fmt.Println(<-stopped)
	// Output:
	// /jobs/build
	// /jobs/build again
	// <nil>
}
