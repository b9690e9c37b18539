package election

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/lease"
)

const (
	// DefaultTTL is the session TTL used when Options.TTL is 0.
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest session TTL that New accepts. etcd itself rounds shorter
	// leases up to about 1.5 election timeouts.
	MinTTL = 2 * time.Second
)

var (
	// ErrNoLeader is returned by GetLeader when no candidate holds the election.
	ErrNoLeader = errors.New("election: no leader")
	// ErrSessionLost means the candidacy ended under a Campaign: the session's lease expired,
	// was revoked or could not be kept alive, or the candidate's key was deleted (which
	// etcd does when the lease goes). Campaigning again starts a new session; Run does so
	// by itself.
	ErrSessionLost = lease.ErrLost
	// ErrClosed is returned by calls on a closed Election, and is the cause of a leader
	// context that Close ended.
	ErrClosed = errors.New("election: closed")
	// ErrResigned is the cause of a leader context that Resign ended.
	ErrResigned = errors.New("election: resigned")
	// ErrNotLeader is the cause of the context LeaderContext returns when this candidate
	// does not lead.
	ErrNotLeader = errors.New("election: not the leader")
)

// Election is one candidate in a leader election held on a key prefix. Create it with New;
// it is safe for concurrent use. Close it when done: that resigns, revokes the session and
// waits for every goroutine the Election started.
type Election struct {
	client *clientv3.Client
	prefix string // ends with "/"
	id     string
	ttl    time.Duration
	ttlSec int // ttl in seconds, as lease.Grant takes it
	log    logr.Logger

	stopCtx   context.Context // ended by Close, with cause ErrClosed: ends campaigns, Run, observers
	stop      context.CancelCauseFunc
	notLeader context.Context // already ended: the leader context while not leading

	// campaignLock is a one-token semaphore held by the Campaign, Resign or Close that
	// creates or deletes this candidate's key, so that at most one candidacy exists at a time.
	campaignLock chan struct{}

	mu sync.Mutex
	// term is the candidacy that leads, nil while this candidate does not. Invariant: a
	// term whose ctx has ended or whose session is no longer valid is ended (term set to
	// nil, OnDefeat queued) by the first method that finds it so, under mu.
	term      *candidacy
	sess      *lease.Session // the session for the next candidacy; replaced once lost
	changed   chan struct{}  // closed and replaced at every change of term
	onElected []func()
	onDefeat  []func()
	events    []bool // callbacks to run, in order: true for elected, false for defeat
	notifying bool   // a notifier goroutine runs the events
	holders   int    // Run calls (including tasks and coordinators) that keep the election campaigning
	loop      *runLoop
	retiring  <-chan struct{} // done of the last loop that ended, which may still be resigning
	closed    bool
	problem   error         // the permanent error Run's last campaign met (see Err)
	closeDone chan struct{} // closed when Close has finished
	closeErr  error
	wg        sync.WaitGroup // every goroutine of the Election: key watchers, sessions, observers, notifier, run loop
}

// Options configure an Election made by New. The zero value is valid: every field has a
// default.
type Options struct {
	// ID names this candidate: it is the value of its key, which GetLeader and Observe
	// report. It must not hold '/' or white space. Default (""): the host name and a random
	// suffix.
	ID string
	// TTL is the session TTL: a candidate that crashes or is cut off from etcd loses its
	// place within that time, and a leader its leadership. It must be a whole number of
	// seconds (etcd leases count seconds), at least MinTTL (2 s). Default (0): DefaultTTL,
	// 10 s.
	TTL time.Duration
	// Logger receives the election's logs. Default (the zero logr.Logger): discarded.
	Logger logr.Logger
}

