package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/source"
)

// Cache is a manager's shared cache: at most one source.Source per prefix, shared by the
// manager's controllers (Builder.Watches), its stores (store.Options.Cache) and the
// reconcilers and other code that read it (Get, List, ByIndex), as controller-runtime's
// cache is shared by a manager's controllers and clients. Get it with Manager.GetCache. It
// is safe for concurrent use.
//
// # Sharing
//
// A prefix is served by the first source whose prefix it lies under: a source of /jobs/
// serves /jobs/ and /jobs/a/, so that one watch and one cache serve them all; a source of a
// prefix that no source covers yet is made when it is first asked for (Source, Watches, a
// store). Ask for the widest prefix first: a wider prefix asked for after a narrower one
// gets a source of its own, and the keys under the narrower one are then cached twice.
//
// A shared source filters nothing: the predicates of a watch (source.Spec.WithPredicates,
// its Options.Predicates) judge that watch's events and the controller's resyncs of them,
// in the controller, and no other reader's. A watch of a narrower prefix served by a
// wider source sees only its own keys.
//
// The other options of a source (PageSize, StartRevision, MinBackoff, MaxBackoff) are set
// by the first one to ask for it. A later request that sets one of them to another value
// is refused with an error that names the prefix and the option; one that leaves it zero
// takes the source's.
//
// # Life
//
// Sources made before Manager.Start start with it, before its controllers; those made
// later start at once. They stop when the manager stops.
type Cache struct {
	client *clientv3.Client
	log    logr.Logger

	mu      sync.Mutex
	sources []*cached       // in the order made; guarded by mu
	ctx     context.Context // the manager's, set by start; nil before. Guarded by mu.
	fail    func(error)     // reports a source that cannot run; guarded by mu
	wg      sync.WaitGroup  // the sources' goroutines
}

// cached is one source of the cache with the options it was made with. A partial source
// is a range-sharded controller's own: it holds the keys of this member's slices only
// (see adopt).
type cached struct {
	src     *source.Source
	opts    source.Options
	partial bool
}

func newCache(client *clientv3.Client, log logr.Logger) *Cache {
	return &Cache{client: client, log: log}
}

// GetCache returns the manager's shared cache (controller-runtime's GetCache): the sources
// of its controllers, which reconcilers read instead of etcd, and a place to cache other
// prefixes. store.New[T](client, prefix, store.Options[T]{Cache: mgr.GetCache()}) makes a
// store whose Cached and CachedList read it.
func (m *Manager) GetCache() *Cache { return m.cache }

// Source returns the source that caches prefix, making it (with default options) when no
// source of the cache covers prefix yet. Made after the manager started, it starts at once;
// wait for it with WaitForSync.
//
// A prefix that only a range-sharded controller's source covers is served by it: it holds
// the keys of this member's slices, and a store's Cached of another key fails with
// store.ErrNotCached (see Holds) rather than a full copy of the prefix being made.
func (c *Cache) Source(prefix string) (*source.Source, error) {
	if src := c.serving(prefix); src != nil {
		return src, nil
	}
	return c.sourceFor(source.Prefix(prefix))
}

// adopt adds a range-sharded controller's own source (see Source) for the readers of the
// cache; it is not shared with other controllers' watches, which get full sources.
func (c *Cache) adopt(src *source.Source, opts source.Options) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources = append(c.sources, &cached{src: src, opts: effective(opts), partial: true})
	if c.ctx != nil {
		c.runLocked(src)
	}
}

// sourceFor returns the source that serves spec, making it when none covers spec.Prefix.
// The source is made without spec's predicates (see Cache: Sharing).
func (c *Cache) sourceFor(spec source.Spec) (*source.Source, error) {
	if spec.Prefix == "" {
		return nil, errors.New("manager: cache: prefix must not be empty (it would watch the whole keyspace)")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		if s.src.Covers(spec.Prefix) && !s.partial {
			if err := compatible(spec, s); err != nil {
				return nil, err
			}
			return s.src, nil
		}
	}
	opts := spec.Options
	opts.Predicates = nil
	if opts.Logger.GetSink() == nil {
		opts.Logger = c.log
	}
	src, err := source.New(c.client, spec.Prefix, opts)
	if err != nil {
		return nil, fmt.Errorf("manager: cache: %w", err)
	}
	s := &cached{src: src, opts: effective(opts)}
	c.sources = append(c.sources, s)
	if c.ctx != nil {
		c.runLocked(s.src)
	}
	return src, nil
}

// compatible reports how spec's options differ from those s was made with.
func compatible(spec source.Spec, s *cached) error {
	o, have := effective(spec.Options), s.opts
	differs := func(name string, want, got any, set bool) error {
		if set && want != got {
			return fmt.Errorf("manager: cache: %s is served by the source of %s, made with %s %v; a watch that shares it cannot ask for %v (leave the option zero, or use another prefix)",
				spec.Prefix, s.src.Prefix(), name, got, want)
		}
		return nil
	}
	set := spec.Options
	return errors.Join(
		differs("PageSize", o.PageSize, have.PageSize, set.PageSize != 0),
		differs("StartRevision", o.StartRevision, have.StartRevision, set.StartRevision != 0),
		differs("MinBackoff", o.MinBackoff, have.MinBackoff, set.MinBackoff != 0),
		differs("MaxBackoff", o.MaxBackoff, have.MaxBackoff, set.MaxBackoff != 0),
	)
}

