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

	// mu guards users and retired. A session is retired when a queue write made on it was
	// sent more than once (see retire): it is no longer handed out, and it is ended (its
	// lease revoked) when its last user is done.
	mu      sync.Mutex
	users   map[*lease.Session]int   // acquisitions in progress and holds, per session
	retired map[*lease.Session]error // retired sessions that still have users, with why

	// keepAlive counts the keep-alive goroutines of every session started here, the current
	// one and those lost or abandoned that may still be revoking their lease; close waits
	// for them.
	keepAlive sync.WaitGroup
}

func newSessions(client *clientv3.Client, ttl int, log logr.Logger) *sessions {
	return &sessions{
		client:  client,
		ttl:     ttl,
		log:     log,
		sem:     make(chan struct{}, 1),
		users:   map[*lease.Session]int{},
		retired: map[*lease.Session]error{},
	}
}

// get returns the live session for a new acquisition, starting a new one when there is
// none, the last one ended or it was retired. The acquisition counts as a user of the
// session until done is called for it: when the acquisition fails, or when its hold is
// released.
func (p *sessions) get(ctx context.Context) (*lease.Session, error) {
	s, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.users[s]++
	p.mu.Unlock()
	return s, nil
}

// done ends one use of s begun by get. The last use of a retired session ends it.
func (p *sessions) done(s *lease.Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users[s]--; p.users[s] > 0 {
		return
	}
	delete(p.users, s)
	if why, ok := p.retired[s]; ok {
		delete(p.retired, s)
		p.end(s, why)
	}
}

// retire stops handing s out to new acquisitions, and ends it (revoking its lease) once its
// users are done. The caller is one of them.
//
// A queue write sent more than once (see retry) may have an attempt that etcd applies
// after the answer of another one, however late: it was sent, and no answer said it was
// dropped. A late enqueue made after the entry was released (or removed) would create the
// entry again, on the session's lease, and so block every other locker for as long as the
// session lives; a late remove would delete an entry of the same name made since. Neither
// can happen once the lease is revoked (etcd refuses a put on a lease it no longer knows,
// and the next session's entries have other names), and nothing else tells when etcd has
// dropped a request. Retiring costs one new lease, and happens only when a member was
// slow to answer.
func (p *sessions) retire(s *lease.Session, why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.retired[s]; !ok && p.users[s] > 0 {
		p.log.V(1).Info("retiring lock session", "lease", fmt.Sprintf("%x", int64(s.ID())), "reason", why.Error())
		p.retired[s] = why
	}
}

// isRetired reports whether s was retired and still has users.
func (p *sessions) isRetired(s *lease.Session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.retired[s]
	return ok
}

// end revokes a retired session that has no user left.
func (p *sessions) end(s *lease.Session, why error) {
	p.log.V(1).Info("ending retired lock session", "lease", fmt.Sprintf("%x", int64(s.ID())))
	abandon(s, fmt.Errorf("retired: %w", why))
}

// current returns the live session, starting a new one when there is none, the last one
// ended or it was retired.
func (p *sessions) current(ctx context.Context) (*lease.Session, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-p.sem }()
	if p.closed {
		return nil, ErrClosed
	}
	if p.cur != nil && p.cur.Valid() && !p.isRetired(p.cur) {
		return p.cur, nil
	}
	if p.cur != nil && p.cur.Valid() {
		// Retired: its last user ends it.
		p.cur = nil
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
	bo := etcdutil.Backoff{Min: etcdutil.MinRetryWait, Max: etcdutil.MaxRetryWait}
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
	// Retired sessions still used by a hold that was never released: nothing will release
	// it now.
	p.mu.Lock()
	for s, why := range p.retired {
		delete(p.retired, s)
		p.end(s, why)
	}
	p.mu.Unlock()
	p.keepAlive.Wait()
	return err
}
