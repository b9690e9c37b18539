package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/gate"
	"github.com/etcdkit/etcdkit/internal/metrics"
	"github.com/etcdkit/etcdkit/internal/workqueue"
	"github.com/etcdkit/etcdkit/source"
)

// Defaults of Options.
const (
	DefaultMaxConcurrentReconciles = 1
	DefaultBaseDelay               = workqueue.DefaultBaseDelay
	DefaultMaxDelay                = 1000 * time.Second
	DefaultGracefulShutdownTimeout = 30 * time.Second
	DefaultSyncTimeout             = 2 * time.Minute
)

// Options configure a Controller.
type Options struct {
	// Name identifies the controller in logs and metrics. Required.
	Name string
	// MaxConcurrentReconciles is the number of workers. Default 1.
	MaxConcurrentReconciles int
	// ReconcileTimeout, when positive, bounds each reconcile's context. Default: none.
	ReconcileTimeout time.Duration
	// BaseDelay and MaxDelay bound the per-key backoff of the default RateLimiter.
	// Defaults 5 ms and 1000 s. They cannot be set together with RateLimiter.
	BaseDelay, MaxDelay time.Duration
	// RateLimiter decides how long a request waits before a retry, after an error or a
	// Result.Requeue. Default: DefaultRateLimiter with BaseDelay and MaxDelay, the longer
	// of a per-key exponential backoff and DefaultRetryQPS retries a second for the whole
	// controller, with bursts of DefaultRetryBurst.
	RateLimiter RateLimiter
	// GracefulShutdownTimeout is how long Start waits, after its context ends, for
	// reconciles in flight before it cancels their contexts. Default 30 s.
	GracefulShutdownTimeout time.Duration
	// SyncTimeout bounds the wait for the sources' initial lists. Default 2 min.
	SyncTimeout time.Duration
	// TombstoneTTL is how long the last state of a deleted key is kept for its reconcile
	// (see TombstoneFrom) when no reconcile of the key ends without an error first: on a
	// replica that does not reconcile the key (a follower, a member that does not own its
	// shard), until it takes the key over or the TTL passes. Default
	// DefaultTombstoneTTL (10 min).
	TombstoneTTL time.Duration
	// EventFilters judge the events of every source of the controller, after the source's
	// own predicates and before the event handler; all must pass. They judge the
	// controller's resyncs (Resync, ResyncWhere) as well: package source says how each
	// built-in treats a resync. Default: none.
	EventFilters []source.Predicate
	// Logger receives the controller's logs. Default: discarded.
	Logger logr.Logger
}

// Controller runs a Reconciler for the requests its sources produce. A live change is
// handed to a worker before the backlog of a resync (an initial list, a relist, Resync,
// ResyncWhere) and before other live changes that came later; while backlog waits, one of
// its requests goes out after every 10 live ones in a row, so that it drains however
// steady the changes. Retries and RequeueAfter count as live when they are due.
type Controller struct {
	name string
	r    Reconciler
	opts Options
	log  logr.Logger
	m    *metrics.Registry

	queue *workqueue.Queue[string]
	// gate, set by a manager (see configure), admits the requests this process reconciles
	// and gives their fence; nil admits every request, unfenced.
	gate gate.Gate
	// tombs holds the last states of deleted keys until their reconcile (TombstoneFrom).
	tombs *tombstones

	mu      sync.Mutex
	watches []watch
	started bool
}

type watch struct {
	src *source.Source
	h   EventHandler
}

