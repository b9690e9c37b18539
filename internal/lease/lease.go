package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// expiryMargin is taken off the local deadline of a lease, for the difference between
	// this machine's clock rate and etcd's.
	expiryMargin = 100 * time.Millisecond
	// keepAliveRetry is the pause before a failed keep-alive is sent again.
	keepAliveRetry = 200 * time.Millisecond
	// MaxRevokeWait bounds the revoke that ends a session: past it the lease expires anyway.
	MaxRevokeWait = 5 * time.Second
)

var (
	// ErrClosed is the cause of a session ended on purpose (Close).
	ErrClosed = errors.New("lease: session closed")
	// ErrLost is the cause of a session that ended otherwise: its lease expired, was revoked,
	// or could not be kept alive within its TTL.
	ErrLost = errors.New("session lost")
)

// Session is one lease that this process keeps alive.
//
// Unlike concurrency.Session, it knows until when its lease certainly lives: validUntil is
// the moment the last answered keep-alive was sent, plus the TTL etcd granted, less
// expiryMargin. etcd started that TTL when it received the request, which is later, so
// etcd cannot have expired the lease before validUntil. A leader stops leading at
// validUntil at the latest, whether or not etcd could say so (a paused process, a
// partition): when etcd lets the next candidate lead, this one has stopped already.
type Session struct {
	client *clientv3.Client
	id     clientv3.LeaseID
	ttl    time.Duration // as granted by etcd
	log    logr.Logger

	ctx    context.Context // cancelled, with the cause, when the session is lost or closed
	cancel context.CancelCauseFunc
	done   chan struct{} // closed by keepAlive when it has ended (and revoked the lease)

	mu         sync.Mutex
	validUntil time.Time
	revokeErr  error // written by keepAlive before done is closed
}

// Grant grants a lease of ttl seconds. The caller runs KeepAlive in a goroutine.
func Grant(ctx context.Context, client *clientv3.Client, ttl int, log logr.Logger) (*Session, error) {
	sent := time.Now()
	resp, err := client.Grant(ctx, int64(ttl))
	if err != nil {
		return nil, fmt.Errorf("lease: granting a lease of %ds: %w", ttl, err)
	}
	granted := time.Duration(resp.TTL) * time.Second
	sctx, cancel := context.WithCancelCause(context.Background())
	return &Session{
		client:     client,
		id:         resp.ID,
		ttl:        granted,
		log:        log.WithValues("lease", fmt.Sprintf("%x", resp.ID)),
		ctx:        sctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		validUntil: sent.Add(granted - expiryMargin),
	}, nil
}

// ID is the session's lease.
func (s *Session) ID() clientv3.LeaseID { return s.id }

// TTL is the lease's TTL as etcd granted it.
func (s *Session) TTL() time.Duration { return s.ttl }

// Context ends, with the cause, when the session is lost or closed. It may still look
// alive for a moment after Valid turned false: check Valid before each use of the lease.
func (s *Session) Context() context.Context { return s.ctx }

// Done is closed when KeepAlive has returned (and revoked the lease).
func (s *Session) Done() <-chan struct{} { return s.done }

// Valid reports whether the session is neither lost nor closed and its lease certainly
// lives on etcd right now.
func (s *Session) Valid() bool {
	if s.ctx.Err() != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.validUntil)
}

// Deadline is the moment until which the lease certainly lives on etcd.
func (s *Session) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.validUntil
}

// Lose ends the session for a reason other than Close; keepAlive revokes the lease, so that
// a key etcd still holds on it goes now rather than after the TTL.
func (s *Session) Lose(cause error) { s.cancel(cause) }

// Cause is why the session ended, or nil while it lives.
func (s *Session) Cause() error { return context.Cause(s.ctx) }

// Close ends the session, revokes its lease and waits for keepAlive to end.
func (s *Session) Close() error {
	s.cancel(ErrClosed)
	<-s.done
	return s.revokeErr
}

// KeepAlive renews the lease every TTL/3 (every keepAliveRetry after a failure) until the
// session is closed, etcd answers that the lease is gone, or validUntil passes without an
// answer. It then revokes the lease, unless etcd dropped it already, and closes done.
func (s *Session) KeepAlive() {
	defer close(s.done)
	next := time.NewTimer(s.ttl / 3)
	defer next.Stop()
	for {
		deadline := s.Deadline()
		expiry := time.NewTimer(time.Until(deadline))
		select {
		case <-s.ctx.Done():
			expiry.Stop()
			s.revoke()
			return
		case <-expiry.C:
			s.Lose(fmt.Errorf("%w: no keep-alive answer for lease %x before its TTL ran out", ErrLost, s.id))
			s.log.Info("session lost: keep-alives went unanswered for a TTL")
			s.revoke()
			return
		case <-next.C:
			expiry.Stop()
		}
		sent := time.Now()
		actx, cancel := context.WithDeadline(s.ctx, earliest(sent.Add(s.ttl/3), deadline))
		resp, err := s.client.KeepAliveOnce(actx, s.id)
		cancel()
		switch {
		case err == nil:
			s.mu.Lock()
			s.validUntil = sent.Add(time.Duration(resp.TTL)*time.Second - expiryMargin)
			s.mu.Unlock()
			next.Reset(s.ttl / 3)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			s.Lose(fmt.Errorf("%w: lease %x expired or was revoked", ErrLost, s.id))
			s.log.Info("session lost: etcd no longer knows the lease")
			return
		default:
			if s.ctx.Err() == nil {
				s.log.V(1).Info("keep-alive failed, retrying", "error", err.Error())
			}
			next.Reset(keepAliveRetry)
		}
	}
}

// revoke deletes the lease and every key on it, within a bounded time.
func (s *Session) revoke() {
	ctx, cancel := context.WithTimeout(context.Background(), min(s.ttl, MaxRevokeWait))
	defer cancel()
	_, err := s.client.Revoke(ctx, s.id)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		s.revokeErr = fmt.Errorf("lease: revoking lease %x: %w", s.id, err)
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
