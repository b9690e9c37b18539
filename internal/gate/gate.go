// Package gate holds what a manager gives its controllers beyond reconcile.Options: the
// gate that decides whether this process reconciles a key, and the manager's metrics.
// Users never see it: the manager sets it up for the controllers it builds.
package gate

import (
	"context"
	"fmt"
	"sync"

	"github.com/etcdkit/etcdkit/internal/metrics"
)

// Gate decides whether this process reconciles a key, and in which context. One gate
// serves each managed controller: the leadership's for a leader-only controller, the
// shards' for a sharded one.
type Gate interface {
	// Wants reports whether key should be queued at all: a sharded gate keeps the keys of
	// shards owned elsewhere out of the queue, and resyncs them once it claims their shard.
	Wants(key string) bool
	// Admit is called when a worker takes key, with the reconcile's context. ok false drops
	// the request: another process reconciles it. Otherwise rctx, derived from ctx, carries
	// the ownership's fence (fence.With) and ends when the ownership does; done, when not
	// nil, is called after the reconcile ends.
	Admit(ctx context.Context, key string) (rctx context.Context, done func(), ok bool)
}

// Setup is what a manager gives a controller.
type Setup struct {
	// Gate admits the controller's keys; nil admits every key, unfenced.
	Gate Gate
	// Metrics receives the controller's series; nil keeps the controller's own registry.
	Metrics *metrics.Registry
}

var (
	mu        sync.Mutex
	configure func(controller any, s Setup) error
)

// Register is how package reconcile says how to set a controller up (at init).
func Register(fn func(controller any, s Setup) error) {
	mu.Lock()
	defer mu.Unlock()
	configure = fn
}

// Configure sets controller up with s; it must be called before the controller starts.
func Configure(controller any, s Setup) error {
	mu.Lock()
	fn := configure
	mu.Unlock()
	if fn == nil {
		return fmt.Errorf("gate: no controller package registered to configure %T", controller)
	}
	return fn(controller, s)
}
