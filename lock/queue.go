package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/lease"
)

// The queue of a lock key K is the set of entries K/<name>, where <name> holds no further
// '/', each attached to its holder's lease and ordered by create revision:
//
//	K/<lease in hex>            exclusive: a Lock, or the write side of an RWLock
//	K/r-<lease in hex>-<n>      shared: one read hold of an RWLock
//
// An entry holds the lock when no entry it must wait for was created before it: an
// exclusive entry waits for every earlier entry, a shared one for the earlier exclusive
// entries only. Exclusive entries are named as etcd's concurrency.Mutex and `etcdctl lock`
// name theirs, and those wait for every earlier key under K/, so a Lock, a Mutex and
// etcdctl exclude each other on the same key. Keys deeper under K/ (the queue of a lock
// named K/sub) are not entries of K and are ignored.
//
// A waiter watches the deletion of the one entry just before it that it must wait for
// (no thundering herd), then checks again. Every check is a transaction that also compares
// the waiter's own entry, so an entry whose lease ended while it waited is never reported
// as holding the lock.

// readerMark starts the name of a shared entry; a lease ID in hex never starts with it.
const readerMark = "r-"

// errForeignEntry: the entry this session would create exists, but someone else wrote it.
// It is left alone.
var errForeignEntry = errors.New("exists but is not attached to this session's lease")

// retryDelay is the pause before checking the queue again after a watch ended without the
// awaited deletion (a compaction, a leader change, a broken stream).
const retryDelay = 50 * time.Millisecond

func exclusiveEntry(key string, id clientv3.LeaseID) string {
	return fmt.Sprintf("%s/%x", key, int64(id))
}

func sharedEntry(key string, id clientv3.LeaseID, n uint64) string {
	return fmt.Sprintf("%s/%s%x-%d", key, readerMark, int64(id), n)
}

// held is an entry of this process that reached the head of its queue.
type held struct {
	key  string // the entry
	rev  int64  // its create revision: the fencing token
	sess *lease.Session
	pool *sessions // sess's pool, told when the hold is released
}

// guard is the comparison that holds while the entry still exists as it was created.
func (h *held) guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(h.key), "=", h.rev)
}

// queue is one lock key's queue, seen by one process.
type queue struct {
	client *clientv3.Client
	key    string // the lock key K
	prefix string // K + "/"
	log    logr.Logger
}

func newQueue(client *clientv3.Client, key string, log logr.Logger) queue {
	return queue{client: client, key: key, prefix: key + "/", log: log}
}

// lastBlocker returns the entry created last before rev that an entry of the given kind
// must wait for, or nil when there is none.
func (q queue) lastBlocker(kvs []*mvccpb.KeyValue, rev int64, shared bool) *mvccpb.KeyValue {
	var last *mvccpb.KeyValue
	for _, kv := range kvs {
		if kv.CreateRevision >= rev || (last != nil && kv.CreateRevision <= last.CreateRevision) {
			continue
		}
		name, ok := strings.CutPrefix(string(kv.Key), q.prefix)
		if !ok || name == "" || strings.Contains(name, "/") {
			continue
		}
		if shared && strings.HasPrefix(name, readerMark) {
			continue
		}
		last = kv
	}
	return last
}

// acquire queues the entry myKey on sess, a session of pool, and waits until it holds the
// lock. With try it does not wait: it removes the entry and returns false when the lock is
// taken. On any error, and on a false try, the entry is gone when acquire returns (or, if
// etcd could not be reached to remove it, its session is abandoned so that etcd removes
// it). When it had to send the entry's creation or removal more than once, it retires the
// session (see sessions.retire).
func (q queue) acquire(ctx context.Context, pool *sessions, sess *lease.Session, myKey string, shared, try bool) (*held, bool, error) {
	// Every call below also ends when the session does, even if etcd does not answer.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(sess.Context(), func() { cancel(ErrSessionExpired) })
	defer stop()

	h, blocker, hdrRev, attempts, err := q.enqueue(ctx, sess, myKey, shared)
	if attempts > 1 {
		pool.retire(sess, fmt.Errorf("queue entry %s was sent %d times", myKey, attempts))
	}
	if err != nil && etcderr.IsPermanent(err) {
		// etcd refused the whole transaction (a denied permission): no entry was made, and
		// a delete of it, refused too, would abandon a session other locks may share.
		return nil, false, err
	}
	if err == nil && blocker != nil {
		if try {
			q.remove(ctx, pool, sess, myKey)
			return nil, false, nil
		}
		err = q.wait(ctx, h, shared, blocker, hdrRev)
	}
	if err == nil && !sess.Valid() {
		err = ErrSessionExpired
	}
	if err != nil {
		if !errors.Is(err, errForeignEntry) {
			q.remove(ctx, pool, sess, myKey)
		}
		if ctx.Err() != nil {
			return nil, false, context.Cause(ctx)
		}
		return nil, false, err
	}
	h.pool = pool
	return h, true, nil
}

