package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
)

// Defaults of Options.
const (
	DefaultPageSize   = 1000
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// EventType says whether a key was put or deleted.
type EventType int

const (
	// Put is a created or updated key.
	Put EventType = iota
	// Delete is a deleted key.
	Delete
)

func (t EventType) String() string {
	if t == Delete {
		return "DELETE"
	}
	return "PUT"
}

// Event is one change of a key under the prefix.
type Event struct {
	Type EventType
	// Key is the full etcd key.
	Key string
	// KV is the key's new state; for a Delete its ModRevision is the deletion's revision
	// and its Value is empty.
	KV *mvccpb.KeyValue
	// PrevKV is the key's previous state when known (nil for keys first seen in a list).
	PrevKV *mvccpb.KeyValue
	// Initial is true for events synthesised from a list (the initial one or a relist),
	// or from a controller's cache when it resyncs, rather than received from the watch
	// (see IsResync).
	Initial bool
}

// Handler receives the events of a source. It runs on the source's goroutine and must not
// block.
type Handler func(Event)

// Options configure a Source. The zero value is valid except for what New requires.
type Options struct {
	// PageSize is the number of keys read per request while listing. Default DefaultPageSize.
	PageSize int64
	// StartRevision, when positive, replays history: the cache starts from the state just
	// before it and every event from it on is delivered. If that history was compacted the
	// source falls back to a list at the current revision. Default 0: list now, watch after.
	StartRevision int64
	// Predicates filter events before the handlers, for every Run alike; all must pass. A
	// controller applies them to its resyncs of the source's keys as well (see Predicate).
	// The sources a manager shares (manager.Cache) carry none: a watch's predicates filter
	// in front of its own controller's handler instead.
	Predicates []Predicate
	// MinBackoff and MaxBackoff bound the wait before a broken watch is opened again.
	// Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives the source's logs. Default: discarded.
	Logger logr.Logger
	// Keep, when set, limits the cache to the keys it accepts (see Holds): the others are
	// neither cached nor delivered. Keep may change its answers as it goes: call Relist
	// once it accepts keys it did not, so that they are listed, and Evict once it rejects
	// keys it accepted, so that they leave the cache. It is called with the source's lock
	// held and must not call the source.
	Keep func(key string) bool
}

// Source lists and watches one prefix (or one range of keys) and keeps its cache. Create it
// with New (or NewRange), then Run it.
type Source struct {
	client *clientv3.Client
	prefix string // the prefix, or the start of the range
	end    string // the end of the range: the prefix's range end for a prefix
	opts   Options
	log    logr.Logger

	mu    sync.RWMutex
	cache map[string]*mvccpb.KeyValue // guarded by mu
	rev   int64                       // last seen revision, guarded by mu
	stats Stats                       // guarded by mu

	synced chan struct{} // closed once the initial list is in the cache
	moved  chan struct{} // closed and replaced whenever rev moves; guarded by mu
	// failure is the permanent error that keeps the source from listing or watching (see
	// Err), nil once a list or watch succeeds again; failed is closed and replaced whenever
	// it is set. Both guarded by mu.
	failure    error
	failed     chan struct{}
	syncedOnce sync.Once

	// indexes map a name to its index of the cache (see IndexField); guarded by mu, and
	// kept in step with cache under the same lock.
	indexes map[string]*index

	// relist asks the driver for a new list (Relist); asked numbers the requests and
	// listed is the last request a completed list answered. Both guarded by mu.
	relist        chan struct{}
	asked, listed int64

	// running is held by the Run that drives the list and the watch; the other Runs wait
	// on idle (closed and replaced, under mu, when the driver stops) to take over.
	running sync.Mutex
	idle    chan struct{}
	// dmu orders delivery: it is held while the cache takes a list or a watch response and
	// the handlers are given its events, and while a handler joins (with a replay of the
	// cache), so that a joining handler sees every change exactly once, in its replay or
	// live. handlers is guarded by dmu.
	dmu      sync.Mutex
	handlers []*handler
}

// handler is one Run's handler.
type handler struct{ h Handler }

// Stats counts what a source did, for tests and metrics.
type Stats struct {
	Lists      int // initial lists and relists
	Relists    int // relists after a compaction
	Resumes    int // watches opened again after a break
	Duplicates int // events dropped as already seen
}

// New returns a source for every key under prefix. The prefix must not be empty.
func New(client *clientv3.Client, prefix string, opts Options) (*Source, error) {
	if client == nil {
		return nil, errors.New("source: client must not be nil")
	}
	if prefix == "" {
		return nil, errors.New("source: prefix must not be empty (it would watch the whole keyspace)")
	}
	return newSource(client, prefix, clientv3.GetPrefixRangeEnd(prefix), opts)
}

// NewRange returns a source for every key in [start, end): a part of a prefix, such as a
// slice of the keys of a range-sharded controller. The range must not be empty, and end
// must be set (a range to the end of the keyspace would watch every key after start).
// Prefix returns start; Covers and Contains tell what the range holds.
func NewRange(client *clientv3.Client, start, end string, opts Options) (*Source, error) {
	if client == nil {
		return nil, errors.New("source: client must not be nil")
	}
	if start == "" || end == "" || end <= start {
		return nil, fmt.Errorf("source: the range [%q, %q) must have a start and an end after it", start, end)
	}
	return newSource(client, start, end, opts)
}

func newSource(client *clientv3.Client, prefix, end string, opts Options) (*Source, error) {
	if opts.PageSize < 0 {
		return nil, fmt.Errorf("source: PageSize must not be negative, got %d", opts.PageSize)
	}
	if opts.StartRevision < 0 {
		return nil, fmt.Errorf("source: StartRevision must not be negative, got %d", opts.StartRevision)
	}
	if err := checkPredicates("Options.Predicates", opts.Predicates); err != nil {
		return nil, fmt.Errorf("source %s: %w", prefix, err)
	}
	opts.Predicates = slices.Clone(opts.Predicates)
	if opts.PageSize == 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	return &Source{
		client: client,
		prefix: prefix,
		end:    end,
		opts:   opts,
		log:    opts.Logger.WithValues("prefix", prefix),
		cache:  map[string]*mvccpb.KeyValue{},
		synced: make(chan struct{}),
		moved:  make(chan struct{}),
		failed: make(chan struct{}),
		idle:   make(chan struct{}),
		relist: make(chan struct{}, 1),
	}, nil
}

// Prefix returns the watched prefix; for a source of a range (NewRange), its start.
func (s *Source) Prefix() string { return s.prefix }

// Contains reports whether key lies in what the source lists and watches.
func (s *Source) Contains(key string) bool { return key >= s.prefix && key < s.end }

// Run lists the prefix, then watches it until ctx ends, calling h for every event that
// passes the predicates. Run again after a stop, it resumes from the last seen revision
// (relisting if that history was compacted meanwhile). It returns ctx's error, or an error
// if its StartRevision lies in the future. Transient etcd failures are retried with
// backoff, never returned. A permanent one (a denied permission, a failed authentication:
// see Err) is logged at the default level, returned by WaitForSync and Err, and retried
// every MaxBackoff, so that a role fixed by an operator is picked up without a restart.
//
// A source may be shared: several Runs at once (the controllers of a manager on one
// prefix, its cache) share one list, one watch and one cache. One of them drives the list
// and the watch, and another takes over when its ctx ends; each h receives every event
// from the moment it joins. A handler that joins while other Runs are in progress is given
// the cached keys first, as resync events (Put, Initial, PrevKV nil: see Event.IsResync),
// as a controller's resync would, so that it misses no key the others were given. A Run
// alone on a source run before resumes as said above, without such a replay.
func (s *Source) Run(ctx context.Context, h Handler) error {
	if h == nil {
		return errors.New("source: handler must not be nil")
	}
	reg := s.join(h)
	defer s.leave(reg)
	for ctx.Err() == nil {
		s.mu.RLock()
		idle := s.idle
		s.mu.RUnlock()
		if s.running.TryLock() {
			err := s.drive(ctx)
			s.running.Unlock()
			s.mu.Lock()
			close(s.idle)
			s.idle = make(chan struct{})
			s.mu.Unlock()
			return err
		}
		select {
		case <-idle: // the driver stopped: take over
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// join adds h to the handlers, and replays the cache to it when others run the source
// (see Run).
func (s *Source) join(h Handler) *handler {
	reg := &handler{h: h}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	shared := len(s.handlers) > 0
	s.handlers = append(s.handlers, reg)
	if !shared {
		return reg // alone, it resumes where the cache stopped (or lists)
	}
	for _, kv := range s.List("") {
		e := Event{Type: Put, Key: string(kv.Key), KV: kv, Initial: true}
		if s.Accepts(e) {
			h(e)
		}
	}
	return reg
}

// leave removes a handler that join added.
func (s *Source) leave(reg *handler) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.handlers = slices.DeleteFunc(s.handlers, func(o *handler) bool { return o == reg })
}

// WaitForRevision blocks until the cache holds every change up to rev (Revision() >= rev)
// or ctx ends. The revision moves with the prefix's events and etcd's progress
// notifications, so rev should be one of a change under the prefix (a write the caller
// made there), or ctx should bound the wait.
func (s *Source) WaitForRevision(ctx context.Context, rev int64) error {
	for {
		s.mu.RLock()
		cur, moved := s.rev, s.moved
		s.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("source %s: waiting for revision %d (at %d): %w", s.prefix, rev, cur, ctx.Err())
		}
	}
}

// WaitForSync blocks until the initial list is in the cache and the watch that follows it
// is established on etcd, ctx ends, or the source meets a permanent error before it has
// synced (see Err), which it returns at once, naming the prefix and what was refused.
func (s *Source) WaitForSync(ctx context.Context) error {
	for {
		s.mu.RLock()
		failure, failed := s.failure, s.failed
		s.mu.RUnlock()
		if s.HasSynced() {
			return nil
		}
		if failure != nil {
			return failure
		}
		select {
		case <-s.synced:
			return nil
		case <-failed:
		case <-ctx.Done():
			return fmt.Errorf("source %s: waiting for the initial list: %w", s.prefix, ctx.Err())
		}
	}
}

// Err returns the permanent error that keeps the source from listing or watching its
// prefix now (a denied permission, a failed authentication, a refused certificate: errors
// that only an operator can mend), or nil. It turns nil again once a list or watch succeeds.
// The source goes on retrying, so that a mended role is picked up without a restart.
func (s *Source) Err() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.failure
}

// fail records err when it is permanent, and reports whether it was.
func (s *Source) fail(err error) bool {
	if !etcderr.IsPermanent(err) {
		return false
	}
	s.mu.Lock()
	s.failure = err
	close(s.failed)
	s.failed = make(chan struct{})
	s.mu.Unlock()
	return true
}

// clearFailure forgets the permanent error once etcd accepted a list or a watch.
func (s *Source) clearFailure() {
	s.mu.Lock()
	s.failure = nil
	s.mu.Unlock()
}

// HasSynced reports whether the initial list is in the cache and its watch established.
func (s *Source) HasSynced() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

// Get returns the cached state of key. The returned value must not be modified.
func (s *Source) Get(key string) (*mvccpb.KeyValue, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	kv, ok := s.cache[key]
	return kv, ok
}

// List returns the cached keys under prefix (which must lie under the source's prefix, or
// be empty for all), sorted by key. The returned values must not be modified.
func (s *Source) List(prefix string) []*mvccpb.KeyValue {
	s.mu.RLock()
	out := make([]*mvccpb.KeyValue, 0, len(s.cache))
	for k, kv := range s.cache {
		if prefix == "" || (len(k) >= len(prefix) && k[:len(prefix)] == prefix) {
			out = append(out, kv)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out
}

// Covers reports whether the source caches every key under prefix: whether prefix lies
// under the source's own (or, for a range, every key under it lies in the range).
func (s *Source) Covers(prefix string) bool {
	if prefix == "" || prefix < s.prefix {
		return false
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	return end != "\x00" && end <= s.end
}

// Len is the number of cached keys.
func (s *Source) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.cache)
}

// Revision is the last revision the source has seen: every change up to it is in the cache.
func (s *Source) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Stats returns what the source has done so far.
func (s *Source) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stats
}

// Spec names a prefix to watch with its options; a manager makes the Source from it with
// its own client (see manager.Builder.Watches).
type Spec struct {
	Prefix  string
	Options Options
}

// Prefix returns the Spec of a source over prefix with default options.
func Prefix(prefix string) Spec { return Spec{Prefix: prefix} }

// WithOptions returns the spec with opts.
func (s Spec) WithOptions(opts Options) Spec {
	s.Options = opts
	return s
}

// New makes the Source of the spec.
func (s Spec) New(client *clientv3.Client) (*Source, error) { return New(client, s.Prefix, s.Options) }
