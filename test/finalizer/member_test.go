//go:build unix

package finalizer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// A member process is the test binary started again with memberEnv set: it runs the
// parents controller until SIGTERM, and prints "ready" once its manager leads.
const (
	memberEnv    = "ETCDKIT_FINALIZERTEST_MEMBER" // the member's ID
	endpointsEnv = "ETCDKIT_FINALIZERTEST_ENDPOINTS"

	parentsPrefix  = "/parents/"
	childrenPrefix = "/children/"
	finalizer      = "parents/children"
	memberTTL      = 2 * time.Second
	// cleanupStep is the pause between two children's deletes: the cleanup of a parent
	// takes a while, so that a spec can kill its member in the middle of it.
	cleanupStep = 100 * time.Millisecond
)

// parent owns the children /children/<parent>-<i>.
type parent struct {
	store.Lifecycle
	Children int `json:"children"`
}

// childKey names a parent's i-th child.
func childKey(parent string, i int) string {
	return fmt.Sprintf("%s%s-%02d", childrenPrefix, parent, i)
}

func runMember() int {
	id := os.Getenv(memberEnv)
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "member %s: %v\n", id, err)
		return 1
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(os.Getenv(endpointsEnv), ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, id, prefix, args) }, funcr.Options{LogTimestamp: true})
	mgr, err := manager.New(manager.Options{Client: cli, Name: "finalizertest", ID: id, LeaseTTL: memberTTL, Logger: log})
	if err != nil {
		return fail(err)
	}
	parents, err := store.New[parent](cli, parentsPrefix, store.Options[parent]{Cache: mgr.GetCache()})
	if err != nil {
		return fail(err)
	}
	children, err := store.New[string](cli, childrenPrefix, store.Options[string]{Cache: mgr.GetCache()})
	if err != nil {
		return fail(err)
	}
	err = manager.NewControllerManagedBy(mgr).Named("parents").
		For(source.Prefix(parentsPrefix)).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			p, err := parents.Cached(req.Key)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return reconcile.Result{}, nil
			case err != nil:
				return reconcile.Result{}, err
			case !p.Value.HasFinalizer(finalizer) && !p.Value.Deleting():
				_, err := parents.AddFinalizer(ctx, req.Key, finalizer)
				return reconcile.Result{}, err
			case !p.Value.Deleting():
				return reconcile.Result{}, nil
			}
			// Being deleted: one child at a time, then the finalizer.
			name := strings.TrimPrefix(req.Key, parentsPrefix)
			left, err := children.CachedList()
			if err != nil {
				return reconcile.Result{}, err
			}
			for _, c := range left {
				if strings.HasPrefix(c.Key, childrenPrefix+name+"-") {
					if err := children.Delete(ctx, c.Key, 0); err != nil {
						return reconcile.Result{}, err
					}
					return reconcile.Result{RequeueAfter: cleanupStep}, nil
				}
			}
			return reconcile.Result{}, parents.RemoveFinalizer(ctx, req.Key, finalizer)
		}))
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		select {
		case <-mgr.Elected():
			fmt.Println("ready")
		case <-ctx.Done():
		}
	}()
	if err := mgr.Start(ctx); err != nil {
		return fail(err)
	}
	return 0
}
