// The driver of a source: the list and the watch that keep its cache, and the delivery of
// their events to the handlers.

package source

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// drive lists and watches for Run until ctx ends, or until StartRevision proves to lie in
// the future.
func (s *Source) drive(ctx context.Context) error {
	bo := etcdutil.Backoff{Min: s.opts.MinBackoff, Max: s.opts.MaxBackoff}
	// next is the revision the next watch starts from; 0 means list first. A source run
	// again after a stop resumes from what its cache has seen.
	next := int64(0)
	if s.HasSynced() {
		next = s.Revision() + 1
	}
	for ctx.Err() == nil {
		if next == 0 {
			rev, err := s.list(ctx)
			if errors.Is(err, rpctypes.ErrFutureRev) {
				return fmt.Errorf("source %s: StartRevision %d is beyond etcd's current revision: %w", s.prefix, s.opts.StartRevision, err)
			}
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				err = fmt.Errorf("source %s: listing: %w", s.prefix, err)
				d := bo.Next()
				if s.fail(err) {
					d = s.opts.MaxBackoff
				}
				s.log.Error(err, "listing failed, retrying", "after", d)
				if !etcdutil.Sleep(ctx, d) {
					break
				}
				continue
			}
			s.clearFailure()
			next = rev + 1
		}
		progressed, err := s.watch(ctx, next)
		if ctx.Err() != nil {
			break
		}
		if progressed {
			bo.Reset()
		}
		if errors.Is(err, errRelist) {
			next = 0
			continue
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			s.log.Info("watch history compacted, relisting", "from", next)
			s.mu.Lock()
			s.stats.Relists++
			s.mu.Unlock()
			next = 0
			continue
		}
		s.mu.Lock()
		s.stats.Resumes++
		next = s.rev + 1
		s.mu.Unlock()
		d := bo.Next()
		if err != nil && s.fail(fmt.Errorf("source %s: watching from revision %d: %w", s.prefix, next, err)) {
			d = s.opts.MaxBackoff
			s.log.Error(err, "watch refused, retrying", "from", next, "after", d)
		} else {
			s.log.V(1).Info("watch broke, resuming", "from", next, "error", fmt.Sprint(err), "backoff", d)
		}
		if !etcdutil.Sleep(ctx, d) {
			break
		}
	}
	return ctx.Err()
}

