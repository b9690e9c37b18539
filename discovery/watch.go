package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/source"
)

// The bounds of the wait before a broken watch of a service is opened again.
const (
	watchMinBackoff = 50 * time.Millisecond
	watchMaxBackoff = 2 * time.Second
)

// Watch reports the changes of a service's instances to fn.
//
// Watch lists the service first and calls fn with ServiceAdded for every instance present,
// in ID order, before it returns. It then follows the changes in a goroutine of the
// registry and returns at once; fn is called from that goroutine, one event at a time, in
// the order of the changes, until ctx ends or the registry is closed (Close waits for it,
// so fn must not call Close: it would wait for itself; cancel the watch's ctx instead).
// An error means nothing will be reported: the initial list met a permanent error (the
// user may not read the service's prefix, which the error names), or ctx ended or the
// registry was closed before it succeeded. A transient one (etcd unreachable, no leader) is
// retried until ctx ends.
//
// The events survive reconnects and compaction: a broken watch (etcd lost its leader, the
// connection dropped, ...) resumes after the last change it saw, and when etcd compacted
// the revisions it needed the service is listed again, the differences from the instances
// known so far are reported as events, and the watch goes on from the list's revision. A
// rewrite that leaves an instance's description unchanged (a heartbeat publishing it again
// on a new lease) is not reported.
func (r *Registry) Watch(ctx context.Context, name string, fn func(ServiceEvent)) error {
	_, err := r.startWatch(ctx, name, fn)
	return err
}

// startWatch is Watch, returning a channel that is closed when the watch has stopped.
func (r *Registry) startWatch(ctx context.Context, name string, fn func(ServiceEvent)) (<-chan struct{}, error) {
	if err := checkName("service name", name); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, errors.New("discovery: watch callback must not be nil")
	}
	w := &watcher{r: r, name: name, prefix: r.servicePrefix(name), fn: fn, log: r.log.WithValues("service", name)}
	src, err := source.New(r.client, w.prefix, source.Options{
		MinBackoff: watchMinBackoff, MaxBackoff: watchMaxBackoff, Logger: w.log,
	})
	if err != nil {
		return nil, fmt.Errorf("discovery: watching %s: %w", name, err)
	}
	w.src = src

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	r.wg.Add(1)
	r.mu.Unlock()

	// The watch ends with the caller's ctx or Close; also when the client closes, which
	// the source would otherwise retry until one of those.
	wctx, cancelWatch := etcdutil.Bound(ctx, r.ctx)
	sctx, cancelClient := etcdutil.Bound(wctx, r.client.Ctx())
	stop := func() { cancelClient(); cancelWatch() }
	done := make(chan struct{})
	// The watch goroutine belongs to the registry (r.wg) and runs the source until sctx
	// ends: the caller's context, Close (which waits for it), or the client closing.
	go func() {
		defer r.wg.Done()
		defer close(done)
		defer stop()
		_ = src.Run(sctx, w.handle) // it returns sctx's error
		if wctx.Err() == nil {
			w.log.Info("etcd client closed; the watch ends")
		}
	}()
	if err := src.WaitForSync(sctx); err != nil {
		stop()
		<-done
		if r.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("discovery: watching %s: %w", name, err)
	}
	w.release()
	return done, nil
}

// watcher turns the events of a source over one service's prefix into ServiceEvents. The
// instances reported to fn so far are exactly the keys of the source's cache whose values
// decode: an event's PrevKV is therefore the instance as last reported.
type watcher struct {
	r      *Registry
	name   string
	prefix string
	fn     func(ServiceEvent)
	log    logr.Logger
	src    *source.Source
	lists  int // the source's list count at the last relist logged; source goroutine only

	// Until Watch returns, events are held rather than reported, so that a Watch that
	// fails has reported nothing. held and live are guarded by mu.
	mu   sync.Mutex
	held []ServiceEvent
	live bool
}

// handle is the source's handler. It runs on the source's goroutine, with the event in the
// cache.
func (w *watcher) handle(e source.Event) {
	if e.Initial && w.src.HasSynced() {
		// Events from a list after the initial one: a relist after a compaction.
		if n := w.src.Stats().Lists; n != w.lists {
			w.lists = n
			w.log.Info("watch broken: history compacted; reporting the differences found by listing the service again",
				"revision", w.src.Revision())
		}
	}
	var old ServiceInfo
	had := false
	if e.PrevKV != nil {
		old, had, _ = parseInstance(w.name, w.prefix, e.PrevKV)
	}
	var now ServiceInfo
	ok := false
	if e.Type == source.Put {
		now, ok = w.r.decode(w.name, w.prefix, e.KV)
	}
	switch {
	case ok && !had:
		w.emit(ServiceEvent{Type: ServiceAdded, Service: now})
	case ok && !old.equal(now):
		w.emit(ServiceEvent{Type: ServiceUpdated, Service: now})
	case !ok && had:
		w.emit(ServiceEvent{Type: ServiceRemoved, Service: old})
	}
}

// emit reports ev to fn, or holds it while Watch has not returned yet.
func (w *watcher) emit(ev ServiceEvent) {
	w.mu.Lock()
	if !w.live {
		w.held = append(w.held, ev)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	w.fn(ev)
}

// release reports the held events and lets the source's goroutine report the next ones;
// an event that arrives meanwhile waits for the held ones.
func (w *watcher) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range w.held {
		w.fn(ev)
	}
	w.held, w.live = nil, true
}
