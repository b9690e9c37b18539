package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// LeaderTask runs a function periodically, only on the leader. Create it with
// NewLeaderTask.
type LeaderTask struct {
	e        *Election
	fn       func(ctx context.Context) error
	interval time.Duration
	log      logr.Logger

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when the task's goroutine has ended
}

// NewLeaderTask returns a task that runs fn every interval while e leads: once at the
// start of each leadership, then at every tick. fn's context, derived from Start's, ends
// when the task stops and the moment the leadership ends, with the reason as its cause
// (context.Cause: ErrSessionLost, ErrResigned, ErrClosed); by the time IsLeader reports
// false, it has ended. Runs never overlap, not even across leaderships: a run that
// outlasts the interval delays the next tick, and a run that ignores its context delays
// the next leadership's first run. An error or a panic of fn is logged; the task goes on.
// A zero log discards the log.
func NewLeaderTask(e *Election, fn func(ctx context.Context) error, interval time.Duration, log logr.Logger) (*LeaderTask, error) {
	switch {
	case e == nil:
		return nil, errors.New("election: LeaderTask needs an Election, got nil")
	case fn == nil:
		return nil, errors.New("election: LeaderTask needs a function, got nil")
	case interval <= 0:
		return nil, fmt.Errorf("election: LeaderTask interval must be positive, got %s", interval)
	}
	return &LeaderTask{e: e, fn: fn, interval: interval, log: log.WithValues("election", e.prefix, "id", e.id)}, nil
}

// Start starts the task and returns; the task runs until ctx ends or Stop is called. It
// keeps the election campaigning meanwhile, as Run does (sharing the campaign with any
// other Run of the same Election). A task starts once: a second Start returns an error.
func (t *LeaderTask) Start(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started {
		return errors.New("election: LeaderTask already started")
	}
	if t.e.isClosed() {
		return ErrClosed
	}
	t.started = true
	ctx, t.cancel = context.WithCancel(ctx)
	t.done = make(chan struct{})
	// The task's goroutine belongs to the task: it ends when ctx ends or Stop is called,
	// after the run in progress returns, and then closes done.
	go t.run(ctx)
	return nil
}

// Stop stops the task: it waits for the run in progress, if any, to return, and then
// leaves the election (resigning if it led and no other Run holds the campaign). It does
// nothing on a task that was never started.
func (t *LeaderTask) Stop() {
	t.mu.Lock()
	cancel, done := t.cancel, t.done
	t.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (t *LeaderTask) run(ctx context.Context) {
	defer close(t.done)
	// The campaign is stopped once the loop below has ended, after the run in progress.
	stopCampaign := keepCampaigning(ctx, t.e, t.log)
	defer stopCampaign()
	for {
		lctx, cancel := t.e.awaitLeading(ctx)
		if lctx == nil {
			return
		}
		t.lead(lctx)
		cancel()
	}
}

// lead runs fn now and at every tick until ctx, a leader scope, ends.
func (t *LeaderTask) lead(ctx context.Context) {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for ctx.Err() == nil {
		if err := safely(ctx, t.fn); err != nil && ctx.Err() == nil {
			t.log.Error(err, "leader task failed")
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
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
