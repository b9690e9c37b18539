package manager

import (
	"errors"
	"fmt"
	"slices"

	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// Builder assembles a controller for a manager:
//
//	err := manager.NewControllerManagedBy(mgr).
//		Named("jobs").
//		Watches(source.Prefix("/jobs/")).
//		WithEventFilter(source.ValueChanged()).
//		WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).
//		Complete(r)
//
// Its mistakes are reported by Build (and Complete), naming the controller and the call.
type Builder struct {
	mgr        *Manager
	name       string
	watches    []builderWatch
	filters    []source.Predicate
	opts       reconcile.Options
	shardKey   func(string) string
	leaderOnly bool
}

type builderWatch struct {
	spec     source.Spec
	h        reconcile.EventHandler
	handlers int // how many handlers Watches was given
}

// NewControllerManagedBy starts a Builder for a controller that mgr runs.
func NewControllerManagedBy(mgr *Manager) *Builder { return &Builder{mgr: mgr} }

// Named names the controller (required; unique within the manager).
func (b *Builder) Named(name string) *Builder {
	b.name = name
	return b
}

// Watches feeds the controller from a prefix. h maps events to requests; default
// reconcile.EnqueueKey. At most one handler may be given (reconcile.EnqueueMapped maps an
// event to several requests). The predicates of this watch alone go on the spec
// (source.Spec.WithPredicates); those of every watch go to WithEventFilter.
func (b *Builder) Watches(spec source.Spec, h ...reconcile.EventHandler) *Builder {
	w := builderWatch{spec: spec, handlers: len(h)}
	if len(h) == 1 {
		w.h = h[0]
	}
	b.watches = append(b.watches, w)
	return b
}

// WithEventFilter adds predicates that every event of every watch of the controller must
// pass, after the watch's own predicates and before its handler (controller-runtime's
// WithEventFilter). They judge the controller's resyncs too, when it starts to lead or
// claims a shard: a key or value filter drops the keys it drops live, and a change filter
// such as source.ValueChanged lets a resync through (see package source). Called again,
// it adds to the predicates given before.
func (b *Builder) WithEventFilter(ps ...source.Predicate) *Builder {
	b.filters = append(b.filters, ps...)
	return b
}

// WithOptions sets the controller's options. Name, Logger, Metrics and Gate are set by
// the manager; GracefulShutdownTimeout defaults to the manager's; the predicates of
// WithEventFilter are added to EventFilters.
func (b *Builder) WithOptions(opts reconcile.Options) *Builder {
	b.opts = opts
	return b
}

// ShardKey sets the controller's shard key function (see ShardingOptions.ShardKey), for a
// manager with Sharding.
func (b *Builder) ShardKey(fn func(key string) string) *Builder {
	b.shardKey = fn
	return b
}

// LeaderOnly runs the controller on the leader only, fenced by the leadership, also in a
// manager with Sharding.
func (b *Builder) LeaderOnly() *Builder {
	b.leaderOnly = true
	return b
}

// Complete builds the controller and adds it to the manager.
func (b *Builder) Complete(r reconcile.Reconciler) error {
	_, err := b.Build(r)
	return err
}

// Build builds the controller, adds it to the manager, and returns it (for its sources'
// caches: Controller.Sources).
func (b *Builder) Build(r reconcile.Reconciler) (*reconcile.Controller, error) {
	if b.mgr == nil {
		return nil, errors.New("manager: NewControllerManagedBy needs a manager")
	}
	if b.name == "" {
		return nil, errors.New("manager: controller needs a name (Named)")
	}
	if len(b.watches) == 0 {
		return nil, fmt.Errorf("manager: controller %q watches nothing (Watches)", b.name)
	}
	for i, w := range b.watches {
		switch {
		case w.spec.Prefix == "":
			return nil, fmt.Errorf("manager: controller %q: Watches (watch %d) needs a non-empty prefix", b.name, i+1)
		case w.handlers > 1:
			return nil, fmt.Errorf("manager: controller %q: Watches(%q) was given %d handlers, and a watch takes at most one (reconcile.EnqueueMapped maps an event to several requests)", b.name, w.spec.Prefix, w.handlers)
		}
	}
	for i, p := range b.filters {
		if p == nil {
			return nil, fmt.Errorf("manager: controller %q: WithEventFilter: predicate %d is nil (a nil predicate, or an And, Or, Not, KeyMatches or NewPredicateFuncs given a nil argument)", b.name, i+1)
		}
	}
	opts := b.opts
	opts.Name = b.name
	opts.EventFilters = append(slices.Clip(opts.EventFilters), b.filters...)
	opts.Logger = b.mgr.log.WithName(b.name)
	opts.Metrics = b.mgr.metrics
	if opts.GracefulShutdownTimeout == 0 {
		opts.GracefulShutdownTimeout = b.mgr.opts.GracefulShutdownTimeout
	}
	if b.shardKey != nil && (b.mgr.sharder == nil || b.leaderOnly) {
		return nil, fmt.Errorf("manager: controller %q: ShardKey needs a manager with Sharding and a sharded controller", b.name)
	}
	// The gate refers to the controller (a sharded gate resyncs it), so it is set after New.
	var gate *lateGate
	if b.mgr.election != nil {
		gate = &lateGate{}
		opts.Gate = gate
	}
	c, err := reconcile.New(opts, r)
	if err != nil {
		return nil, err
	}

	for _, w := range b.watches {
		if w.spec.Options.Logger.GetSink() == nil {
			w.spec.Options.Logger = opts.Logger.WithName("source")
		}
		src, err := w.spec.New(b.mgr.client)
		if err != nil {
			return nil, fmt.Errorf("manager: controller %q: %w", b.name, err)
		}
		if err := c.Watch(src, w.h); err != nil {
			return nil, err
		}
	}
	if err := b.mgr.addController(c); err != nil {
		return nil, err
	}
	switch {
	case gate == nil:
	case b.mgr.sharder != nil && !b.leaderOnly:
		gate.Filter = b.mgr.sharder.register(c, b.shardKey)
	default:
		gate.Filter = leaderGate{m: b.mgr}
	}
	return c, nil
}

// lateGate is a controller's gate, set once the controller exists.
type lateGate struct{ reconcile.Filter }
