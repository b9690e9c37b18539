package lock

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/lease"
)

// DefaultTTL is the session TTL used when Options.TTL is 0.
const DefaultTTL = 30 * time.Second

// MinTTL is the shortest session TTL that a lock accepts. Shorter leases leave too little
// time between keep-alives (sent every TTL/5) to survive a slow etcd answer.
const MinTTL = 2 * time.Second

var (
	// ErrNotLocked is returned by Unlock and RUnlock when nothing is held to release.
	ErrNotLocked = errors.New("lock: not locked")
	// ErrLost is returned by Unlock and RUnlock when the hold was lost before the release:
	// the session's lease ended or the lock key was deleted. Work done under the lock since
	// then was not protected, except for writes guarded by Guard.
	ErrLost = errors.New("lock: lost while held (session expired or lock key deleted)")
	// ErrSessionExpired is returned by Lock, TryLock, RLock and TryRLock when the session's
	// lease ended while they waited (or someone deleted their queue entry). The lock is not
	// held; the next call starts a new session if this one has ended.
	ErrSessionExpired = errors.New("lock: session expired while acquiring the lock")
	// ErrClosed is returned by every call on a lock or manager after Close, and by a call
	// that Close interrupted.
	ErrClosed = errors.New("lock: closed")
	// ErrOutcomeUnknown is wrapped in the error of a release (Unlock, RUnlock, Close) that
	// etcd did not answer, within the caller's context and a short cleanup time after it:
	// the release may or may not have been applied. The hold is over either way: the
	// session is abandoned, so etcd frees the lock when the session's lease is revoked or,
	// at the latest, expires after its TTL.
	ErrOutcomeUnknown = errors.New("lock: outcome unknown, etcd did not answer")
)

// Options configure a Lock (New), an RWLock (NewRW) or a Manager (NewManager). The zero
// value is valid: every field has a default.
type Options struct {
	// TTL is the session TTL: how long a lock outlives a holder that stops answering
	// (crashed, paused, cut off). It must be a whole number of seconds (etcd leases count
	// seconds), at least MinTTL (2 s). Default (0): DefaultTTL, 30 s.
	TTL time.Duration
	// Logger receives the logs. Default (the zero logr.Logger): discarded.
	Logger logr.Logger
}

// ttlSeconds validates o.TTL and returns the session TTL in seconds, as etcd grants it.
func (o Options) ttlSeconds() (int, error) {
	_, seconds, err := lease.CheckTTL("lock: TTL", o.TTL, DefaultTTL, MinTTL)
	return seconds, err
}

// Lock is a distributed mutual-exclusion lock on one etcd key. Processes (and Lock values)
// that lock the same key exclude each other, in the order they asked. Within a process a
// Lock behaves like a sync.Mutex: one goroutine holds it at a time, a second Lock call
// waits for Unlock, and any goroutine may Unlock. Its methods are safe for concurrent use.
//
// A hold ends with Unlock, or when it is lost: the session's lease ends (the process was
// cut off from etcd for longer than the TTL) or someone deletes the lock's key. Lost
// reports it; Guard makes a write to etcd conditional on the hold, which is the only way
// to be sure a write made under the lock is not made after it was lost.
type Lock struct {
	q            queue
	sessions     *sessions
	ownsSessions bool   // false for a Manager's locks, which share the manager's session
	onClose      func() // run at the end of Close; set by a Manager

	// sem is the in-process mutex: full from the start of a Lock or TryLock call until the
	// matching Unlock (or until the call fails), so at most one hold or attempt exists per
	// Lock value and its one queue entry name is never shared.
	sem chan struct{}

	closeCtx context.Context // cancelled with ErrClosed by Close; ends every wait
	closeFn  context.CancelCauseFunc

	mu       sync.Mutex
	h        *hold          // the current hold; nil when not held. Guarded by mu.
	closed   bool           // guarded by mu
	inflight sync.WaitGroup // calls in progress; Close waits for them
}

// New returns a lock on key. The lock's queue lives under key + "/"; a lock on key/sub has
// a queue of its own and does not interfere with key. New does not talk to etcd: the
// session (a lease of opts.TTL) starts with the first Lock or TryLock and is replaced by a
// new one when it has ended by the next call.
func New(client *clientv3.Client, key string, opts Options) (*Lock, error) {
	if client == nil {
		return nil, errors.New("lock: client must not be nil")
	}
	if key == "" {
		return nil, errors.New("lock: key must not be empty")
	}
	ttl, err := opts.ttlSeconds()
	if err != nil {
		return nil, err
	}
	log := opts.Logger.WithValues("lock", key)
	return newLock(client, key, newSessions(client, ttl, log), true, log), nil
}