// enqueue creates myKey with the session's lease (or finds it, if an earlier attempt or
// call of this process made it) and returns the entry with the last entry it must wait
// for, as of the returned revision, and how many times it sent the request.
func (q queue) enqueue(ctx context.Context, sess *lease.Session, myKey string, shared bool) (*held, *mvccpb.KeyValue, int64, int, error) {
	all := clientv3.OpGet(q.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	// Safe to send again: an attempt whose answer was lost may have created the entry, and
	// the next one then finds it, on this session's lease, in its Else branch. An attempt
	// applied after the answer, once the entry is released, is why acquire then retires
	// the session.
	resp, attempts, err := retry(ctx, q.log, "queue", func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return q.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(myKey), "=", 0)).
			Then(clientv3.OpPut(myKey, "", clientv3.WithLease(sess.ID())), all).
			Else(clientv3.OpGet(myKey), all).
			Commit()
	})
	if err != nil {
		return nil, nil, 0, attempts, fmt.Errorf("lock: queueing %s: %w", myKey, err)
	}
	h := &held{key: myKey, rev: resp.Header.Revision, sess: sess}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || clientv3.LeaseID(kvs[0].Lease) != sess.ID() {
			return nil, nil, 0, attempts, fmt.Errorf("lock: queue entry %s: %w %x", myKey, errForeignEntry, int64(sess.ID()))
		}
		h.rev = kvs[0].CreateRevision
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	return h, q.lastBlocker(kvs, h.rev, shared), resp.Header.Revision, attempts, nil
}

// wait returns once no entry that h must wait for is left. It fails with ErrSessionExpired
// when h's entry or lease is gone, whatever happened to the others meanwhile.
func (q queue) wait(ctx context.Context, h *held, shared bool, blocker *mvccpb.KeyValue, hdrRev int64) error {
	q.log.V(1).Info("waiting for lock", "entry", h.key, "behind", string(blocker.Key))
	for blocker != nil {
		if err := q.waitDelete(ctx, blocker, hdrRev+1); err != nil {
			return err
		}
		resp, _, err := retry(ctx, q.log, "check the queue", func(ctx context.Context) (*clientv3.TxnResponse, error) {
			return q.client.Txn(ctx).
				If(h.guard(), clientv3.Compare(clientv3.LeaseValue(h.key), "=", h.sess.ID())).
				Then(clientv3.OpGet(q.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithMaxCreateRev(h.rev-1))).
				Commit()
		})
		if err != nil {
			return fmt.Errorf("lock: checking the queue of %s: %w", q.key, err)
		}
		if !resp.Succeeded {
			return ErrSessionExpired
		}
		blocker = q.lastBlocker(resp.Responses[0].GetResponseRange().Kvs, h.rev, shared)
		hdrRev = resp.Header.Revision
	}
	return nil
}

// waitDelete returns nil once the entry blocker is deleted at or after rev, or when its
// watch ends without telling (after a short pause; the caller checks the queue again). It
// fails when ctx ends.
//
// etcd registers a watch whose start revision has already passed as "unsynced" and delivers
// its first events up to 100 ms late. That happens whenever the entry's holder lets go
// between the caller's read and the watch's creation, which is the common case of a short
// critical section. So when the watch reports its creation at a revision past rev, one read
// of the entry tells at once whether it is already gone.
//
// The client's watches share one stream to one member, which says nothing while it is
// paused (the client's Watch does not even return until the member confirms the watch):
// so the entry is also read every recheckEvery, from whichever member answers, while the
// watch is being set up and after.
func (q queue) waitDelete(ctx context.Context, blocker *mvccpb.KeyValue, rev int64) error {
	key := string(blocker.Key)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	started := make(chan clientv3.WatchChan, 1)
	// Watch returns once etcd confirms the watch, or at once when wctx ends.
	go func() {
		started <- q.client.Watch(wctx, key, clientv3.WithRev(rev), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	}()
	var wch clientv3.WatchChan // nil, so not ready, until Watch has returned
	defer func() {
		cancel()
		if wch == nil {
			<-started
		}
	}()
	recheck := time.NewTicker(recheckEvery)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case wch = <-started:
		case <-recheck.C:
			if q.gone(ctx, blocker, true) {
				return nil
			}
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return pause(ctx)
			}
			if wr.Created && wr.Header.Revision >= rev && q.gone(ctx, blocker, false) {
				return nil
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return nil
				}
			}
		}
	}
}

