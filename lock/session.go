package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/lease"
)

// cleanupTimeout bounds the etcd calls that release or remove a key after the caller's
// context has ended (a cancelled wait, Close, WithLock after a cancelled context). When such
// a call fails the session is abandoned, so that etcd still frees the keys. (The revoke that
// ends a session is bounded by the lease package: the TTL, at most lease.MaxRevokeWait.)
const cleanupTimeout = 3 * time.Second

// abandon ends a session whose keys could not all be removed (a failed release or removal),
// or whose lease etcd no longer knows. The session's keep-alive goroutine revokes the lease
// if etcd answers, which deletes every key on it now; if etcd does not answer, nobody renews
// the lease any more and etcd deletes the keys when its TTL runs out. Either way the keys go
// without this process's help. It does not wait: the sessions pool that started the
// keep-alive waits for it at close.
func abandon(s *lease.Session, cause error) {
	s.Lose(fmt.Errorf("%w: %w", lease.ErrLost, cause))
}

// errLeaseGone is the cause of a session abandoned because etcd no longer knew its lease.
var errLeaseGone = errors.New("etcd no longer knows the lease")

// sessions hands out the current live session, and replaces one that has ended, so that a
// lock whose lease expired between two uses works again at its next Lock. Locks of one
// Manager share one sessions value; a Lock made by New has its own.
//
// A session is a lease.Session: one lease kept alive for the locks that use it. Every queue
// entry of a lock is attached to it, so the entries of a process that dies or stops
// answering vanish after the TTL: that is what bounds how long a lock outlives its holder.
// Its Context ends when this process can no longer be sure that the lease lives: etcd
// answered that it expired or was revoked, the local deadline passed (the send time of the
// last answered keep-alive plus the TTL, less a small margin for clock rates), or the
// session was abandoned or closed. Waits, watches and holds made on behalf of a session are
// bound to its Context, so Lost closes at that deadline, before etcd can have handed the
// lock on; Valid is checked before a wait is reported as success.
type sessions struct {
	client *clientv3.Client
	ttl    int // seconds, as lease.Grant takes them
	log    logr.Logger

	// sem serialises get and close (a channel rather than a mutex, so that a get waiting
	// behind another one's Grant still honours its own context). It guards cur and closed.
	sem    chan struct{}
	cur    *lease.Session
	closed bool

	// keepAlive counts the keep-alive goroutines of every session started here, the current
	// one and those lost or abandoned that may still be revoking their lease; close waits
	// for them.
	keepAlive sync.WaitGroup
}

func newSessions(client *clientv3.Client, ttl int, log logr.Logger) *sessions {
	return &sessions{client: client, ttl: ttl, log: log, sem: make(chan struct{}, 1)}
}

// get returns the live session, starting a new one when there is none or the last one ended.
func (p *sessions) get(ctx context.Context) (*lease.Session, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-p.sem }()
	if p.closed {
		return nil, ErrClosed
	}
	if p.cur != nil && p.cur.Valid() {
		return p.cur, nil
	}
	if p.cur != nil {
		if p.cur.Cause() == nil {
			// Past its deadline, but its keep-alive has not ended it yet: end it now, so that
			// it stops even if a late answer comes.
			abandon(p.cur, fmt.Errorf("no keep-alive answer for lease %x within its TTL", int64(p.cur.ID())))
		}
		p.log.Info("lock session ended, starting a new one", "lease", fmt.Sprintf("%x", int64(p.cur.ID())), "cause", p.cur.Cause().Error())
		p.cur = nil
	}
	s, err := p.grant(ctx)
	if err != nil {
		return nil, err
	}
	p.keepAlive.Add(1)
	// The keep-alive goroutine belongs to the session: it returns when the session is lost,
	// abandoned or closed (close closes the current one and waits for every one of them).
	go func() {
		defer p.keepAlive.Done()
		s.KeepAlive()
	}()
	p.log.V(1).Info("lock session started", "lease", fmt.Sprintf("%x", int64(s.ID())), "ttl", s.TTL())
	p.cur = s
	return s, nil
}

// grant grants the lease of a new session. lease.Grant retries etcd's transient errors
// for up to the TTL; grant goes on until ctx ends.
func (p *sessions) grant(ctx context.Context) (*lease.Session, error) {
	bo := etcdutil.Backoff{Min: minRetryWait, Max: maxRetryWait}
	for {
		s, err := lease.Grant(ctx, p.client, p.ttl, p.log)
		switch {
		case err == nil:
			return s, nil
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case !retryable(err):
			return nil, fmt.Errorf("lock: starting a session: %w", err)
		}
		p.log.V(1).Info("starting a lock session failed, retrying", "error", err.Error())
		if !etcdutil.Sleep(ctx, bo.Next()) {
			return nil, context.Cause(ctx)
		}
	}
}

// close revokes the current session and waits for the keep-alive goroutines of all sessions
// to end; get fails with ErrClosed afterwards. It reports a failed revoke only for a session
// that it ended itself: the lease of one lost before expires on etcd anyway.
func (p *sessions) close() error {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	if p.closed {
		return nil
	}
	p.closed = true
	var err error
	if p.cur != nil {
		live := p.cur.Cause() == nil
		if cerr := p.cur.Close(); cerr != nil && live {
			err = fmt.Errorf("lock: closing the session (etcd frees its lease after the TTL): %w", cerr)
		}
		p.cur = nil
	}
	p.keepAlive.Wait()
	return err
}