// New returns a candidate in the election held under prefix (a "/" is appended when
// missing), configured by opts. New does not contact etcd; Campaign and Run do.
func New(client *clientv3.Client, prefix string, opts Options) (*Election, error) {
	switch {
	case client == nil:
		return nil, errors.New("election: client must not be nil")
	case prefix == "":
		return nil, errors.New(`election: prefix must not be empty, got ""`)
	}
	id := opts.ID
	if id == "" {
		id = etcdutil.DefaultID("candidate")
	}
	if !etcdutil.ValidID(id) {
		return nil, fmt.Errorf("election: ID must not hold '/' or white space, got %q", id)
	}
	ttl, ttlSec, err := lease.CheckTTL("election: TTL", opts.TTL, DefaultTTL, MinTTL)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	stopCtx, stop := context.WithCancelCause(context.Background())
	notLeader, end := context.WithCancelCause(context.Background())
	end(ErrNotLeader)
	return &Election{
		client:       client,
		prefix:       prefix,
		id:           id,
		ttl:          ttl,
		ttlSec:       ttlSec,
		log:          opts.Logger.WithValues("election", prefix, "id", id),
		stopCtx:      stopCtx,
		stop:         stop,
		notLeader:    notLeader,
		campaignLock: make(chan struct{}, 1),
		changed:      make(chan struct{}),
		closeDone:    make(chan struct{}),
	}, nil
}

// ID returns this candidate's id, the value of its key.
func (e *Election) ID() string { return e.id }

// Prefix returns the key prefix of the election, ending with "/".
func (e *Election) Prefix() string { return e.prefix }

// OnElected adds fn to the functions called each time this candidate becomes the leader.
// OnDefeat adds fn to those called each time its leadership ends. Each transition calls
// them once, in the order of the transitions and of registration, one at a time, from a
// goroutine of the Election (never while it holds a lock). They must not block for long
// and must not call Close; anything else, Resign included, is fine. Close waits for the
// calls in progress, and calls OnDefeat if it ends a leadership.
func (e *Election) OnElected(fn func()) {
	if fn == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onElected = append(e.onElected, fn)
}

// OnDefeat adds fn to the functions called each time this candidate's leadership ends: its
// session was lost, its key disappeared, Resign or Close was called. See OnElected.
func (e *Election) OnDefeat(fn func()) {
	if fn == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onDefeat = append(e.onDefeat, fn)
}

// Campaign blocks until this candidate leads, ctx ends (it returns ctx's error), the
// Election is closed (ErrClosed) or the candidacy is lost (ErrSessionLost). It returns nil
// at once when the candidate leads already.
//
// The candidate queues behind the candidates that campaigned before it: its key, named
// after its session's lease, holds its id, and the oldest key leads. Before it returns nil,
// Campaign checks in one transaction that its own key still exists and no older one does,
// so it never reports a leadership that its session lost while it waited. When ctx ends or
// the Election is closed, the candidate's key is deleted: it leaves the line.
//
// Campaign runs once: after ErrSessionLost, calling it again starts a new session. Run
// campaigns for as long as its context lives, again after every loss. While Run is
// active, Campaign simply waits for the leadership that Run campaigns for.
func (e *Election) Campaign(ctx context.Context) error {
	if e.isClosed() {
		return ErrClosed
	}
	ctx, cancel := etcdutil.Bound(ctx, e.stopCtx)
	defer cancel()
	if err := e.lockCampaign(ctx); err != nil {
		return context.Cause(ctx)
	}
	defer e.unlockCampaign()
	if e.IsLeader() {
		return nil
	}
	var c *candidacy
	// A session that turns out to be gone when the key is put (its loss not yet noticed
	// by the keep-alive) is replaced: no candidacy was lost, so the campaign goes on.
	for attempt := 1; c == nil; attempt++ {
		s, err := e.session(ctx)
		if err != nil {
			return err
		}
		c, err = e.nominate(ctx, s)
		switch {
		case ctx.Err() != nil:
			if c != nil {
				e.withdraw(c, context.Cause(ctx))
			}
			return context.Cause(ctx)
		case errors.Is(err, ErrSessionLost) && attempt < 3:
		case err != nil:
			return err
		}
	}
	e.log.V(1).Info("campaigning", "key", c.key, "revision", c.rev)
	if err := e.waitTurn(ctx, c); err != nil {
		e.withdraw(c, err)
		return err
	}
	return e.takeOffice(c)
}