// New returns a controller; Watch adds its sources and Start runs it.
func New(opts Options, r Reconciler) (*Controller, error) {
	if opts.Name == "" {
		return nil, errors.New("reconcile: controller Name must not be empty")
	}
	if r == nil {
		return nil, fmt.Errorf("reconcile: controller %q: reconciler must not be nil", opts.Name)
	}
	if opts.MaxConcurrentReconciles < 0 {
		return nil, fmt.Errorf("reconcile: controller %q: MaxConcurrentReconciles must be at least 1, got %d", opts.Name, opts.MaxConcurrentReconciles)
	}
	if opts.ReconcileTimeout < 0 || opts.GracefulShutdownTimeout < 0 || opts.BaseDelay < 0 || opts.MaxDelay < 0 || opts.SyncTimeout < 0 || opts.TombstoneTTL < 0 {
		return nil, fmt.Errorf("reconcile: controller %q: durations must not be negative", opts.Name)
	}
	if opts.RateLimiter != nil && (opts.BaseDelay != 0 || opts.MaxDelay != 0) {
		return nil, fmt.Errorf("reconcile: controller %q: BaseDelay and MaxDelay configure the default RateLimiter: set them in the RateLimiter given instead", opts.Name)
	}
	for i, p := range opts.EventFilters {
		if p == nil {
			return nil, fmt.Errorf("reconcile: controller %q: EventFilters[%d] is nil (a nil predicate, or an And, Or, Not, KeyMatches or NewPredicateFuncs given a nil argument)", opts.Name, i)
		}
	}
	opts.EventFilters = slices.Clone(opts.EventFilters)
	if opts.MaxConcurrentReconciles == 0 {
		opts.MaxConcurrentReconciles = DefaultMaxConcurrentReconciles
	}
	if opts.BaseDelay == 0 {
		opts.BaseDelay = DefaultBaseDelay
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.RateLimiter == nil {
		opts.RateLimiter = defaultRateLimiter(opts.BaseDelay, opts.MaxDelay)
	}
	if opts.GracefulShutdownTimeout == 0 {
		opts.GracefulShutdownTimeout = DefaultGracefulShutdownTimeout
	}
	if opts.SyncTimeout == 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.TombstoneTTL == 0 {
		opts.TombstoneTTL = DefaultTombstoneTTL
	}
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	c := &Controller{
		name:  opts.Name,
		r:     r,
		opts:  opts,
		log:   opts.Logger.WithValues("controller", opts.Name),
		tombs: newTombstones(opts.TombstoneTTL),
	}
	c.useMetrics(m)
	return c, nil
}

func init() {
	gate.Register(func(controller any, s gate.Setup) error {
		c, ok := controller.(*Controller)
		if !ok {
			return fmt.Errorf("reconcile: cannot set up a %T", controller)
		}
		return c.configure(s)
	})
}

// configure takes what a manager gives the controller: its gate and its metrics. It must
// come before Start and before anything is queued.
func (c *Controller) configure(s gate.Setup) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("reconcile: controller %q: set up after Start", c.name)
	}
	c.gate = s.Gate
	if s.Metrics != nil {
		c.useMetrics(s.Metrics)
	}
	return nil
}

// useMetrics makes m the registry of the controller's series, and of its queue's.
func (c *Controller) useMetrics(m *metrics.Registry) {
	c.m = m
	c.queue = workqueue.New(workqueue.Options[string]{RateLimiter: c.opts.RateLimiter}, m.Queue(c.name))
	m.Controller(c.name, c.opts.MaxConcurrentReconciles)
}

// Name returns the controller's name.
func (c *Controller) Name() string { return c.name }

// Watch feeds the controller from src: every event that passes the source's predicates
// and the controller's EventFilters goes through h (EnqueueKey when nil), and the requests
// it returns are queued. Watch must be called before Start; Start runs the source.
func (c *Controller) Watch(src *source.Source, h EventHandler) error {
	if src == nil {
		return fmt.Errorf("reconcile: controller %q: source must not be nil", c.name)
	}
	if h == nil {
		h = EnqueueKey()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return fmt.Errorf("reconcile: controller %q: Watch after Start", c.name)
	}
	for _, w := range c.watches {
		if w.src == src {
			return fmt.Errorf("reconcile: controller %q watches the source of %s already (a source feeds one handler)", c.name, src.Prefix())
		}
	}
	c.watches = append(c.watches, watch{src: src, h: h})
	return nil
}

// Sources returns the controller's sources, in the order of Watch: their caches serve
// reconcilers (Source.Get, Source.List, store.Options.Cache).
func (c *Controller) Sources() []*source.Source {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*source.Source, len(c.watches))
	for i, w := range c.watches {
		out[i] = w.src
	}
	return out
}

// Enqueue adds a request to the queue, as a live source event would.
func (c *Controller) Enqueue(req Request) { c.add(req, workqueue.Live) }

// add queues req at priority p unless the gate does not want it. Live requests go to
// workers before resync backlog: see handle.
func (c *Controller) add(req Request, p workqueue.Priority) {
	if c.gate != nil && !c.gate.Wants(req.Key) {
		return
	}
	c.queue.AddWithPriority(req.Key, p)
}

// Queued returns a snapshot of the requests waiting for a worker or for their delay.
func (c *Controller) Queued() []Request {
	keys := c.queue.Keys()
	out := make([]Request, len(keys))
	for i, k := range keys {
		out[i] = Request{Key: k}
	}
	return out
}

// QueueLen is the number of requests waiting for a worker.
func (c *Controller) QueueLen() int { return c.queue.Len() }

// Resync queues every key that the sources' caches hold, as the initial lists did: a
// level-triggered pass over the whole state, queued behind live changes (see Controller). Each cached key becomes a resync event, a Put
// with Initial set, PrevKV nil and KV the cached state (see source.Event.IsResync), which
// passes through the source's predicates, the controller's EventFilters and the handler
// as a live event would: key and value filters drop the keys they drop live, change
// filters let it through. A gate calls it when it starts admitting requests that it
// dropped before.
func (c *Controller) Resync() { c.ResyncWhere(nil) }

