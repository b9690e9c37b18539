package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// cleanupTimeout bounds the etcd calls that release or remove a key after the caller's
// context has ended (a cancelled wait, Close, WithLock after a cancelled context), and the
// revocation of a lease on Close. When such a call fails the session is abandoned, so that
// etcd still frees the keys once the lease's TTL runs out.
const cleanupTimeout = 3 * time.Second

// session is one lease kept alive for the locks that use it. Every queue entry of a lock is
// attached to it, so the entries of a process that dies or stops answering vanish after the
// TTL: that is what bounds how long a lock outlives its holder.
type session struct {
	client *clientv3.Client
	id     clientv3.LeaseID
	// ctx ends when the lease is no longer kept alive: etcd answered that it expired or was
	// revoked, no answer came for nearly a TTL (untilExpiry), or the session was abandoned
	// or closed. From then on the lease may be gone at any moment. Waits and watches made
	// on behalf of the session are bound to it.
	ctx    context.Context
	cancel context.CancelFunc // ends ctx, which stops the keep-alive
	done   chan struct{}      // closed when the keep-alive reader has returned, after ctx ended
}

// newSession grants a lease of ttl seconds (the call bounded by ctx) and keeps it alive
// until the session is abandoned or closed, or the lease ends.
func newSession(ctx context.Context, client *clientv3.Client, ttl int) (*session, error) {
	resp, err := client.Grant(ctx, int64(ttl))
	if err != nil {
		return nil, fmt.Errorf("lock: granting a lease of %d seconds: %w", ttl, err)
	}
	// The keep-alive lives as long as the session, not as long as the call that made it.
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ka, err := client.KeepAlive(kctx, resp.ID)
	if err != nil {
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		_, _ = client.Revoke(rctx, resp.ID)
		rcancel()
		return nil, fmt.Errorf("lock: keeping lease %x alive: %w", int64(resp.ID), err)
	}
	s := &session{client: client, id: resp.ID, ctx: kctx, cancel: cancel, done: make(chan struct{})}
	// The keep-alive reader belongs to the session. It ends when the client closes ka (the
	// lease expired or was revoked, the client closed, or abandon/close cancelled kctx) or
	// when no answer came in time (see expiryMargin); it then stops the keep-alive and
	// closes done.
	go func() {
		defer close(s.done)
		defer cancel()
		timer := time.NewTimer(untilExpiry(resp.TTL))
		defer timer.Stop()
		for {
			select {
			case r, ok := <-ka:
				if !ok {
					return
				}
				timer.Reset(untilExpiry(r.TTL))
			case <-timer.C:
				return
			}
		}
	}()
	return s, nil
}

// untilExpiry is how long after a keep-alive answer that reported ttl seconds the session
// still counts as alive: the TTL less a sixth of it. etcd counts the TTL from the renewal,
// which happened before the answer arrived here, so without a margin this process could
// still believe it holds a lock that etcd has already handed on. Keep-alives go out every
// TTL/3, so the margin still leaves room for a missed one.
func untilExpiry(ttl int64) time.Duration {
	d := time.Duration(ttl) * time.Second
	return d - d/6
}

// alive reports whether the lease is still being kept alive.
func (s *session) alive() bool { return s.ctx.Err() == nil }

// abandon stops the keep-alive without revoking the lease: etcd deletes its keys when the
// TTL runs out. Used when a key could not be removed, so that it is freed all the same.
func (s *session) abandon() {
	s.cancel()
	<-s.done
}

// close stops the keep-alive and revokes the lease, which deletes every key attached to it.
func (s *session) close() error {
	s.abandon()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, err := s.client.Revoke(ctx, s.id)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("lock: revoking lease %x (etcd frees it after its TTL): %w", int64(s.id), err)
	}
	return nil
}

// sessions hands out the current live session, and replaces one that has ended, so that a
// lock whose lease expired between two uses works again at its next Lock. Locks of one
// Manager share one sessions value; a Lock made by New has its own.
type sessions struct {
	client *clientv3.Client
	ttl    int
	log    logr.Logger

	// sem serialises get and close (a channel rather than a mutex, so that a get waiting
	// behind another one's Grant still honours its own context). It guards cur and closed.
	sem    chan struct{}
	cur    *session
	closed bool
}

func newSessions(client *clientv3.Client, ttl int, log logr.Logger) *sessions {
	return &sessions{client: client, ttl: ttl, log: log, sem: make(chan struct{}, 1)}
}

// get returns the live session, starting a new one when there is none or the last one ended.
func (p *sessions) get(ctx context.Context) (*session, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-p.sem }()
	if p.closed {
		return nil, ErrClosed
	}
	if p.cur != nil && p.cur.alive() {
		return p.cur, nil
	}
	if p.cur != nil {
		p.log.Info("lock session ended, starting a new one", "lease", fmt.Sprintf("%x", int64(p.cur.id)))
		p.cur.abandon()
		p.cur = nil
	}
	s, err := newSession(ctx, p.client, p.ttl)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	p.log.V(1).Info("lock session started", "lease", fmt.Sprintf("%x", int64(s.id)), "ttl", p.ttl)
	p.cur = s
	return s, nil
}

// close revokes the current session; get fails with ErrClosed afterwards.
func (p *sessions) close() error {
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.cur == nil {
		return nil
	}
	err := p.cur.close()
	p.cur = nil
	return err
}