func newLock(client *clientv3.Client, key string, s *sessions, owns bool, log logr.Logger) *Lock {
	l := &Lock{
		q:            newQueue(client, key, log),
		sessions:     s,
		ownsSessions: owns,
		sem:          make(chan struct{}, 1),
	}
	l.closeCtx, l.closeFn = context.WithCancelCause(context.Background())
	return l
}

// Key returns the lock's key.
func (l *Lock) Key() string { return l.q.key }

// Lock blocks until the lock is held, ctx ends (context.Cause(ctx)), the lock is closed
// (ErrClosed), or the session expires while waiting (ErrSessionExpired: never reported as
// success). etcd's transient errors (an election, a restart, a member that does not answer)
// are retried within ctx; an error etcd keeps returning (a denied permission, a failed
// authentication) is returned at once. When it fails nothing of the attempt stays in etcd.
func (l *Lock) Lock(ctx context.Context) error {
	_, err := l.lock(ctx, false)
	return err
}

// TryLock takes the lock if it is free and reports whether it did. It does not wait for
// another holder; it returns false at once when this Lock value is held by another goroutine.
// Its errors are Lock's.
func (l *Lock) TryLock(ctx context.Context) (bool, error) {
	return l.lock(ctx, true)
}

func (l *Lock) lock(ctx context.Context, try bool) (bool, error) {
	ctx, end, err := l.begin(ctx)
	if err != nil {
		return false, err
	}
	defer end()
	if try {
		select {
		case l.sem <- struct{}{}:
		default:
			return false, nil
		}
	} else {
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
	h, ok, err := acquireRetrying(ctx, l.q, l.sessions, func(s *lease.Session) string { return exclusiveEntry(l.q.key, s.ID()) }, false, try)
	if err != nil || !ok {
		<-l.sem
		return false, err
	}
	l.mu.Lock()
	l.h = newHold(h)
	l.mu.Unlock()
	l.q.log.V(1).Info("lock acquired", "token", h.rev)
	return true, nil
}

// acquireRetrying acquires an entry named by name on the current session. A session whose
// lease etcd no longer knows, though its keep-alive has not noticed yet, is replaced once.
// A hold it returns is a user of its session until it is released.
func acquireRetrying(ctx context.Context, q queue, p *sessions, name func(*lease.Session) string, shared, try bool) (*held, bool, error) {
	for attempt := 0; ; attempt++ {
		sess, err := p.get(ctx)
		if err != nil {
			return nil, false, err
		}
		h, ok, err := q.acquire(ctx, p, sess, name(sess), shared, try)
		if err != nil || !ok {
			p.done(sess)
		}
		if attempt == 0 && errors.Is(err, rpctypes.ErrLeaseNotFound) {
			abandon(sess, errLeaseGone)
			continue
		}
		return h, ok, err
	}
}

// begin registers a call with Close and returns its context, which Close cancels.
func (l *Lock) begin(ctx context.Context) (context.Context, func(), error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, nil, ErrClosed
	}
	l.inflight.Add(1)
	l.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.closeCtx, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
		l.inflight.Done()
	}, nil
}

// Unlock releases the lock. It returns ErrNotLocked when the lock is not held, and ErrLost
// when the hold had been lost before; a lost hold still needs its Unlock before this Lock
// value can be locked again, as the hold of a sync.Mutex would. A ctx that has
// already ended does not stop the release: it is then made with a short timeout of its own,
// so that a cancelled request never leaves the lock held. etcd's transient errors are
// retried; when etcd answers none of the attempts, the error wraps ErrOutcomeUnknown. The
// hold is over whatever Unlock returns.
func (l *Lock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	h := l.h
	l.h = nil
	l.mu.Unlock()
	if h == nil {
		return ErrNotLocked
	}
	h.end()
	lost, err := l.q.release(ctx, &h.held)
	<-l.sem
	switch {
	case err != nil:
		return err
	case lost:
		l.q.log.Info("lock was lost before Unlock", "token", h.rev)
		return ErrLost
	}
	l.q.log.V(1).Info("lock released", "token", h.rev)
	return nil
}

// WithLock runs fn while holding the lock, and releases it when fn returns or panics. It
// returns fn's error joined with Unlock's (ErrLost tells that the lock was lost while fn ran).
func (l *Lock) WithLock(ctx context.Context, fn func() error) (err error) {
	if err := l.Lock(ctx); err != nil {
		return err
	}
	defer func() {
		if uerr := l.Unlock(ctx); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()
	return fn()
}

// Token returns the fencing token of the current hold: the create revision of this
// lock's queue entry, which grows with every hold of the key by anyone. It is 0 when the
// lock is not held.
func (l *Lock) Token() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return 0
	}
	return l.h.rev
}

// Guard returns the comparison that is true exactly while the current hold lasts:
// CreateRevision(entry) == Token(). Put it in the If of a transaction to make a write
// conditional on holding the lock; a holder that lost the lock (paused past its TTL, cut
// off from etcd) then has its write rejected instead of overwriting its successor's.
// When the lock is not held, Guard returns a comparison that is never true.
func (l *Lock) Guard() clientv3.Cmp {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		return never(l.q.prefix)
	}
	return l.h.guard()
}

