package manager_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// ReplicaSet is a parent whose pods /pods/<set>-<i> must go before it does.
type ReplicaSet struct {
	store.Lifecycle
	Replicas int `json:"replicas"`
}

// A controller that keeps a set's pods, and deletes them through a finalizer before the
// set goes: sets.Delete only marks a set that has the finalizer.
func Example_finalizers() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	cli := c.Client()
	mgr, err := manager.New(manager.Options{Client: cli, Name: "sets", LeaseTTL: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	sets, err := store.New[ReplicaSet](cli, "/sets/", store.Options[ReplicaSet]{Cache: mgr.GetCache()})
	if err != nil {
		fmt.Println(err)
		return
	}
	pods, err := store.New[string](cli, "/pods/", store.Options[string]{Cache: mgr.GetCache()})
	if err != nil {
		fmt.Println(err)
		return
	}
	podsOf := func(set *store.Object[ReplicaSet]) []*store.Object[string] {
		all, _ := pods.CachedList()
		var out []*store.Object[string]
		for _, p := range all {
			if strings.HasPrefix(p.Key, pods.Key(strings.TrimPrefix(set.Key, sets.Prefix())+"-")) {
				out = append(out, p)
			}
		}
		return out
	}
	deletePodsOf := func(ctx context.Context, set *store.Object[ReplicaSet]) error {
		for _, p := range podsOf(set) {
			if err := pods.Delete(ctx, p.Key, 0); err != nil {
				return err
			}
		}
		return nil
	}

	reconciler := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		set, err := sets.Cached(req.Key)
		switch {
		case errors.Is(err, store.ErrNotFound): // gone: an etcdctl del, or the last finalizer removed
			if t, ok := reconcile.TombstoneFrom(ctx); ok {
				last, _ := sets.Decode(t.KV) // what it was, for a cleanup that a plain delete skipped
				_ = last
			}
			return reconcile.Result{}, nil
		case err != nil:
			return reconcile.Result{}, err
		case set.Value.Deleting(): // sets.Delete found the finalizer and marked the set
			if err := deletePodsOf(ctx, set); err != nil {
				return reconcile.Result{}, err // retried: the mark and the finalizer wait in etcd
			}
			return reconcile.Result{}, sets.RemoveFinalizer(ctx, req.Key, "pods") // the last one deletes the key
		case !set.Value.HasFinalizer("pods"):
			_, err := sets.AddFinalizer(ctx, req.Key, "pods")
			return reconcile.Result{}, err
		}
		for i := len(podsOf(set)); i < set.Value.Replicas; i++ {
			name := fmt.Sprintf("%s-%d", strings.TrimPrefix(req.Key, sets.Prefix()), i)
			if _, err := pods.Create(ctx, pods.Key(name), new(string)); err != nil && !errors.Is(err, store.ErrExists) {
				return reconcile.Result{}, err
			}
		}
		return reconcile.Result{}, nil
	})
	err = manager.NewControllerManagedBy(mgr).Named("sets").For(source.Prefix("/sets/")).Complete(reconciler)
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- mgr.Start(runCtx) }()
	<-mgr.Elected()

	count := func(prefix string) int64 {
		resp, err := cli.Get(ctx, prefix, clientv3WithCount()...)
		if err != nil {
			return -1
		}
		return resp.Count
	}
	waitFor := func(ok func() bool) {
		for ctx.Err() == nil && !ok() {
			time.Sleep(5 * time.Millisecond)
		}
	}
	_, _ = sets.Create(ctx, sets.Key("web"), &ReplicaSet{Replicas: 3})
	waitFor(func() bool { return count("/pods/web-") == 3 })
	waitFor(func() bool {
		s, err := sets.Get(ctx, sets.Key("web"))
		return err == nil && s.Value.HasFinalizer("pods")
	})
	fmt.Println("pods of web:", count("/pods/web-"))

	_ = sets.Delete(ctx, sets.Key("web"), 0) // marks the set: its pods go first
	waitFor(func() bool { return count("/sets/web") == 0 })
	fmt.Println("after the delete: sets", count("/sets/web"), "pods", count("/pods/web-"))
	stop()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// pods of web: 3
	// after the delete: sets 0 pods 0
	// stopped: <nil>
}

// clientv3WithCount counts the keys under a prefix without reading them.
func clientv3WithCount() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}