// ResyncWhere is Resync for the requests that keep returns true for (all when keep is nil):
// a sharded gate resyncs the keys of one shard when it claims it. keep judges the requests
// that the filters and the handler make of the resync events. The deleted keys whose
// tombstones the controller still holds (see TombstoneFrom) are queued too, so that a
// replica that takes keys over reconciles the deletes that their previous owner had not.
func (c *Controller) ResyncWhere(keep func(Request) bool) {
	c.mu.Lock()
	watches := append([]watch(nil), c.watches...)
	c.mu.Unlock()
	for _, w := range watches {
		for _, kv := range w.src.List("") {
			e := source.Event{Type: source.Put, Key: string(kv.Key), KV: kv, Initial: true}
			if w.src.Accepts(e) {
				c.handle(w, e, keep)
			}
		}
	}
	for _, k := range c.tombs.keys() {
		if req := (Request{Key: k}); keep == nil || keep(req) {
			c.add(req, workqueue.Backlog)
		}
	}
}

// Tombstone returns the tombstone the controller holds for key, if any (see
// TombstoneFrom): for inspection; a reconciler gets it from its context.
func (c *Controller) Tombstone(key string) (Tombstone, bool) { return c.tombs.get(key) }

// handle passes e, which the source's predicates have passed, through the controller's
// event filters and w's handler, and queues the requests that keep (nil: all) returns true
// for. The requests of an event from a list (e.Initial: an initial list, a relist, a
// Resync) are backlog: every request of a live event goes to a worker before them, but
// for one backlog request after every workqueue.DefaultLiveBurst live ones in a row, so
// that a resync drains under a steady stream of changes. A live event for a key queued as
// backlog moves it up.
//
// A delete that causes a request for its own key leaves a tombstone with the key's last
// state (TombstoneFrom), recorded before the request is queued, and whether or not this
// process reconciles the key now; a put of the key drops it.
func (c *Controller) handle(w watch, e source.Event, keep func(Request) bool) {
	if e.Type == source.Put {
		c.tombs.forget(e.Key)
	}
	for _, p := range c.opts.EventFilters {
		if !p(e) {
			return
		}
	}
	prio := workqueue.Live
	if e.Initial {
		prio = workqueue.Backlog
	}
	reqs := w.h(e)
	if e.Type == source.Delete && e.PrevKV != nil {
		for _, req := range reqs {
			if req.Key == e.Key && (keep == nil || keep(req)) {
				c.tombs.record(e.Key, e.PrevKV, e.KV.ModRevision)
				break
			}
		}
	}
	for _, req := range reqs {
		if keep == nil || keep(req) {
			c.add(req, prio)
		}
	}
}

// HasSynced reports whether every source has its initial list.
func (c *Controller) HasSynced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watches {
		if !w.src.HasSynced() {
			return false
		}
	}
	return true
}

// Start runs the sources, waits for their initial lists, and runs the workers until ctx
// ends or a source fails. Then it stops taking work, waits up to GracefulShutdownTimeout for
// reconciles in flight, cancels those still running, and returns once every goroutine it
// started has ended. It returns nil after a clean stop, the source's error otherwise.
func (c *Controller) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return fmt.Errorf("reconcile: controller %q already started", c.name)
	}
	c.started = true
	watches := append([]watch(nil), c.watches...)
	c.mu.Unlock()

	// Sources run on goroutines of their own until srcCtx ends (at the end of Start). They
	// may be shared: a Run joins a source that others run (see source.Source.Run); a source
	// that cannot run fails Start.
	srcCtx, stopSources := context.WithCancel(ctx)
	srcFailed := make(chan error, len(watches))
	var srcWG sync.WaitGroup
	for _, w := range watches {
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			err := w.src.Run(srcCtx, func(e source.Event) { c.handle(w, e, nil) })
			if err != nil && srcCtx.Err() == nil {
				srcFailed <- fmt.Errorf("reconcile: controller %q: source %s: %w", c.name, w.src.Prefix(), err)
				stopSources()
			}
		}()
	}
	defer func() {
		stopSources()
		srcWG.Wait()
	}()

	syncCtx, cancelSync := context.WithTimeout(srcCtx, c.opts.SyncTimeout)
	for _, w := range watches {
		if err := w.src.WaitForSync(syncCtx); err != nil {
			cancelSync()
			c.queue.ShutDown()
			select {
			case err := <-srcFailed:
				return err
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reconcile: controller %q: %w", c.name, err)
		}
	}
	cancelSync()
	c.log.Info("starting workers", "workers", c.opts.MaxConcurrentReconciles)

	// Reconciles run on workCtx, which outlives ctx by the graceful shutdown timeout so
	// that a reconcile in flight can finish its writes.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var workers sync.WaitGroup
	for i := 0; i < c.opts.MaxConcurrentReconciles; i++ {
		workers.Add(1)
		go func() { // a worker: ends when the queue shuts down
			defer workers.Done()
			for c.processNext(workCtx) {
			}
		}()
	}

	// Tombstones of keys this replica does not reconcile expire on their own.
	expiry := time.NewTicker(max(c.opts.TombstoneTTL/4, 10*time.Millisecond))
	defer expiry.Stop()
	var result error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case result = <-srcFailed:
			c.log.Error(result, "a source failed; stopping")
			break wait
		case <-expiry.C:
			c.tombs.expire()
		}
	}
	c.log.Info("stopping: no new work, waiting for reconciles in flight", "timeout", c.opts.GracefulShutdownTimeout)
	c.queue.ShutDown()
	idle := make(chan struct{})
	go func() { workers.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(c.opts.GracefulShutdownTimeout):
		c.log.Info("graceful shutdown timeout: cancelling reconciles in flight")
		cancelWork()
		<-idle
	}
	return result
}

