package manager

import (
	"errors"
	"fmt"
	"slices"

	"github.com/etcdkit/etcdkit/internal/gate"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// Builder assembles a controller for a manager:
//
//	err := manager.NewControllerManagedBy(mgr).
//		Named("jobs").
//		For(source.Prefix("/jobs/")).
//		Watches(source.Prefix("/runs/"), runToJob).
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
	optsGiven  int // how many times WithOptions was called
	shardKey   func(string) string
	leaderOnly bool
}

type builderWatch struct {
	spec source.Spec
	h    reconcile.EventHandler // nil for Watches given a nil handler (an error)
	call string                 // "For" or "Watches", for errors
}

// NewControllerManagedBy starts a Builder for a controller that mgr runs.
func NewControllerManagedBy(mgr *Manager) *Builder { return &Builder{mgr: mgr} }

// Named names the controller (required; unique within the manager).
func (b *Builder) Named(name string) *Builder {
	b.name = name
	return b
}

// For feeds the controller from a prefix whose keys it reconciles: a change of a key
// queues that key (controller-runtime's For). Call it for each such prefix. The
// predicates of this prefix alone go on the spec (source.Spec.WithPredicates); those of
// every prefix go to WithEventFilter. The prefix is read from the manager's shared cache
// (see Cache): one source per prefix, whichever controllers, stores and readers use it.
func (b *Builder) For(spec source.Spec) *Builder {
	b.watches = append(b.watches, builderWatch{spec: spec, h: reconcile.EnqueueKey(), call: "For"})
	return b
}