// list reads the prefix at one revision, page by page, and replaces the cache with it,
// delivering a Put for every new or changed key and a Delete for every vanished one. It
// returns the revision of the snapshot.
func (s *Source) list(ctx context.Context) (int64, error) {
	var (
		kvs []*mvccpb.KeyValue
		rev int64
		err error
	)
	// Every Relist asked so far is answered by this list.
	select {
	case <-s.relist:
	default:
	}
	s.mu.RLock()
	gen := s.asked
	s.mu.RUnlock()
	switch start := s.opts.StartRevision; {
	case start == 1 && !s.HasSynced():
		// Before revision 1 there was nothing: replay the whole history.
	case start > 1 && !s.HasSynced():
		kvs, rev, err = s.readAll(ctx, start-1) // the state just before the replay starts
	default:
		kvs, rev, err = s.readAll(ctx, 0)
	}
	if errors.Is(err, rpctypes.ErrCompacted) {
		s.log.Info("start revision compacted, listing the current state instead", "startRevision", s.opts.StartRevision)
		kvs, rev, err = s.readAll(ctx, 0)
	}
	if err != nil {
		return 0, err
	}
	kvs = s.kept(kvs)
	fresh := make(map[string]*mvccpb.KeyValue, len(kvs))
	for _, kv := range kvs {
		fresh[string(kv.Key)] = kv
	}

	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.mu.Lock()
	old := s.cache
	s.cache = fresh
	s.reindexLocked()
	s.listed = max(s.listed, gen)
	s.setRevLocked(rev)
	s.stats.Lists++
	s.mu.Unlock()

	for _, kv := range kvs {
		prev, had := old[string(kv.Key)]
		if had && prev.ModRevision == kv.ModRevision {
			continue // unchanged since the last list
		}
		e := Event{Type: Put, Key: string(kv.Key), KV: kv, Initial: true}
		if had {
			e.PrevKV = prev
		}
		s.deliver(e)
	}
	var gone []string
	for k := range old {
		if _, ok := fresh[k]; !ok {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		if !s.keeps(k) {
			continue // no longer kept: it leaves the cache, but was not deleted
		}
		prev := old[k]
		s.deliver(Event{Type: Delete, Key: k, KV: &mvccpb.KeyValue{Key: prev.Key, ModRevision: rev}, PrevKV: prev, Initial: true})
	}
	return rev, nil
}

// readAll reads every key of the prefix at revision rev (0: the current one), in pages.
func (s *Source) readAll(ctx context.Context, rev int64) ([]*mvccpb.KeyValue, int64, error) {
	return etcdutil.ListRange(ctx, s.client, s.prefix, s.end, rev, s.opts.PageSize)
}

// watch watches from revision from until the watch breaks or ctx ends, and returns the
// reason. progressed says whether any response arrived (to reset the backoff).
func (s *Source) watch(ctx context.Context, from int64) (progressed bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wc := etcdutil.Watch(wctx, s.client, s.prefix, clientv3.WithRange(s.end), clientv3.WithRev(from),
		clientv3.WithPrevKV(), clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case wr, ok = <-wc:
		case <-s.relist:
			return progressed, errRelist
		}
		if !ok {
			break
		}
		if wr.CompactRevision != 0 {
			return progressed, rpctypes.ErrCompacted
		}
		if err := wr.Err(); err != nil {
			return progressed, err
		}
		progressed = true
		if wr.Created {
			s.clearFailure()
			// Synced once the watch exists on etcd, not only once the list is cached: a
			// caller that writes right after WaitForSync has its change sent by a watch that
			// etcd counts as current, rather than one it catches up only every 100 ms.
			s.syncedOnce.Do(func() { close(s.synced) })
			continue
		}
		if wr.IsProgressNotify() {
			s.advance(wr.Header.Revision)
			continue
		}
		// Every event of the response goes into the cache, then the last seen revision
		// moves, then the handler sees the events: a transaction that changed several keys
		// is never half in a cache whose Revision says it is there, and a handler reads a
		// Revision that includes its event (etcd does not split a revision across responses).
		s.dmu.Lock()
		evs := make([]Event, 0, len(wr.Events))
		for _, ev := range wr.Events {
			if e, ok := s.apply(ev); ok {
				evs = append(evs, e)
			}
		}
		if n := len(wr.Events); n > 0 {
			s.advance(wr.Events[n-1].Kv.ModRevision)
		}
		for _, e := range evs {
			s.deliver(e)
		}
		s.dmu.Unlock()
	}
	return progressed, errors.New("watch channel closed")
}

// advance moves the last seen revision forward.
func (s *Source) advance(rev int64) {
	s.mu.Lock()
	if rev > s.rev {
		s.setRevLocked(rev)
	}
	s.mu.Unlock()
}

// setRevLocked sets the last seen revision and wakes WaitForRevision calls.
func (s *Source) setRevLocked(rev int64) {
	s.rev = rev
	close(s.moved)
	s.moved = make(chan struct{})
}

// apply takes one watch event into the cache and returns it for delivery, unless it is a
// duplicate.
func (s *Source) apply(ev *clientv3.Event) (Event, bool) {
	key := string(ev.Kv.Key)
	s.mu.Lock()
	cached, had := s.cache[key]
	if !s.keeps(key) {
		if had { // no longer kept, and Evict has not run yet
			delete(s.cache, key)
			s.unindexLocked(key)
		}
		s.mu.Unlock()
		return Event{}, false
	}
	// Events come in revision order, and every change up to s.rev is in the cache already
	// (a list, whole responses, progress notifications): an event at or below it is a
	// replay, a put of a key deleted since included, which would otherwise come back for
	// a moment.
	if ev.Kv.ModRevision <= s.rev || (had && ev.Kv.ModRevision <= cached.ModRevision) {
		s.stats.Duplicates++
		s.mu.Unlock()
		return Event{}, false
	}
	e := Event{Key: key, KV: ev.Kv, PrevKV: ev.PrevKv}
	if ev.Type == clientv3.EventTypeDelete {
		e.Type = Delete
		delete(s.cache, key)
		s.unindexLocked(key)
	} else {
		e.Type = Put
		s.cache[key] = ev.Kv
		s.indexLocked(ev.Kv)
	}
	if e.PrevKV == nil && had {
		e.PrevKV = cached
	}
	s.mu.Unlock()
	return e, true
}

// deliver hands e to every handler, unless the source's predicates drop it. The caller
// holds dmu.
func (s *Source) deliver(e Event) {
	if !s.Accepts(e) {
		return
	}
	for _, reg := range s.handlers {
		reg.h(e)
	}
}