// processNext reconciles one request; it returns false once the queue is shut down.
func (c *Controller) processNext(ctx context.Context) bool {
	var handled bool // the reconcile ended with nothing more to do
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	req := Request{Key: key}

	rctx := ctx
	if c.gate != nil {
		gctx, done, ok := c.gate.Admit(ctx, key)
		if !ok {
			c.queue.Forget(key)
			return true
		}
		if done != nil {
			defer done()
		}
		rctx = gctx
	}

	id := newReconcileID()
	log := c.log.WithValues("key", key, "reconcileID", id)
	rctx = logr.NewContext(rctx, log)
	tomb, deleted := c.tombs.get(key)
	if deleted {
		rctx = context.WithValue(rctx, tombstoneKey{}, tomb)
		// The delete is handled once a reconcile of it ends with nothing more to do.
		defer func() {
			if handled {
				c.tombs.done(key, tomb.Revision)
			}
		}()
	}
	if c.opts.ReconcileTimeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(rctx, c.opts.ReconcileTimeout)
		defer cancel()
	}

	active := c.m.ActiveWorkers.WithLabelValues(c.name)
	active.Inc()
	start := time.Now()
	res, err := c.reconcile(rctx, req)
	c.m.ReconcileTime.WithLabelValues(c.name).Observe(time.Since(start).Seconds())
	active.Dec()

	handled = (err == nil && res.IsZero()) || IsTerminal(err)
	switch {
	case err != nil && IsTerminal(err):
		c.queue.Forget(key)
		c.m.ReconcileTotal.WithLabelValues(c.name, "error").Inc()
		c.m.ReconcileErrors.WithLabelValues(c.name).Inc()
		c.m.TerminalReconcileErrors.WithLabelValues(c.name).Inc()
		log.Error(err, "reconcile failed terminally; not retried until the key changes")
	case err != nil && errors.Is(err, fence.ErrFenced):
		// Not a failure of the reconciler: this process lost the key's shard or the
		// leadership while it ran, and the new owner reconciles the key. The retry goes
		// through the gate, which drops it unless the ownership came back.
		c.m.ReconcileTotal.WithLabelValues(c.name, "error").Inc()
		c.m.FencedWrites.WithLabelValues(c.name).Inc()
		log.Info("reconcile fenced: the ownership ended while it ran", "error", err.Error())
		c.queue.AddRateLimited(key)
	case err != nil:
		c.m.ReconcileTotal.WithLabelValues(c.name, "error").Inc()
		c.m.ReconcileErrors.WithLabelValues(c.name).Inc()
		log.Error(err, "reconcile failed; retrying with backoff", "retries", c.queue.NumRequeues(key))
		c.queue.AddRateLimited(key)
	case res.RequeueAfter > 0:
		c.queue.Forget(key)
		c.m.ReconcileTotal.WithLabelValues(c.name, "requeue_after").Inc()
		c.queue.AddAfter(key, res.RequeueAfter)
	case res.Requeue:
		c.m.ReconcileTotal.WithLabelValues(c.name, "requeue").Inc()
		c.queue.AddRateLimited(key)
	default:
		c.queue.Forget(key)
		c.m.ReconcileTotal.WithLabelValues(c.name, "success").Inc()
	}
	return true
}

// reconcile calls the reconciler, turning a panic into an error.
func (c *Controller) reconcile(ctx context.Context, req Request) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.m.ReconcilePanics.WithLabelValues(c.name).Inc()
			LoggerFrom(ctx).Error(fmt.Errorf("%v", p), "reconciler panicked", "stack", string(debug.Stack()))
			err = fmt.Errorf("reconcile: panic in reconciler for %s: %v", req.Key, p)
		}
	}()
	return c.r.Reconcile(ctx, req)
}

func newReconcileID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
