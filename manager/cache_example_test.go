package manager_test

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// A reconciler reads typed objects from the manager's shared cache through a store, and
// finds a parent's children through an index, without a read from etcd.
func ExampleManager_GetCache() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	type task struct {
		Job string `json:"job"`
	}
	mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "jobs", DisableLeaderElection: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	cache := mgr.GetCache()
	tasks, err := store.New[task](c.Client(), "/tasks/", store.Options[task]{Cache: cache})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = cache.IndexField("/tasks/", "job", func(key string, value []byte) []string {
		var t task
		if store.DefaultCodec[task]().Decode(value, &t) != nil {
			return nil
		}
		return []string{t.Job}
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan string, 1)
	err = manager.NewControllerManagedBy(mgr).
		Named("tasks").
		For(source.Prefix("/tasks/")). // shares the store's source: one watch
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			t, err := tasks.Cached(req.Key) // a typed read of the cache, decoded once per revision
			if err != nil {
				return reconcile.Result{}, err
			}
			siblings, err := cache.ByIndex("/tasks/", "job", t.Value.Job)
			if err != nil {
				return reconcile.Result{}, err
			}
			if len(siblings) == 2 {
				select {
				case done <- fmt.Sprintf("job %s has %d tasks", t.Value.Job, len(siblings)):
				default:
				}
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

	_, _ = tasks.Create(ctx, "/tasks/t1", &task{Job: "build"})
	_, _ = tasks.Create(ctx, "/tasks/t2", &task{Job: "build"})
	fmt.Println(<-done)
	stop()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// job build has 2 tasks
	// stopped: <nil>
}
