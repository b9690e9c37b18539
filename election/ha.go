package election

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// Role is what an HACoordinator runs.
type Role int

const (
	// RoleNone: neither function runs (while Start does not run, and while switching).
	RoleNone Role = iota
	// RolePrimary: the primary function runs; this candidate leads.
	RolePrimary
	// RoleSecondary: the secondary function runs; this candidate does not lead.
	RoleSecondary
)

// String returns "none", "primary" or "secondary".
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleSecondary:
		return "secondary"
	default:
		return "none"
	}
}

// HACoordinator runs a primary function while its election's candidate leads and a
// secondary function otherwise (active-passive high availability). Create it with
// NewHACoordinator and run it with Start.
type HACoordinator struct {
	e                  *Election
	primary, secondary func(ctx context.Context) error
	log                logr.Logger

	running atomic.Bool // a Start is running

	mu   sync.Mutex
	role Role
}

// HAOptions configure an HACoordinator made by NewHACoordinator. The zero value is valid.
type HAOptions struct {
	// Logger receives the coordinator's logs. Default (the zero logr.Logger): discarded.
	Logger logr.Logger
}

// NewHACoordinator returns a coordinator of primary and secondary on election e. Both
// functions' contexts derive from Start's. The primary's ends the moment the leadership
// ends, with the reason as its cause (by the time IsLeader reports false, it has ended);
// the secondary's ends when the candidate is elected. The coordinator starts as secondary
// and switches when it is elected. A switch cancels the function that runs and waits for
// it to return before it starts the other, so the two never run at once in this process.
// A function that returns (or panics) while its role holds is logged and started again
// after a backoff. A nil secondary means standing by.
func NewHACoordinator(e *Election, primary, secondary func(ctx context.Context) error, opts HAOptions) (*HACoordinator, error) {
	switch {
	case e == nil:
		return nil, errors.New("election: HACoordinator needs an Election, got nil")
	case primary == nil:
		return nil, errors.New("election: HACoordinator needs a primary function, got nil")
	}
	if secondary == nil {
		secondary = func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		}
	}
	return &HACoordinator{e: e, primary: primary, secondary: secondary, log: opts.Logger.WithValues("election", e.prefix, "id", e.id)}, nil
}

// Start runs the coordinator until ctx ends or the Election is closed, keeping the
// election campaigning meanwhile, as Run does (sharing the campaign with any other Run of
// the same Election), so that another candidate takes over when this one stops. It
// blocks, and returns only once everything it started has ended: the running function has
// returned, and then the campaign, which resigns if this candidate leads and no other Run
// holds the campaign (never before the primary has stopped). It returns nil when ctx ends
// and ErrClosed when the Election is closed.
//
// A Start after the previous one returned runs the coordinator again; a Start while
// another one runs returns an error at once.
func (h *HACoordinator) Start(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("election: HACoordinator already running: Start was called before the previous Start returned")
	}
	defer h.running.Store(false)
	if h.e.isClosed() {
		return ErrClosed
	}
	ctx, cancel := etcdutil.Bound(ctx, h.e.stopCtx)
	defer cancel()
	// The campaign outlives the loop below: it is stopped only once the running function
	// has returned, so that this candidate resigns after its primary has stopped.
	stopCampaign := keepCampaigning(ctx, h.e, h.log)
	defer stopCampaign()
	h.run(ctx)
	if h.e.isClosed() {
		return ErrClosed
	}
	return nil
}

// Role returns the role whose function runs now.
func (h *HACoordinator) Role() Role {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.role
}

func (h *HACoordinator) setRole(r Role) {
	h.mu.Lock()
	h.role = r
	h.mu.Unlock()
}

// run plays the role the candidate has, switching at every change, until ctx ends.
func (h *HACoordinator) run(ctx context.Context) {
	for ctx.Err() == nil {
		if pctx, cancel := h.e.leaderScope(ctx); pctx != nil {
			h.play(pctx, RolePrimary, h.primary)
			cancel()
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		var watcher sync.WaitGroup
		watcher.Add(1)
		// The watcher belongs to this switch: it ends the secondary's context when the
		// candidate is elected, and itself ends with sctx.
		go func() {
			defer watcher.Done()
			if lctx, release := h.e.awaitLeading(sctx); lctx != nil {
				release()
				cancel()
			}
		}()
		h.play(sctx, RoleSecondary, h.secondary)
		cancel()
		watcher.Wait()
	}
}

// play runs fn in role r until ctx ends, starting it again when it returns early.
func (h *HACoordinator) play(ctx context.Context, r Role, fn func(context.Context) error) {
	bo := &etcdutil.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	h.log.Info("role started", "role", r.String())
	for {
		h.setRole(r)
		err := safely(ctx, fn)
		if ctx.Err() != nil {
			break
		}
		d := bo.Next()
		if err != nil {
			h.log.Error(err, "function failed, starting it again", "role", r.String(), "after", d)
		} else {
			h.log.Info("function returned while its role holds, starting it again", "role", r.String(), "after", d)
		}
		if !etcdutil.Sleep(ctx, d) {
			break
		}
	}
	h.setRole(RoleNone)
	h.log.V(1).Info("role stopped", "role", r.String())
}
