package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

const (
	// expiryMargin is taken off the local deadline of a lease, for the difference between
	// this machine's clock rate and etcd's.
	expiryMargin = 100 * time.Millisecond
	// renewalsPerTTL is how many renewals a TTL holds: the lease is renewed every
	// TTL/renewalsPerTTL. After the last answered renewal the lease lives on for the rest of
	// the TTL, so that the renewals that fail while etcd elects a leader (a member killed
	// or hung: 1-2 s with etcd's default timing) leave it most of its TTL to get through.
	renewalsPerTTL = 5
	// hedgesPerTTL sets how long a renewal waits for an answer before it sends two more
	// attempts beside the ones in flight: TTL/hedgesPerTTL, within [minHedge, maxHedge],
	// less up to half at random. The client sends each request to the next etcd member in
	// turn, but its other requests come in between, in step with these: an attempt sent
	// again alone can land on the same silent member (paused, or forwarding the renewal to
	// a leader that is gone) every time. Two sent at once go to two members, one of them
	// not the silent one, while the earlier attempts wait on for an answer.
	hedgesPerTTL = 20
	minHedge     = 50 * time.Millisecond
	maxHedge     = 500 * time.Millisecond
	// attemptHedges bounds how long one attempt waits for its answer, in hedge periods, and
	// maxInFlight how many attempts of a renewal are in flight at once.
	attemptHedges = 4
	maxInFlight   = 8
	// maxAttempt bounds one attempt of a Grant: a member that does not answer
	// keeps a request until its deadline, and the next attempt most likely goes to another
	// member.
	maxAttempt = 2 * time.Second
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
//
// Several attempts of one renewal may be in flight (see KeepAlive): each answered one
// moves validUntil to its own send time plus the TTL, never back.
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
//
// The request is sent as etcdutil.Hedge sends it: beside an attempt slow to answer (a
// member that keeps requests), and again after a transient error (etcderr), until ctx ends
// or the TTL has passed since the first. Each attempt has a deadline of its own, at most a
// third of the TTL, so the lease it returns has at least two thirds of its TTL to live, and
// a Grant that a paused member keeps does not hand out a lease whose deadline has passed. A
// lease granted by an attempt whose answer was not the first (or came too late) is never
// used: it holds no key and expires after its TTL. Other errors are returned at once.
//
// etcd raises a TTL below its minimum (about 1.5 election timeouts) to that minimum; the
// session keeps the TTL etcd granted, and Grant logs the difference.
func Grant(ctx context.Context, client *clientv3.Client, ttl int, log logr.Logger) (*Session, error) {
	asked := time.Duration(ttl) * time.Second
	per := min(asked/3, maxAttempt)
	gctx, cancel := context.WithTimeout(ctx, asked)
	defer cancel()
	type granted struct {
		resp *clientv3.LeaseGrantResponse
		sent time.Time
	}
	g, attempts, err := etcdutil.Hedge(gctx, log, "grant", func(ctx context.Context) (granted, error) {
		sent := time.Now()
		actx, cancel := context.WithTimeout(ctx, per)
		defer cancel()
		resp, err := client.Grant(actx, int64(ttl))
		return granted{resp, sent}, err
	})
	switch {
	case err == nil:
		return newSession(client, g.resp, ttl, g.sent, log), nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("lease: granting a lease of %s: %w", asked, context.Cause(ctx))
	case gctx.Err() != nil:
		return nil, fmt.Errorf("lease: granting a lease of %s: no answer within the TTL (%d attempts): %w", asked, attempts, err)
	}
	return nil, fmt.Errorf("lease: granting a lease of %s: %w", asked, err)
}

func newSession(client *clientv3.Client, resp *clientv3.LeaseGrantResponse, asked int, sent time.Time, log logr.Logger) *Session {
	granted := time.Duration(resp.TTL) * time.Second
	log = log.WithValues("lease", fmt.Sprintf("%x", resp.ID))
	if resp.TTL != int64(asked) {
		log.Info("etcd granted a lease TTL other than the one asked (etcd raises a TTL below its minimum); the session uses etcd's",
			"askedTTL", time.Duration(asked)*time.Second, "grantedTTL", granted)
	}
	sctx, cancel := context.WithCancelCause(context.Background())
	return &Session{
		client:     client,
		id:         resp.ID,
		ttl:        granted,
		log:        log,
		ctx:        sctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		validUntil: sent.Add(granted - expiryMargin),
	}
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

// schedule is how a session of a TTL renews its lease.
type schedule struct {
	period time.Duration // from the send time of an answered renewal to the next renewal
	hedge  time.Duration // from one attempt of a renewal to the next while none is answered
	life   time.Duration // how long one attempt waits for its answer
}

func scheduleFor(ttl time.Duration) schedule {
	h := min(max(ttl/hedgesPerTTL, minHedge), maxHedge)
	return schedule{period: ttl / renewalsPerTTL, hedge: h, life: min(ttl/3, attemptHedges*h)}
}

// answer is the outcome of one keep-alive attempt.
type answer struct {
	renewal int       // the renewal the attempt belongs to
	sent    time.Time // when it was sent
	ttl     int64     // the TTL etcd answered with
	err     error
}

// KeepAlive renews the lease every TTL/5 until the session is closed, etcd answers that the
// lease is gone, or validUntil passes without an answer. It then revokes the lease, unless
// etcd dropped it already, and closes done.
//
// A renewal is sent as attempts: a first one, then two more every TTL/20 (within 50 and
// 500 ms, less up to half at random) while none is answered, at most 8 in flight, each
// waiting for its answer up to a third of the TTL or 4 attempt periods, and never past
// validUntil. The client sends each request to the next etcd member in turn, so a renewal
// gets through as soon as any member can forward it to a leader, even when another one
// keeps every request it gets without answering (a paused member, or a follower
// forwarding to a leader that is gone). The first answer ends the renewal; the attempts
// still in flight are cancelled.
func (s *Session) KeepAlive() {
	defer close(s.done)
	sch := scheduleFor(s.ttl)
	attempts, stopAttempts := context.WithCancel(s.ctx)
	var wg sync.WaitGroup // the attempts in flight
	end := func() {
		stopAttempts()
		wg.Wait()
	}
	answers := make(chan answer)
	renewal := 0                     // the current renewal, counted from 1
	renewing := false                // the current renewal is unanswered
	var cancels []context.CancelFunc // of the current renewal's attempts
	tries := 0                       // attempts of the current renewal
	inFlight := 0                    // attempts that have not delivered their answer
	problem := false                 // a permanent error was logged in the current renewal
	send := func(n int) {
		for ; n > 0 && inFlight < maxInFlight; n-- {
			tries++
			inFlight++
			sent := time.Now()
			actx, cancel := context.WithDeadline(attempts, earliest(sent.Add(sch.life), s.Deadline()))
			cancels = append(cancels, cancel)
			wg.Add(1)
			// The attempt ends with its deadline or its cancel at the latest, and delivers
			// its answer unless KeepAlive has stopped the attempts (end waits for it).
			go func(n int) {
				defer wg.Done()
				defer cancel()
				resp, err := s.client.KeepAliveOnce(actx, s.id)
				a := answer{renewal: n, sent: sent, err: err}
				if err == nil {
					a.ttl = resp.TTL
				}
				select {
				case answers <- a:
				case <-attempts.Done():
				}
			}(renewal)
		}
	}
	next := time.NewTimer(sch.period) // the next renewal
	defer next.Stop()
	hedge := time.NewTimer(sch.hedge) // the next attempt of an unanswered renewal
	hedge.Stop()
	defer hedge.Stop()
	for {
		expiry := time.NewTimer(time.Until(s.Deadline()))
		select {
		case <-s.ctx.Done():
			expiry.Stop()
			end()
			s.revoke()
			return
		case <-expiry.C:
			s.Lose(fmt.Errorf("%w: no keep-alive answer for lease %x before its TTL ran out", ErrLost, s.id))
			s.log.Info("session lost: keep-alives went unanswered for a TTL", "attempts", tries)
			end()
			s.revoke()
			return
		case <-next.C:
			renewal++
			renewing, tries, problem, cancels = true, 0, false, nil
			send(1)
			hedge.Reset(jitterDown(sch.hedge))
		case <-hedge.C:
			if renewing {
				send(2)
				hedge.Reset(jitterDown(sch.hedge))
			}
		case a := <-answers:
			inFlight--
			switch {
			case a.err == nil:
				s.mu.Lock()
				if until := a.sent.Add(time.Duration(a.ttl)*time.Second - expiryMargin); until.After(s.validUntil) {
					s.validUntil = until
				}
				s.mu.Unlock()
				if a.renewal == renewal && renewing {
					renewing = false
					hedge.Stop()
					for _, c := range cancels {
						c()
					}
					cancels = nil
					if tries > 1 {
						s.log.V(1).Info("keep-alive answered", "attempts", tries, "after", time.Since(a.sent))
					}
					next.Reset(max(time.Until(a.sent.Add(sch.period)), 0))
				}
			case errors.Is(a.err, rpctypes.ErrLeaseNotFound):
				expiry.Stop()
				s.Lose(fmt.Errorf("%w: lease %x expired or was revoked", ErrLost, s.id))
				s.log.Info("session lost: etcd no longer knows the lease")
				end()
				return
			case a.renewal != renewal || !renewing || s.ctx.Err() != nil:
				// An attempt of a renewal that is over, cancelled.
			case etcderr.IsPermanent(a.err) && !problem:
				problem = true
				s.log.Error(a.err, "keep-alive refused by etcd, retrying until the lease's TTL runs out")
			default:
				s.log.V(1).Info("keep-alive failed, retrying", "attempt", tries, "error", a.err.Error())
			}
		}
		expiry.Stop()
	}
}

// revoke deletes the lease and every key on it, within a bounded time. The request is sent
// as etcdutil.Hedge sends it: beside an attempt that is slow to answer (a member that keeps
// requests), and again after transient errors. A revoke applied twice finds the lease gone,
// which is what it wanted.
func (s *Session) revoke() {
	ctx, cancel := context.WithTimeout(context.Background(), min(s.ttl, MaxRevokeWait))
	defer cancel()
	_, attempts, err := etcdutil.Hedge(ctx, s.log, "revoke", func(ctx context.Context) (struct{}, error) {
		_, err := s.client.Revoke(ctx, s.id)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = nil
		}
		return struct{}{}, err
	})
	if err != nil {
		s.revokeErr = fmt.Errorf("lease: revoking lease %x (%d attempts): %w", s.id, attempts, err)
	}
}

// jitterDown returns a duration between half of d and d, at random. The client sends each
// request to the next etcd member in turn, but its other requests come in between: an
// attempt sent again after a fixed delay may land on the same silent member every time,
// while attempts at random times spread over the members.
func jitterDown(d time.Duration) time.Duration {
	return d - rand.N(d/2+1)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