// recheckEvery is how often a waiter reads the entry it waits for, besides watching it.
const recheckEvery = time.Second

// gone reads blocker and reports whether it no longer exists as it was created; false
// when etcd did not answer before ctx ended. A serializable read, answered by any member
// without its leader, is enough for a recheck: an entry once deleted never comes back with
// the same create revision, and a member that lags only makes the caller check again.
func (q queue) gone(ctx context.Context, blocker *mvccpb.KeyValue, serializable bool) bool {
	opts := []clientv3.OpOption{clientv3.WithKeysOnly()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, _, err := retry(ctx, q.log, "read the entry waited for", func(ctx context.Context) (*clientv3.GetResponse, error) {
		return q.client.Get(ctx, string(blocker.Key), opts...)
	})
	return err == nil && (len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != blocker.CreateRevision)
}

// pause waits retryDelay unless ctx ends first.
func pause(ctx context.Context) error {
	t := time.NewTimer(retryDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// remove deletes an entry that does not (or no longer) hold the lock, with the caller's
// context if it is still live and a short detached one otherwise: a cancelled wait leaves
// no key behind. The delete is sent again on etcd's transient errors (deleting twice is
// deleting once). If etcd cannot be reached, the session is abandoned (see abandon), so
// that the entry goes with its lease; if it was sent more than once, the session is retired
// (an entry of the same name made later could be deleted by a late attempt).
func (q queue) remove(ctx context.Context, pool *sessions, sess *lease.Session, key string) {
	_, attempts, err := retryCleanup(ctx, q.log, "remove a queue entry", func(ctx context.Context) (*clientv3.DeleteResponse, error) {
		return q.client.Delete(ctx, key)
	})
	if err != nil {
		q.log.Error(err, "could not remove lock queue entry; abandoning its session, whose lease is revoked or else expires after the TTL", "entry", key)
		abandon(sess, fmt.Errorf("queue entry %s could not be removed: %v", key, err))
	} else if attempts > 1 {
		pool.retire(sess, fmt.Errorf("removal of queue entry %s was sent %d times", key, attempts))
	}
}

// release deletes a held entry if it is still the one that was acquired. lost reports that
// it was not: its lease ended or someone deleted it while it was held. The caller's context
// is used while it lives; after it ended, a short detached one, so that a cancelled request
// never leaves a lock held.
//
// The guarded delete is sent again on etcd's transient errors, and beside an attempt that
// is slow to answer (see retry). An attempt other than the one answered may have been
// applied: when the answer finds the entry gone while the session is still valid (its
// lease cannot have ended), the entry went by that other attempt. When etcd answers none
// of them, whether the release was applied is unknown: the session is abandoned (see
// abandon), so that etcd frees the lock either way, and the error wraps ErrOutcomeUnknown.
func (q queue) release(ctx context.Context, h *held) (lost bool, err error) {
	defer h.pool.done(h.sess)
	resp, attempts, err := retryCleanup(ctx, q.log, "release", func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return q.client.Txn(ctx).If(h.guard()).Then(clientv3.OpDelete(h.key)).Commit()
	})
	if err != nil {
		q.log.Error(err, "could not release lock; abandoning its session, whose lease is revoked or else expires after the TTL", "entry", h.key)
		abandon(h.sess, fmt.Errorf("%s could not be released: %v", h.key, err))
		if attempts == 1 && !retryable(err) {
			return false, fmt.Errorf("lock: releasing %s: %w", q.key, err)
		}
		return false, fmt.Errorf("lock: releasing %s: %w: the session is abandoned, so etcd frees the lock when its lease is revoked or, at the latest, expires: %w",
			q.key, ErrOutcomeUnknown, err)
	}
	if !resp.Succeeded && attempts > 1 && h.sess.Valid() {
		return false, nil
	}
	return !resp.Succeeded, nil
}
