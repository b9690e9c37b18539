package election

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// runLoop is the one campaign loop that all active Run calls share.
type runLoop struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has ended (and resigned)
}

// Run keeps this candidate in the election until ctx ends: it campaigns, leads until the
// leadership ends for any reason (session lost, key deleted, Resign), and campaigns again,
// with a new session when the old one was lost. It is the loop that the guide's "Handle
// Connection Failures" practice writes by hand. Transitions are reported through OnElected,
// OnDefeat, IsLeader and LeaderContext, as with Campaign.
//
// Run blocks; it returns nil when ctx ends and ErrClosed when the Election is closed.
// Several Run calls (LeaderTask and HACoordinator make one each) share one campaign: the
// candidate stays in the election while any of them is active, and when the last one
// returns it resigns if it leads. Errors on the way are logged and retried: etcd's
// transient ones (unreachable, no leader) with a backoff of up to the TTL; permanent ones
// (a denied permission on the prefix, a failed authentication) every TTL, logged at the
// default level each time and reported by Err until a campaign succeeds, so that a role an
// operator mends is picked up without a restart.
func (e *Election) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.holders++
	if e.loop == nil {
		lctx, cancel := context.WithCancel(e.stopCtx)
		e.loop = &runLoop{cancel: cancel, done: make(chan struct{})}
		e.wg.Add(1)
		// The campaign loop belongs to the Election: it ends when the last Run returns or
		// Close is called, resigning on its way out, and then closes loop.done. It starts
		// once the loop before it, if one is still resigning, has ended.
		go e.campaignLoop(lctx, e.loop, e.retiring)
	}
	l := e.loop
	e.mu.Unlock()

	var err error
	select {
	case <-ctx.Done():
	case <-l.done:
		err = ErrClosed
	}
	e.mu.Lock()
	e.holders--
	last := e.holders == 0 && e.loop == l
	if last {
		e.loop = nil
		e.retiring = l.done
	}
	e.mu.Unlock()
	if last {
		l.cancel()
		<-l.done
	}
	if err == nil && e.isClosed() {
		err = ErrClosed
	}
	return err
}

func (e *Election) campaignLoop(ctx context.Context, l *runLoop, prev <-chan struct{}) {
	defer e.wg.Done()
	defer close(l.done)
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
		}
	}
	bo := &etcdutil.Backoff{Min: 100 * time.Millisecond, Max: e.ttl}
	for ctx.Err() == nil {
		err := e.Campaign(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			d := bo.Next()
			switch {
			case errors.Is(err, ErrSessionLost):
				e.log.Info("candidacy lost, campaigning again", "reason", err.Error())
			case etcderr.IsPermanent(err):
				d = e.ttl
				e.setProblem(err)
				e.log.Error(err, "campaign refused by etcd, retrying", "after", d)
			default:
				e.log.Error(err, "campaign failed, retrying", "after", d)
			}
			if !etcdutil.Sleep(ctx, d) {
				break
			}
			continue
		}
		e.setProblem(nil)
		bo.Reset()
		select {
		case <-e.LeaderContext().Done():
		case <-ctx.Done():
		}
	}
	if e.isClosed() {
		return // Close resigns and revokes the session itself
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cleanupTimeout())
	defer cancel()
	if err := e.Resign(ctx); err != nil {
		e.log.Error(err, "resigning as the campaign ends")
	}
}

// keepCampaigning runs e.Run until the returned stop is called, which waits for it; ctx
// gives Run its values, not its end. LeaderTask and HACoordinator stop it only once their
// function has returned, so that they resign after their work has stopped.
func keepCampaigning(ctx context.Context, e *Election, log logr.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	// The campaign goroutine belongs to the caller: it ends when stop is called (or the
	// Election is closed).
	go func() {
		defer close(done)
		if err := e.Run(ctx); err != nil && !errors.Is(err, ErrClosed) {
			log.Error(err, "campaign ended")
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// Err returns the permanent error that keeps Run from campaigning (a denied permission on
// the election's prefix, a failed authentication: errors only an operator can mend), or
// nil. It turns nil again when a campaign succeeds.
func (e *Election) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.problem
}

func (e *Election) setProblem(err error) {
	e.mu.Lock()
	e.problem = err
	e.mu.Unlock()
}