// session returns the session for a new candidacy, granting a new lease when there is none
// or the last one was lost. The caller holds the campaign lock.
func (e *Election) session(ctx context.Context) (*lease.Session, error) {
	e.mu.Lock()
	s := e.sess
	e.mu.Unlock()
	if s != nil && s.Valid() {
		return s, nil
	}
	if s != nil && s.Cause() == nil {
		// Past its deadline but not yet ended: end it before it is replaced, so that its
		// keep-alive goroutine revokes the lease and stops even if an answer comes late.
		s.Lose(fmt.Errorf("%w: no keep-alive answer for lease %x within its TTL", ErrSessionLost, s.ID()))
	}
	bo := &etcdutil.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		s, err := lease.Grant(ctx, e.client, e.ttlSec, e.log)
		if err == nil {
			e.mu.Lock()
			e.sess = s
			e.wg.Add(1)
			e.mu.Unlock()
			// The keep-alive goroutine belongs to the session: it ends when the session is
			// lost or closed (Close closes the current one).
			go func() {
				defer e.wg.Done()
				s.KeepAlive()
			}()
			e.log.V(1).Info("session started", "lease", fmt.Sprintf("%x", s.ID()), "ttl", s.TTL())
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if !etcderr.IsTransient(err) {
			return nil, err
		}
		e.log.V(1).Info("campaign: etcd did not answer, retrying", "error", err.Error())
		if !etcdutil.Sleep(ctx, bo.Next()) {
			return nil, context.Cause(ctx)
		}
	}
}

// takeOffice makes c the term, unless it ended or its session expired meanwhile.
func (e *Election) takeOffice(c *candidacy) error {
	e.mu.Lock()
	if c.ctx.Err() == nil && c.sess.Valid() {
		e.term = c
		e.transitionLocked(true)
		e.mu.Unlock()
		e.log.Info("elected", "key", c.key, "token", c.rev)
		return nil
	}
	e.mu.Unlock()
	err := context.Cause(c.ctx)
	if err == nil {
		err = fmt.Errorf("%w: the lease of %s ran out before the election was won", ErrSessionLost, c.key)
	}
	e.withdraw(c, err)
	return err
}

// withdraw ends a candidacy that did not win and deletes its key, unless the session is
// gone (and with it the key).
func (e *Election) withdraw(c *candidacy, cause error) {
	c.cancel(cause)
	if c.sess.Context().Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cleanupTimeout())
	defer cancel()
	_ = e.deleteKey(ctx, c)
}

// cleanupTimeout bounds the deletes and revokes that end a candidacy when the caller's
// context has already ended.
func (e *Election) cleanupTimeout() time.Duration {
	return min(e.ttl, lease.MaxRevokeWait)
}

// IsLeader reports whether this candidate leads now. It is false from the moment the
// leadership ends, including when the session's lease may have expired on etcd without this
// process having heard of it (a pause, a partition): the leadership is then ended on the
// spot, and the leader context cancelled, before IsLeader returns.
func (e *Election) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leadingLocked() != nil
}

// LeaderContext returns the context of the current leadership: it is cancelled the moment
// the leadership ends, with the reason as its cause (ErrSessionLost, ErrResigned,
// ErrClosed). Work that only the leader may do runs under it. When this candidate does not
// lead, the context is already cancelled, with cause ErrNotLeader.
func (e *Election) LeaderContext() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.leadingLocked(); c != nil {
		return c.ctx
	}
	return e.notLeader
}

// Token returns the fencing token of the current leadership: the create revision of the
// leader's key, which grows with every new leadership. It is 0 when this candidate does
// not lead.
func (e *Election) Token() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.leadingLocked(); c != nil {
		return c.rev
	}
	return 0
}

