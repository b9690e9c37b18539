// Package lock provides distributed locks on etcd: a mutual-exclusion Lock, a read-write
// RWLock, and a Manager of named locks that share one session.
//
//	l, err := lock.New(client, "/locks/resource1", lock.Options{TTL: 30 * time.Second, Logger: log})
//	defer l.Close()
//	err = l.WithLock(ctx, func() error {
//		// critical section
//		return nil
//	})
//
// # How a lock works
//
// A lock's key K has a queue in etcd: each process that wants the lock creates an entry
// under K/ attached to its session's lease, and the entries are ordered by the revision at
// which etcd created them. The entry at the head holds the lock; every other waiter watches
// the deletion of the entry just before it and then looks again. Unlock deletes the entry.
// A holder that crashes or stops answering loses its lease after the TTL, and etcd deletes
// its entry: the lock passes on without anyone's help.
//
// Exclusive entries are named as those of etcd's concurrency.Mutex and `etcdctl lock`, so
// a Lock, a Mutex and etcdctl exclude one another on the same key.
//
// # What a hold guarantees, and fencing
//
// No lock on a lease can promise that its holder still holds it at the moment it acts: a
// holder paused (GC, SIGSTOP, a slow disk) past its TTL wakes up believing it holds a lock
// that etcd gave to the next waiter long ago. Two things help.
//
// Lost returns a channel that is closed when the hold ends: etcd said the lease is gone, the
// entry was deleted, or the session's keep-alives went unanswered until its local deadline.
// That deadline is the moment the last answered keep-alive was sent plus the TTL, less
// 100 ms for the difference between clock rates: etcd counts the TTL from when it received
// that keep-alive, which is later, so Lost closes before etcd can let the lease expire and
// hand the lock on, even when etcd cannot be reached to say so. Stop working when it closes.
//
// Token is the entry's create revision, a number that grows with every hold of the key, and
// Guard is the comparison CreateRevision(entry) == Token. A write to etcd made in a
// transaction that includes Guard is accepted only while the hold lasts:
//
//	resp, err := client.Txn(ctx).If(l.Guard()).Then(clientv3.OpPut(k, v)).Commit()
//	// !resp.Succeeded: the lock was lost; nothing was written.
//
// Systems outside etcd can be fenced with Token: they remember the largest token seen and
// refuse requests that carry a smaller one.
//
// # Waiting, contexts and sessions
//
// Every call that waits takes a context and returns soon after it ends (with
// context.Cause, so errors.Is(err, context.Canceled) works), removing its queue entry on the
// way out. A waiter whose session expires while it waits returns ErrSessionExpired, never
// success, even if the lock became free at the same time: after every wait the waiter checks
// in one transaction that its own entry still exists with its lease (etcd's
// concurrency.Mutex can report success in that case; etcd issues #11408 and #19597).
//
// A Lock starts its session (a lease of the configured TTL, kept alive in the background)
// with its first call, and replaces it with a new one when it finds it ended, so a Lock
// stays usable after a network outage. Close releases what is held and revokes the lease.
// Releases happen even when the caller's context has already ended, with a short timeout
// of their own; when etcd cannot be reached for a release, the session is abandoned: its
// lease is revoked if etcd answers after all, and otherwise expires after the TTL, so that
// etcd frees the lock either way.
//
// # etcd's transient errors
//
// Every call (Lock, TryLock, Unlock, the read-write lock's, a Manager's locks, and the
// releases of Close) rides through etcd's transient errors: a leader election ("etcdserver:
// leader changed", "request timed out, possibly due to previous leader failure"), a member
// restarting or unreachable, or one that keeps requests without answering (paused, or
// forwarding them to a leader that is gone). Each attempt of a request to etcd has a
// deadline of its own (2 s); one that fails on a transient error is sent again, and one
// that goes unanswered for a fraction of a second gets two more attempts beside it, which
// the client sends to other members than the silent one; all within the call's context.
// Errors that stay until an operator acts (a denied permission, a failed authentication)
// are returned at once.
//
// A request is sent again only where that is safe, since an attempt whose answer was lost,
// or that is still in flight, may be applied: reads; deletes; and the lock's guarded
// writes, which recognise their own success. A queue entry is created only if its key is absent, on the
// session's lease, and the key names that lease: an entry found there with the lease is the
// call's own. A release deletes the entry only while it is the one acquired: found gone
// while the session still lives (so its lease did not end), it went by another attempt.
// Where the outcome cannot be known, a release that etcd did not answer at all, the error
// wraps ErrOutcomeUnknown; the session is then abandoned, so that etcd frees the lock either
// way.
//
// A session's lease is renewed every fifth of its TTL, and a renewal that goes unanswered
// is sent again to the other members within a fraction of a second, so a session outlives
// an etcd election, which takes one to two seconds with etcd's default timing: a TTL of
// 5 seconds or more rides through one.
//
// # Read-write locks
//
// RWLock is a distributed read-write lock: readers in different processes hold it
// together, a writer holds it alone. It uses the same queue with shared entries for readers:
// a reader waits only for the writers queued before it, a writer for every entry before it.
// The order is the order of arrival at etcd, so a writer is never starved: readers that come
// after a waiting writer queue behind it.
//
// # Many locks
//
// A Manager hands out named locks under one prefix on one shared session, so a process
// that needs many locks keeps one lease alive instead of one per lock.
package lock