// effective returns opts with the defaults that source.New applies, so that an option set
// to its default matches a source made without it.
func effective(opts source.Options) source.Options {
	if opts.PageSize == 0 {
		opts.PageSize = source.DefaultPageSize
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = source.DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(source.DefaultMaxBackoff, opts.MinBackoff)
	}
	return opts
}

// start runs every source, and those made later, until ctx ends; fail receives the error
// of a source that cannot run. The manager calls it before it starts its controllers.
func (c *Cache) start(ctx context.Context, fail func(error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ctx, c.fail = ctx, fail
	for _, s := range c.sources {
		c.runLocked(s.src)
	}
}

// runLocked runs src on a goroutine of its own until the cache's ctx ends; the caller
// holds mu. The cache's Run drives the source while the manager runs, and its controllers'
// Runs join it (see source.Source.Run).
func (c *Cache) runLocked(src *source.Source) {
	ctx, fail := c.ctx, c.fail
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := src.Run(ctx, func(source.Event) {}); err != nil && ctx.Err() == nil {
			fail(fmt.Errorf("manager: cache: %w", err))
		}
	}()
}

// wait returns once every source goroutine has ended (after the ctx of start).
func (c *Cache) wait() { c.wg.Wait() }

// Sources returns the cache's sources, in the order they were made.
func (c *Cache) Sources() []*source.Source {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*source.Source, len(c.sources))
	for i, s := range c.sources {
		out[i] = s.src
	}
	return out
}

// serving returns the source that covers prefix, a full one before a partial one, or nil.
func (c *Cache) serving(prefix string) *source.Source {
	c.mu.Lock()
	defer c.mu.Unlock()
	var partial *source.Source
	for _, s := range c.sources {
		if s.src.Covers(prefix) {
			if !s.partial {
				return s.src
			}
			if partial == nil {
				partial = s.src
			}
		}
	}
	return partial
}

// Holds reports whether the cache holds key when it exists: a source covers it, and, for a
// range-sharded controller's source, the key is in one of this member's slices.
func (c *Cache) Holds(key string) bool {
	src := c.serving(key)
	return src != nil && src.Holds(key)
}

// Covers reports whether a source of the cache covers prefix.
func (c *Cache) Covers(prefix string) bool { return c.serving(prefix) != nil }

// Get returns the cached state of key; false when it is not cached, or when no source
// covers it (see Covers). The returned value must not be modified.
func (c *Cache) Get(key string) (*mvccpb.KeyValue, bool) {
	src := c.serving(key)
	if src == nil {
		return nil, false
	}
	return src.Get(key)
}

// List returns the cached keys under prefix, sorted by key; nil when no source covers
// prefix (see Covers). The returned values must not be modified.
func (c *Cache) List(prefix string) []*mvccpb.KeyValue {
	src := c.serving(prefix)
	if src == nil {
		return nil
	}
	return src.List(prefix)
}

// WaitForSync waits until every source of the cache has its initial list and its watch,
// ctx ends, or a source meets a permanent error (see source.Source.WaitForSync).
func (c *Cache) WaitForSync(ctx context.Context) error {
	for _, src := range c.Sources() {
		if err := src.WaitForSync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// IndexField adds an index named name over the keys under prefix (controller-runtime's
// IndexField): ByIndex(prefix, name, v) returns the cached keys under prefix for which fn
// returns v, for example every child of a parent, without a scan. The source that serves
// prefix (made when none does) keeps it up to date through puts, deletes and relists; an
// index added after it has synced indexes the keys cached already. Names are unique per
// source: a name given twice for prefixes that one source serves is an error. fn runs
// under the source's lock whenever a key changes: it must be quick and must not read the
// cache (see source.IndexFunc).
func (c *Cache) IndexField(prefix, name string, fn source.IndexFunc) error {
	if fn == nil {
		return fmt.Errorf("manager: cache: IndexField(%q, %q): the index function must not be nil", prefix, name)
	}
	src, err := c.Source(prefix)
	if err != nil {
		return err
	}
	narrow := func(key string, value []byte) []string {
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		return fn(key, value)
	}
	if err := src.IndexField(name, narrow); err != nil {
		return fmt.Errorf("manager: cache: %w", err)
	}
	return nil
}

// ByIndex returns the cached keys under prefix that the index name (see IndexField) maps
// to value, sorted by key. An index that was not added is an error wrapping
// source.ErrNoIndex. The returned values must not be modified.
func (c *Cache) ByIndex(prefix, name, value string) ([]*mvccpb.KeyValue, error) {
	src := c.serving(prefix)
	if src == nil {
		return nil, fmt.Errorf("manager: cache: ByIndex(%q, %q): %w: no source caches %s", prefix, name, source.ErrNoIndex, prefix)
	}
	kvs, err := src.ByIndex(name, value)
	if err != nil {
		return nil, fmt.Errorf("manager: cache: %w", err)
	}
	if src.Prefix() != prefix {
		out := kvs[:0]
		for _, kv := range kvs {
			if strings.HasPrefix(string(kv.Key), prefix) {
				out = append(out, kv)
			}
		}
		kvs = out
	}
	return kvs, nil
}