// SessionAlive reports whether this candidate has a session and it is alive: its lease was
// renewed within its TTL. It is false before the first campaign and while a lost session is
// being replaced.
func (e *Election) SessionAlive() bool {
	e.mu.Lock()
	s := e.sess
	e.mu.Unlock()
	return s != nil && s.Valid()
}

// Term is one leadership, seen at one instant: its context (cancelled when it ends), the
// fencing condition and token that belong to it.
type Term struct {
	Context context.Context
	Guard   clientv3.Cmp
	Token   int64
}

// Term returns the current leadership, with its context, guard and token taken together
// (LeaderContext, Guard and Token called one after the other may see different
// leaderships), and false when this candidate does not lead.
func (e *Election) Term() (Term, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.leadingLocked()
	if c == nil {
		return Term{}, false
	}
	return Term{Context: c.ctx, Guard: clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev), Token: c.rev}, true
}

// Guard returns the transaction condition that the current leadership still holds: the
// leader key exists with the create revision Token returns. A write made in
// Txn().If(Guard()) is rejected by etcd once the leadership has ended, even if this process
// has not noticed yet. When this candidate does not lead, Guard returns a condition that
// never holds.
func (e *Election) Guard() clientv3.Cmp {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.leadingLocked(); c != nil {
		return clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev)
	}
	return clientv3.Compare(clientv3.CreateRevision(e.prefix), "=", -1)
}

// GetLeader returns the id of the leader, as etcd has it now (the oldest candidate's key),
// or ErrNoLeader.
func (e *Election) GetLeader(ctx context.Context) (string, error) {
	resp, err := e.client.Get(ctx, e.prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("election: reading the leader under %s: %w", e.prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNoLeader
	}
	return string(resp.Kvs[0].Value), nil
}

// Resign ends this candidate's leadership and deletes its key, so that the next candidate in
// line leads at once (it watches that key). The leader context is cancelled and OnDefeat
// queued before the key is deleted: this process stops leading before the next one starts.
// Resign returns nil, doing nothing, when this candidate does not lead. When the key cannot
// be deleted (ctx ended, etcd unreachable), the session is abandoned so that etcd drops the
// key within the TTL, and the error is returned.
//
// Under Run, the candidate then campaigns again, behind the candidates already in line.
func (e *Election) Resign(ctx context.Context) error {
	if !e.IsLeader() {
		return nil
	}
	// Close ends a Resign that waits on etcd: it revokes the session, which deletes the key.
	ctx, cancel := etcdutil.Bound(ctx, e.stopCtx)
	defer cancel()
	if err := e.lockCampaign(ctx); err != nil {
		return err
	}
	defer e.unlockCampaign()
	e.mu.Lock()
	c := e.leadingLocked()
	if c == nil {
		e.mu.Unlock()
		return nil
	}
	e.endTermLocked(c, ErrResigned)
	e.mu.Unlock()
	e.log.V(1).Info("resigning", "key", c.key)
	return e.deleteKey(ctx, c)
}

// Close ends the candidacy: it stops Run and Campaign calls (they return ErrClosed) and
// observers, ends the leadership if it holds one (OnDefeat is called), deletes the key,
// revokes the session's lease and waits for every goroutine the Election started. It
// returns the error of the delete or revoke, if any. Later calls return the same.
func (e *Election) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.closeDone
		return e.closeErr
	}
	e.closed = true
	l := e.loop
	e.mu.Unlock()
	e.stop(ErrClosed)
	if l != nil {
		<-l.done
	}
	// Campaigns return promptly once stopCtx has ended; holding the lock from here on
	// keeps any candidacy from starting again.
	e.campaignLock <- struct{}{}

	e.mu.Lock()
	c := e.term
	if c != nil {
		e.endTermLocked(c, ErrClosed)
	}
	s := e.sess
	e.sess = nil
	e.mu.Unlock()

	var errs []error
	if c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), e.cleanupTimeout())
		errs = append(errs, e.deleteKey(ctx, c))
		cancel()
	}
	if s != nil {
		errs = append(errs, s.Close())
	}
	e.wg.Wait()
	e.closeErr = errors.Join(errs...)
	close(e.closeDone)
	e.log.V(1).Info("closed")
	return e.closeErr
}

