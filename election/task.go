package election

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// LeaderTask runs a function periodically, only on the leader. Create it with
// NewLeaderTask and run it with Start.
type LeaderTask struct {
	e        *Election
	fn       func(ctx context.Context) error
	interval time.Duration // 0: once per leadership
	log      logr.Logger

	running atomic.Bool // a Start is running
}

// TaskOptions configure a LeaderTask made by NewLeaderTask. The zero value is valid: every
// field has a default.
type TaskOptions struct {
	// Interval is the time between the starts of two runs of the function while the
	// candidate leads: it runs once at the start of each leadership, then every Interval. A
	// run that outlasts the interval delays the next tick. It must not be negative. Default
	// (0): the function runs once per leadership, at its start.
	Interval time.Duration
	// Logger receives the task's logs. Default (the zero logr.Logger): discarded.
	Logger logr.Logger
}

// NewLeaderTask returns a task that runs fn while e leads: once at the start of each
// leadership, then every opts.Interval (if set). fn's context, derived from Start's, ends
// when Start's does and the moment the leadership ends, with the reason as its cause
// (context.Cause: ErrSessionLost, ErrResigned, ErrClosed); by the time IsLeader reports
// false, it has ended. Runs never overlap, not even across leaderships: a run that
// outlasts the interval delays the next tick, and a run that ignores its context delays
// the next leadership's first run. An error or a panic of fn is logged; the task goes on.
func NewLeaderTask(e *Election, fn func(ctx context.Context) error, opts TaskOptions) (*LeaderTask, error) {
	switch {
	case e == nil:
		return nil, errors.New("election: LeaderTask needs an Election, got nil")
	case fn == nil:
		return nil, errors.New("election: LeaderTask needs a function, got nil")
	case opts.Interval < 0:
		return nil, fmt.Errorf("election: LeaderTask Interval must not be negative, got %s", opts.Interval)
	}
	return &LeaderTask{e: e, fn: fn, interval: opts.Interval, log: opts.Logger.WithValues("election", e.prefix, "id", e.id)}, nil
}

// Start runs the task until ctx ends or the Election is closed, keeping the election
// campaigning meanwhile, as Run does (sharing the campaign with any other Run of the same
// Election). It blocks, and returns only once everything it started has ended: the run in
// progress has returned, and then the campaign, which resigns if this candidate leads and
// no other Run holds the campaign. It returns nil when ctx ends and ErrClosed when the
// Election is closed.
//
// A Start after the previous one returned runs the task again (a manager starts its
// leader runnables again at every term); a Start while another one runs returns an error
// at once.
func (t *LeaderTask) Start(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("election: LeaderTask already running: Start was called before the previous Start returned")
	}
	defer t.running.Store(false)
	if t.e.isClosed() {
		return ErrClosed
	}
	ctx, cancel := etcdutil.Bound(ctx, t.e.stopCtx)
	defer cancel()
	// The campaign is stopped once the loop below has ended, after the run in progress.
	stopCampaign := keepCampaigning(ctx, t.e, t.log)
	defer stopCampaign()
	for {
		lctx, release := t.e.awaitLeading(ctx)
		if lctx == nil {
			break
		}
		t.lead(lctx)
		release()
	}
	if t.e.isClosed() {
		return ErrClosed
	}
	return nil
}

// lead runs fn now and at every tick (with no interval: once) until ctx, a leader scope,
// ends.
func (t *LeaderTask) lead(ctx context.Context) {
	var tick <-chan time.Time // nil with no interval: the run is the only one of the leadership
	if t.interval > 0 {
		ticker := time.NewTicker(t.interval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for ctx.Err() == nil {
		if err := safely(ctx, t.fn); err != nil && ctx.Err() == nil {
			t.log.Error(err, "leader task failed")
		}
		select {
		case <-ctx.Done():
		case <-tick:
		}
	}
}

// safely runs fn, turning a panic into an error.
func safely(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn(ctx)
}
