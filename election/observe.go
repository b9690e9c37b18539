package election

import (
	"context"
	"iter"
	"maps"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/source"
)

// The bounds of the wait before an observer's broken watch is opened again.
const (
	observeMinBackoff = 50 * time.Millisecond
	observeMaxBackoff = time.Second
)

// Observe returns a channel that receives the leader's id each time the leader changes,
// and "" each time the election has no leader. The first value is the leader at the
// observer's first read of the candidates, which it makes as it starts. Values arrive in the order of etcd's revisions; the observer waits for a slow
// reader rather than drop a change.
//
// The observer keeps the candidates' keys in memory from one consistent read and follows
// them with a watch from the next revision. A broken watch (a lost connection, a member
// without leader) resumes where it stopped, so no change is missed; after a compaction
// took the revisions it needs, it reads the keys again and reports the leader of that
// moment if it changed. The channel is closed when ctx ends, the Election is closed, or the
// first read of the candidates meets a permanent error (a denied permission), which is
// logged at the default level.
func (e *Election) Observe(ctx context.Context) <-chan string {
	ch := make(chan string)
	src, err := source.New(e.client, e.prefix, source.Options{
		MinBackoff: observeMinBackoff, MaxBackoff: observeMaxBackoff, Logger: e.log.WithName("observe").V(1),
	})
	e.mu.Lock()
	if e.closed || err != nil {
		e.mu.Unlock()
		if err != nil { // New has checked the client and the prefix already
			e.log.Error(err, "observe: cannot follow the candidates")
		}
		close(ch)
		return ch
	}
	e.wg.Add(1)
	e.mu.Unlock()
	ctx, cancel := etcdutil.Bound(ctx, e.stopCtx)
	o := &observer{src: src, ch: ch, cands: map[string]*mvccpb.KeyValue{}, held: true}
	// The observer belongs to the caller's ctx and to the Election: it runs the source until
	// either ends, then closes ch.
	go func() {
		defer e.wg.Done()
		defer close(ch)
		first := make(chan struct{})
		// The first report belongs to the observer, which waits for it before closing ch: it
		// sends "" once the initial list is in and turned out empty.
		go func() {
			defer close(first)
			switch err := src.WaitForSync(ctx); {
			case err == nil:
				o.reportFirst(ctx)
			case ctx.Err() == nil:
				// A permanent error (the user may not read the prefix): the caller learns
				// it from the log and the closed channel, not from a wait without end.
				e.log.Error(err, "observe: cannot read the candidates; the observer ends")
				cancel()
			}
		}()
		_ = src.Run(ctx, func(ev source.Event) { o.handle(ctx, ev) }) // it returns ctx's error
		cancel()
		<-first
	}()
	return ch
}

// observer turns the events of a source over the election's prefix into leaders. The
// leader is the value of the oldest key, as GetLeader reads it.
//
// The source hands its handler the events of a watch response one at a time, once the
// whole response (which may span several revisions) is in its cache. The leader of each
// revision is reported when all of that revision's events are applied: the observer keeps
// its own copy of the candidates, cands, which has taken the events handled so far, and
// holds the state of a revision until an event of a later one arrives; the last revision of
// a response, and a list (one snapshot), are read from the source's cache, which holds them
// whole.
type observer struct {
	src *source.Source
	ch  chan<- string

	// Used by the source's goroutine only.
	cands   map[string]*mvccpb.KeyValue // the keys after the events handled so far
	held    bool                        // cands is a state not reported yet, that of revision heldRev
	heldRev int64                       // 0: the initial list's (empty until its events arrive)

	// The source's goroutine and the first report both send; mu orders them.
	mu   sync.Mutex
	sent bool   // a value was sent
	last string // the last value sent
}

// handle is the source's handler: it runs on the source's goroutine, with ev in the cache.
func (o *observer) handle(ctx context.Context, ev source.Event) {
	rev := ev.KV.ModRevision
	// A held state is whole once an event of another revision arrives (the events of one
	// revision come together) or a relist starts. The initial list's events come before its
	// watch is established, and its snapshot is the first state: the empty one held before
	// them is no state of the election.
	initialList := ev.Initial && !o.src.HasSynced()
	if o.held && !initialList && (ev.Initial || rev != o.heldRev) {
		o.report(ctx, leaderOf(maps.Values(o.cands)))
	}
	if ev.Type == source.Delete {
		delete(o.cands, ev.Key)
	} else {
		o.cands[ev.Key] = ev.KV
	}
	if ev.Initial || rev == o.src.Revision() {
		o.held = false
		o.report(ctx, leaderOf(slices.Values(o.src.List(""))))
		return
	}
	o.held, o.heldRev = true, rev
}

// report sends the leader id if it differs from the last value sent, unless ctx ends
// first.
func (o *observer) report(ctx context.Context, id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.sent || id != o.last {
		o.sendLocked(ctx, id)
	}
}

// reportFirst sends "" if nothing was sent yet: once the source has synced, that means
// its initial list was empty (the events of a list are handled before its watch starts).
func (o *observer) reportFirst(ctx context.Context) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.sent {
		o.sendLocked(ctx, "")
	}
}

// sendLocked sends id, unless ctx ends first. The caller holds mu.
func (o *observer) sendLocked(ctx context.Context, id string) {
	if ctx.Err() != nil {
		return
	}
	select {
	case o.ch <- id:
		o.sent, o.last = true, id
	case <-ctx.Done():
	}
}

// leaderOf returns the value of the oldest key (the lowest create revision; among keys one
// transaction created, the first by key), or "" when there is none.
func leaderOf(kvs iter.Seq[*mvccpb.KeyValue]) string {
	var lead *mvccpb.KeyValue
	for kv := range kvs {
		if lead == nil || kv.CreateRevision < lead.CreateRevision ||
			(kv.CreateRevision == lead.CreateRevision && string(kv.Key) < string(lead.Key)) {
			lead = kv
		}
	}
	if lead == nil {
		return ""
	}
	return string(lead.Value)
}
