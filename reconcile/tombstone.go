package reconcile

import (
	"context"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// DefaultTombstoneTTL is how long a controller keeps the last state of a deleted key that
// it has not reconciled (see Options.TombstoneTTL).
const DefaultTombstoneTTL = 10 * time.Minute

// Tombstone is the last state of a deleted key, handed to the reconcile of its delete.
type Tombstone struct {
	// KV is the key as it was before the delete (its value, its revisions and lease). It is
	// shared with the controller's cache: read it, do not modify it.
	KV *mvccpb.KeyValue
	// Revision is the revision of the delete.
	Revision int64
}

type tombstoneKey struct{}

// TombstoneFrom returns the last state of the key a reconcile runs for, when the key was
// deleted and not created again since: the state it had before the delete, kept by the
// controller from the delete's event until a reconcile of the key ends with nothing more
// to do (a zero Result and no error, or a TerminalError), the key comes back, or
// Options.TombstoneTTL passes; a reconcile that fails or asks to be requeued gets it
// again. It is what a reconciler of a delete cleans up after;
// store.Store.Decode gives it a type. ok is false when the key exists, or when its
// delete was not seen by this process (every replica down at the time) or is older than
// the TTL: cleanup that must never be missed uses the finalizers of package store.
func TombstoneFrom(ctx context.Context) (Tombstone, bool) {
	t, ok := ctx.Value(tombstoneKey{}).(Tombstone)
	return t, ok
}

// tombstones are the last states of the deleted keys a controller has not yet reconciled,
// by key, dropped after a TTL: a replica that does not reconcile a key (a follower, a
// member that does not own its shard) keeps its tombstone for as long, so that it can
// hand it over if it takes the key within that time (see Controller.ResyncWhere).
type tombstones struct {
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	byKey map[string]tombstone
	order []tombstoneRef // in the order of record, for expiry; may hold stale refs
}

type tombstone struct {
	Tombstone
	at time.Time
}

type tombstoneRef struct {
	key string
	rev int64
}

func newTombstones(ttl time.Duration) *tombstones {
	return &tombstones{ttl: ttl, now: time.Now, byKey: map[string]tombstone{}}
}

// record keeps the last state of a key deleted at rev.
func (ts *tombstones) record(key string, prev *mvccpb.KeyValue, rev int64) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.now()
	ts.expireLocked(now)
	ts.byKey[key] = tombstone{Tombstone: Tombstone{KV: prev, Revision: rev}, at: now}
	ts.order = append(ts.order, tombstoneRef{key: key, rev: rev})
}

// forget drops the tombstone of key: the key exists again.
func (ts *tombstones) forget(key string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.byKey, key)
}

// done drops the tombstone of key that a reconcile was given, unless a later delete
// replaced it meanwhile.
func (ts *tombstones) done(key string, rev int64) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t, ok := ts.byKey[key]; ok && t.Revision == rev {
		delete(ts.byKey, key)
	}
}

// get returns the tombstone of key, unless it is older than the TTL (expire, called on a
// ticker and on record, frees the memory of those).
func (ts *tombstones) get(key string) (Tombstone, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.byKey[key]
	if !ok || ts.now().Sub(t.at) >= ts.ttl {
		return Tombstone{}, false
	}
	return t.Tombstone, true
}

// keys returns the keys that have a tombstone younger than the TTL.
func (ts *tombstones) keys() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.now()
	out := make([]string, 0, len(ts.byKey))
	for k, t := range ts.byKey {
		if now.Sub(t.at) < ts.ttl {
			out = append(out, k)
		}
	}
	return out
}

// expire drops the tombstones older than the TTL.
func (ts *tombstones) expire() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.expireLocked(ts.now())
}

func (ts *tombstones) expireLocked(now time.Time) {
	n := 0
	for _, ref := range ts.order {
		t, ok := ts.byKey[ref.key]
		switch {
		case !ok || t.Revision != ref.rev:
			n++ // dropped or replaced since: a stale reference
		case now.Sub(t.at) >= ts.ttl:
			delete(ts.byKey, ref.key)
			n++
		default:
			ts.order = ts.order[n:]
			ts.compactLocked()
			return
		}
	}
	ts.order = ts.order[:0]
}

// compactLocked drops the stale references at the tail once they outnumber the live ones,
// so that a controller that records and reconciles many deletes keeps a bounded order.
func (ts *tombstones) compactLocked() {
	if len(ts.order) < 64 || len(ts.order) < 2*len(ts.byKey) {
		return
	}
	live := ts.order[:0]
	for _, ref := range ts.order {
		if t, ok := ts.byKey[ref.key]; ok && t.Revision == ref.rev {
			live = append(live, ref)
		}
	}
	clear(ts.order[len(live):])
	ts.order = live
}