func (e *Election) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

func (e *Election) lockCampaign(ctx context.Context) error {
	select {
	case e.campaignLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Election) unlockCampaign() { <-e.campaignLock }

// leadingLocked returns the term while it holds, and ends it when it does not any more.
func (e *Election) leadingLocked() *candidacy {
	c := e.term
	if c == nil {
		return nil
	}
	if c.ctx.Err() != nil {
		e.endTermLocked(c, context.Cause(c.ctx))
		return nil
	}
	if !c.sess.Valid() {
		cause := c.sess.Cause()
		if cause == nil {
			cause = fmt.Errorf("%w: no keep-alive answer for lease %x within its TTL", ErrSessionLost, c.sess.ID())
			// The keep-alive goroutine revokes the lease once it sees this.
			c.sess.Lose(cause)
		}
		e.endTermLocked(c, cause)
		return nil
	}
	return c
}

// endTermLocked ends c's leadership, if c leads: the leader context first, then the state
// and the callbacks.
func (e *Election) endTermLocked(c *candidacy, cause error) {
	if e.term != c || c == nil {
		return
	}
	c.cancel(cause)
	for _, cancel := range c.scopes {
		cancel(cause)
	}
	c.scopes = nil
	e.term = nil
	e.transitionLocked(false)
	e.log.Info("leadership ended", "key", c.key, "reason", context.Cause(c.ctx).Error())
}

// transitionLocked records a change of leadership: it wakes the waiters of changed and
// queues the callbacks for the notifier.
func (e *Election) transitionLocked(elected bool) {
	close(e.changed)
	e.changed = make(chan struct{})
	e.events = append(e.events, elected)
	if !e.notifying {
		e.notifying = true
		e.wg.Add(1)
		// The notifier belongs to the Election: it runs the queued callbacks in order and
		// ends when the queue is empty; the next transition starts another.
		go e.notify()
	}
}

func (e *Election) notify() {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		if len(e.events) == 0 {
			e.notifying = false
			e.mu.Unlock()
			return
		}
		elected := e.events[0]
		e.events = e.events[1:]
		fns := e.onDefeat
		if elected {
			fns = e.onElected
		}
		e.mu.Unlock()
		for _, fn := range fns {
			e.call(fn, elected)
		}
	}
}

// call runs a callback; a panic in it is logged, not spread.
func (e *Election) call(fn func(), elected bool) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error(fmt.Errorf("panic: %v", r), "callback panicked", "elected", elected)
		}
	}()
	fn()
}

// leaderScope returns a context derived from parent that is cancelled, with the reason,
// in the same step that ends the current leadership, under mu: once IsLeader says false,
// it has ended (a context derived from the leader context would end a moment later, from
// another goroutine). It returns nil when this candidate does not lead.
func (e *Election) leaderScope(parent context.Context) (context.Context, context.CancelFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.leadingLocked()
	if c == nil {
		return nil, nil
	}
	ctx, cancel := context.WithCancelCause(parent)
	c.scopes = append(c.scopes, cancel)
	return ctx, func() { cancel(nil) }
}

// awaitLeading blocks until this candidate leads and returns a leader scope of ctx (see
// leaderScope), or nil when ctx ends first.
func (e *Election) awaitLeading(ctx context.Context) (context.Context, context.CancelFunc) {
	for ctx.Err() == nil {
		e.mu.Lock()
		changed := e.changed
		e.mu.Unlock()
		if lctx, cancel := e.leaderScope(ctx); lctx != nil {
			return lctx, cancel
		}
		select {
		case <-changed:
		case <-ctx.Done():
		}
	}
	return nil, nil
}