// Watches feeds the controller from a prefix whose changes map to other keys through h,
// for example a child key to its owner's (controller-runtime's Watches with
// EnqueueRequestsFromMapFunc): any func(source.Event) []reconcile.Request is a
// reconcile.EventHandler. h must not be nil (For queues the changed keys themselves).
// Predicates and the shared cache are as for For.
func (b *Builder) Watches(spec source.Spec, h reconcile.EventHandler) *Builder {
	b.watches = append(b.watches, builderWatch{spec: spec, h: h, call: "Watches"})
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

// WithOptions sets the controller's options, once: a second call is an error that Build
// reports. Name and Logger are set by the manager; GracefulShutdownTimeout defaults to the manager's; the predicates of
// WithEventFilter are added to EventFilters.
func (b *Builder) WithOptions(opts reconcile.Options) *Builder {
	b.opts = opts
	b.optsGiven++
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

// Build builds the controller, adds it to the manager, and returns it. Reconcilers read
// the controller's sources through the manager's cache (Manager.GetCache), which they
// share with the other controllers on the same prefixes.
func (b *Builder) Build(r reconcile.Reconciler) (*reconcile.Controller, error) {
	if b.mgr == nil {
		return nil, errors.New("manager: NewControllerManagedBy needs a manager")
	}
	if b.name == "" {
		return nil, errors.New("manager: controller needs a name (Named)")
	}
	if len(b.watches) == 0 {
		return nil, fmt.Errorf("manager: controller %q watches nothing (For, Watches)", b.name)
	}
	for i, w := range b.watches {
		switch {
		case w.spec.Prefix == "":
			return nil, fmt.Errorf("manager: controller %q: %s (watch %d) needs a non-empty prefix", b.name, w.call, i+1)
		case w.h == nil:
			return nil, fmt.Errorf("manager: controller %q: Watches(%q) needs a handler that maps a change to requests (For queues the changed keys themselves)", b.name, w.spec.Prefix)
		}
	}
	if b.optsGiven > 1 {
		return nil, fmt.Errorf("manager: controller %q: WithOptions was called %d times; it sets every option at once, so give them in one call (WithEventFilter adds to EventFilters)", b.name, b.optsGiven)
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
	if opts.GracefulShutdownTimeout == 0 {
		opts.GracefulShutdownTimeout = b.mgr.opts.GracefulShutdownTimeout
	}
	if b.shardKey != nil && (b.mgr.sharder == nil || b.leaderOnly) {
		return nil, fmt.Errorf("manager: controller %q: ShardKey needs a manager with Sharding and a sharded controller", b.name)
	}
	c, err := reconcile.New(opts, r)
	if err != nil {
		return nil, err
	}

	// Each watch reads the source of the manager's cache that serves its prefix, shared
	// with the other controllers, stores and readers; its own predicates, and its prefix
	// when a wider source serves it, filter in front of its handler (see Cache: Sharing).
	// Watches that one source serves feed the controller through one handler.
	//
	// A sharded controller in the range mode has sources of its own instead, one per
	// prefix, that cache only the keys of the slices this member owns or is assigned (see
	// sharding.Member.Keeps).
	var srcs []*source.Source
	handlers := map[*source.Source][]reconcile.EventHandler{}
	ranged := b.mgr.sharder != nil && !b.leaderOnly && b.mgr.sharder.Ranged()
	var shardKey func(string) string
	own := map[string]*source.Source{}
	if ranged {
		var prefixes []string
		for _, w := range b.watches {
			prefixes = append(prefixes, w.spec.Prefix)
		}
		shardKey = b.mgr.sharder.KeyFunc(b.shardKey, prefixes)
	}
	for _, w := range b.watches {
		for i, p := range w.spec.Options.Predicates {
			if p == nil {
				return nil, fmt.Errorf("manager: controller %q: source %s: Options.Predicates[%d] is nil (a nil predicate, or an And, Or, Not, KeyMatches or NewPredicateFuncs given a nil argument)", b.name, w.spec.Prefix, i)
			}
		}
		var src *source.Source
		if ranged {
			if src = own[w.spec.Prefix]; src == nil {
				opts := w.spec.Options
				opts.Predicates = nil // they filter in front of the watch's handler, below
				opts.Keep = b.mgr.sharder.Keeps(shardKey)
				opts.Logger = b.mgr.log.WithName("source")
				if src, err = source.New(b.mgr.client, w.spec.Prefix, opts); err != nil {
					return nil, fmt.Errorf("manager: controller %q: %w", b.name, err)
				}
				own[w.spec.Prefix] = src
				b.mgr.cache.adopt(src, opts)
			}
		} else if src, err = b.mgr.cache.sourceFor(w.spec); err != nil {
			return nil, fmt.Errorf("manager: controller %q: %w", b.name, err)
		}
		preds := slices.Clone(w.spec.Options.Predicates)
		if src.Prefix() != w.spec.Prefix {
			preds = append(preds, source.KeyHasPrefix(w.spec.Prefix))
		}
		if handlers[src] == nil {
			srcs = append(srcs, src)
		}
		handlers[src] = append(handlers[src], filtered(w.h, preds))
	}
	for _, src := range srcs {
		if err := c.Watch(src, joined(handlers[src])); err != nil {
			return nil, err
		}
	}
	if err := b.mgr.addController(c); err != nil {
		return nil, err
	}
	// The gate refers to the controller (a sharded gate resyncs it), so it comes after New.
	setup := gate.Setup{Metrics: b.mgr.metrics}
	switch {
	case b.mgr.election == nil:
	case ranged:
		b.mgr.sharder.Cache(srcs...)
		setup.Gate = b.mgr.sharder.Register(c, shardKey)
	case b.mgr.sharder != nil && !b.leaderOnly:
		setup.Gate = b.mgr.sharder.Register(c, b.shardKey)
	default:
		setup.Gate = leaderGate{m: b.mgr}
	}
	if err := gate.Configure(c, setup); err != nil {
		return nil, err
	}
	return c, nil
}

// filtered returns h behind the predicates ps of one watch: an event or a resync that one
// of them drops causes no request.
func filtered(h reconcile.EventHandler, ps []source.Predicate) reconcile.EventHandler {
	if len(ps) == 0 {
		return h
	}
	return func(e source.Event) []reconcile.Request {
		for _, p := range ps {
			if !p(e) {
				return nil
			}
		}
		return h(e)
	}
}

// joined returns one handler for the watches of one source: the requests of each.
func joined(hs []reconcile.EventHandler) reconcile.EventHandler {
	if len(hs) == 1 {
		return hs[0]
	}
	return func(e source.Event) []reconcile.Request {
		var out []reconcile.Request
		for _, h := range hs {
			out = append(out, h(e)...)
		}
		return out
	}
}
