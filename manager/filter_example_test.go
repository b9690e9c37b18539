package manager_test

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// A watch's predicates judge its events, the controller's event filters those of every
// watch; both judge the resync of a new leader as they judge live events.
func ExampleBuilder_WithEventFilter() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for k, v := range map[string]string{"/jobs/a/spec": "run", "/jobs/b/spec": "paused", "/jobs/a/status": "done"} {
		_, _ = c.Client().Put(ctx, k, v)
	}

	mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "jobs", ID: "replica-1", LeaseTTL: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	specs, err := source.KeyGlob("/jobs/*/spec")
	if err != nil {
		fmt.Println(err)
		return
	}
	running := source.NewPredicateFuncs(func(kv *mvccpb.KeyValue) bool { return string(kv.Value) != "paused" })
	reconciled := make(chan string, 10)
	err = manager.NewControllerManagedBy(mgr).
		Named("jobs").
		For(source.Prefix("/jobs/").WithPredicates(running)).
		WithEventFilter(specs, source.ValueChanged()).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			reconciled <- req.Key
			return reconcile.Result{}, nil
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- mgr.Start(runCtx) }()

	first := <-reconciled // the leader's resync admits /jobs/a/spec only
	_, _ = c.Client().Put(ctx, "/jobs/c/spec", "run")
	keys := []string{first, <-reconciled}
	sort.Strings(keys)
	fmt.Println(keys)
	stop()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// [/jobs/a/spec /jobs/c/spec]
	// stopped: <nil>
}