// never is a comparison that no key satisfies: create revisions are never negative.
func never(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), "=", -1)
}

// Lost returns a channel that is closed when the current hold ends: lost (the session's
// lease ended, or may have ended because no keep-alive answer came before the session's
// local deadline, or the lock key was deleted), released by Unlock, or ended by Close. When
// the lock is not held the channel is already closed. Each hold has its own channel.
func (l *Lock) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return l.h.watch(l.q)
}

// Close releases the lock if it is held, makes calls in progress return ErrClosed, and
// revokes the session (unless the lock belongs to a Manager, whose session it shares). A
// closed lock cannot be used again. Close may be called more than once.
func (l *Lock) Close() error {
	if !l.shutdown() {
		return nil
	}
	err := l.releaseHeld()
	if l.ownsSessions {
		err = errors.Join(err, l.sessions.close())
	}
	if l.onClose != nil {
		l.onClose()
	}
	return err
}

// shutdown marks the lock closed, ends the calls in progress and waits for them. It
// reports false when the lock was already closed.
func (l *Lock) shutdown() bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	l.mu.Unlock()
	l.closeFn(ErrClosed)
	l.inflight.Wait()
	return true
}

// releaseHeld releases the current hold, if any, after shutdown.
func (l *Lock) releaseHeld() error {
	l.mu.Lock()
	h := l.h
	l.h = nil
	l.mu.Unlock()
	if h == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	h.end()
	_, err := l.q.release(ctx, &h.held)
	return err
}

// hold is one successful acquisition of a Lock, with the watch behind Lost.
type hold struct {
	held
	// ctx ends when the hold does: with errHoldEnded when Unlock or Close end it, with the
	// session's end otherwise.
	ctx    context.Context
	cancel context.CancelCauseFunc

	lost     chan struct{} // Lost's channel; closed when the hold ends for any reason
	lostOnce sync.Once

	monitorOnce sync.Once
	monitor     sync.WaitGroup
}

// errHoldEnded is the cause of a hold's context when Unlock or Close ended it.
var errHoldEnded = errors.New("lock: released")

func newHold(h *held) *hold {
	ctx, cancel := context.WithCancelCause(h.sess.Context())
	return &hold{held: *h, ctx: ctx, cancel: cancel, lost: make(chan struct{})}
}

func (h *hold) closeLost() { h.lostOnce.Do(func() { close(h.lost) }) }

// end stops the monitor, if one runs, and closes lost. Unlock and Close call it before
// they delete the entry, so that the monitor does not take the release for a loss.
func (h *hold) end() {
	h.cancel(errHoldEnded)
	h.monitor.Wait()
	h.closeLost()
}

// released reports whether Unlock or Close ended the hold (rather than a loss).
func (h *hold) released() bool { return errors.Is(context.Cause(h.ctx), errHoldEnded) }

// watch starts the monitor on first use and returns lost. The monitor only runs for holds
// whose Lost is asked for: a Lock that nobody watches costs no watch.
func (h *hold) watch(q queue) <-chan struct{} {
	h.monitorOnce.Do(func() {
		h.monitor.Add(1)
		// The monitor belongs to the hold: it returns when the entry is deleted (closing
		// lost) or when the hold's context ends (the session ended, or end cancelled it;
		// end waits for it).
		go func() {
			defer h.monitor.Done()
			h.awaitLoss(q)
			if !h.released() {
				q.log.Info("lock lost while held", "token", h.rev)
			}
			h.closeLost()
		}()
	})
	return h.lost
}

// awaitLoss returns when the entry is deleted or the hold's context ends.
func (h *hold) awaitLoss(q queue) {
	ctx := clientv3.WithRequireLeader(h.ctx)
	rev := h.rev + 1
	for ctx.Err() == nil {
		if h.awaitDelete(ctx, q, rev) {
			return
		}
		// The watch broke (compaction, leader change): look at the entry itself, and
		// watch again from there.
		gctx, cancel := context.WithTimeout(ctx, etcdutil.AttemptTimeout)
		resp, err := q.client.Get(gctx, h.key)
		cancel()
		if err == nil {
			if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != h.rev {
				return
			}
			rev = resp.Header.Revision + 1
		}
		_ = pause(ctx)
	}
}

// awaitDelete watches the entry from rev and reports whether it was deleted; false when the
// watch broke or ctx ended.
func (h *hold) awaitDelete(ctx context.Context, q queue, rev int64) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range q.client.Watch(ctx, h.key, clientv3.WithRev(rev), clientv3.WithFilterPut()) {
		if wr.Err() != nil {
			return false
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return true
			}
		}
	}
	return false
}
