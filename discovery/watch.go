package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// Watch reports the changes of a service's instances to fn.
//
// Watch lists the service first and calls fn with ServiceAdded for every instance present,
// in ID order, before it returns. It then follows the changes in a goroutine of the
// registry and returns at once; fn is called from that goroutine, one event at a time, in
// the order of the changes, until ctx ends or the registry is closed (Close waits for it,
// so fn must not call Close: it would wait for itself; cancel the watch's ctx instead).
// An error means the initial list failed and nothing will be reported.
//
// The events survive reconnects and compaction: when the watch breaks (etcd compacted the
// revisions it needed, lost its leader, ...) the service is listed again and the
// differences from the instances known so far are reported as events, and the watch goes
// on from the list's revision. A rewrite that leaves an instance's description unchanged
// (a heartbeat publishing it again on a new lease) is not reported.
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
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	r.wg.Add(1)
	r.mu.Unlock()

	ctx, cancel := etcdutil.Bound(ctx, r.ctx)
	w := &watcher{
		r:      r,
		name:   name,
		prefix: r.servicePrefix(name),
		fn:     fn,
		known:  map[string]instance{},
	}
	if err := w.relist(ctx); err != nil {
		cancel()
		r.wg.Done()
		if r.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("discovery: watching %s: %w", name, err)
	}
	done := make(chan struct{})
	// The watch goroutine belongs to the registry (r.wg) and stops when ctx ends: the
	// caller's context or Close, which waits for it.
	go func() {
		defer r.wg.Done()
		defer close(done)
		defer cancel()
		w.run(ctx)
	}()
	return done, nil
}

// instance is a known instance and the revision its description was last written at.
type instance struct {
	info   ServiceInfo
	modRev int64
}

// watcher follows one service. known is exactly the set of instances reported to fn so
// far; rev is the revision known reflects. Only the watch goroutine touches them after the
// initial list.
type watcher struct {
	r      *Registry
	name   string
	prefix string
	fn     func(ServiceEvent)
	known  map[string]instance // by key
	rev    int64
}

// run watches from rev+1, and relists whenever the watch breaks, until ctx ends or the
// client is closed.
func (w *watcher) run(ctx context.Context) {
	log := w.r.log.WithValues("service", w.name)
	bo := etcdutil.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	pause := func() bool { return etcdutil.Sleep(ctx, bo.Next()) }
	for {
		progressed, err := w.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		if w.r.client.Ctx().Err() != nil {
			log.Info("etcd client closed; the watch ends")
			return
		}
		log.Info("watch broken; listing the service again", "revision", w.rev, "reason", err.Error())
		// A watch that delivered something was healthy: relist at once. One that broke
		// before delivering anything (no leader, say) is not retried in a tight loop.
		if progressed {
			bo.Reset()
		} else if !pause() {
			return
		}
		for {
			err := w.relist(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			log.Info("listing the service failed; retrying", "retryIn", d.String(), "error", err.Error())
			if !etcdutil.Sleep(ctx, d) {
				return
			}
		}
	}
}

// watch follows the changes from rev+1 until the watch breaks, and returns why. It reports
// whether any response arrived.
func (w *watcher) watch(ctx context.Context) (bool, error) {
	// WithRequireLeader makes a member that lost its leader end the watch instead of
	// keeping it silently stale.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.r.client.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1),
		clientv3.WithProgressNotify())
	progressed := false
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return progressed, err
		}
		progressed = true
		if resp.IsProgressNotify() {
			w.rev = max(w.rev, resp.Header.Revision)
			continue
		}
		for _, ev := range resp.Events {
			w.apply(ev)
		}
	}
	return progressed, errors.New("watch channel closed")
}

// apply reports one change and records it in known.
func (w *watcher) apply(ev *clientv3.Event) {
	kv := ev.Kv
	w.rev = max(w.rev, kv.ModRevision)
	key := string(kv.Key)
	old, had := w.known[key]
	if ev.Type == mvccpb.DELETE {
		if had {
			delete(w.known, key)
			w.fn(ServiceEvent{Type: ServiceRemoved, Service: old.info})
		}
		return
	}
	if had && kv.ModRevision <= old.modRev {
		return // already seen (a duplicate after a reconnect)
	}
	info, ok := w.r.decode(w.name, w.prefix, kv.Key, kv.Value, kv.ModRevision)
	if !ok {
		if had {
			delete(w.known, key)
			w.fn(ServiceEvent{Type: ServiceRemoved, Service: old.info})
		}
		return
	}
	w.known[key] = instance{info: info, modRev: kv.ModRevision}
	switch {
	case !had:
		w.fn(ServiceEvent{Type: ServiceAdded, Service: info})
	case !old.info.equal(info):
		w.fn(ServiceEvent{Type: ServiceUpdated, Service: info})
	}
}

// relist reads the service at the current revision and reports how it differs from known:
// new instances as added, changed ones as updated, vanished ones as removed.
func (w *watcher) relist(ctx context.Context) error {
	kvs, rev, err := etcdutil.ListPrefix(ctx, w.r.client, w.prefix, 0, 0)
	if err != nil {
		return err
	}
	fresh := make(map[string]instance, len(kvs))
	keys := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		if info, ok := w.r.decode(w.name, w.prefix, kv.Key, kv.Value, kv.ModRevision); ok {
			fresh[string(kv.Key)] = instance{info: info, modRev: kv.ModRevision}
			keys = append(keys, string(kv.Key))
		}
	}
	var events []ServiceEvent
	for _, key := range keys {
		now := fresh[key]
		old, had := w.known[key]
		switch {
		case !had:
			events = append(events, ServiceEvent{Type: ServiceAdded, Service: now.info})
		case old.modRev != now.modRev && !old.info.equal(now.info):
			events = append(events, ServiceEvent{Type: ServiceUpdated, Service: now.info})
		}
	}
	var gone []string
	for key := range w.known {
		if _, ok := fresh[key]; !ok {
			gone = append(gone, key)
		}
	}
	sort.Strings(gone)
	for _, key := range gone {
		events = append(events, ServiceEvent{Type: ServiceRemoved, Service: w.known[key].info})
	}
	w.known, w.rev = fresh, rev
	for _, ev := range events {
		w.fn(ev)
	}
	return nil
}
