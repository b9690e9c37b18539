package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/gate"
	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/internal/shard"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// Defaults and limits of ShardingOptions.
const (
	DefaultShards       = 64
	DefaultDrainTimeout = 10 * time.Second
	// MaxShards is the largest shard count a manager accepts.
	MaxShards = 4096
)

// maxTxnOps is how many operations one assignment transaction carries, below etcd's
// default --max-txn-ops of 128.
const maxTxnOps = 100

// ShardingOptions spread the keys of a manager's controllers over its replicas. Each key
// belongs to shard fnv1a64(ShardKey(key)) % Shards; the leader assigns shards to members,
// each member reconciles the keys of the shards it owns, and every write made through
// store in a reconcile carries the shard's fence.
type ShardingOptions struct {
	// Shards is the number of shards. Default (0) DefaultShards; at most MaxShards. It must
	// stay the same across runs of a manager: New refuses a count that differs from the
	// one stored under the manager's root.
	Shards int
	// ShardKey maps a request's key to the string that is hashed, for example its first
	// path segment, to keep related keys in one shard. Default: the key itself. A
	// controller may set its own (Builder.ShardKey).
	ShardKey func(key string) string
	// DrainTimeout bounds how long a member waits for the reconciles in flight of a shard
	// it hands over before it cancels them and releases the shard (their writes fail,
	// fenced, from then on). Default 10 s.
	DrainTimeout time.Duration
}

func (o *ShardingOptions) setDefaults() error {
	if o.Shards < 0 || o.Shards > MaxShards {
		return fmt.Errorf("manager: Sharding.Shards must be between 1 and %d (0 for the default %d), got %d", MaxShards, DefaultShards, o.Shards)
	}
	if o.Shards == 0 {
		o.Shards = DefaultShards
	}
	if o.DrainTimeout < 0 {
		return fmt.Errorf("manager: Sharding.DrainTimeout must not be negative, got %s", o.DrainTimeout)
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.ShardKey == nil {
		o.ShardKey = func(key string) string { return key }
	}
	return nil
}

// ErrDuplicateID is returned by Start when another running replica of the manager has
// registered the same ID (sharded) or campaigns under it (leader-only).
var ErrDuplicateID = errors.New("manager: replica ID in use")

// Member states, the State of a MemberInfo.
const (
	MemberActive  = "active"
	MemberLeaving = "leaving"
)

// MemberInfo is what a member registers under members/<id>.
type MemberInfo struct {
	ID      string    `json:"id"`
	Address string    `json:"address,omitempty"`
	Started time.Time `json:"started"`
	State   string    `json:"state"`
}

// owned is a shard this member holds.
type owned struct {
	token    int64
	ctx      context.Context // ends when the shard is released or lost
	cancel   context.CancelCauseFunc
	since    time.Time
	draining bool
	drainBy  time.Time
	inflight int
}

var (
	errShardReleased = errors.New("manager: shard released to another member")
	errShardLost     = errors.New("manager: shard ownership lost")
	errDrainTimeout  = errors.New("manager: shard drain timed out")
)

// sharded is a controller whose keys are sharded, with its shard key.
type sharded struct {
	c   *reconcile.Controller
	key func(string) string
}

// sharder is a member's part in the sharding protocol: its registration, its claims,
// drains and releases, its gate, and, while it leads, the assignment.
type sharder struct {
	m      *Manager
	opts   ShardingOptions
	id     string
	root   string
	log    logr.Logger
	client *clientv3.Client

	// state caches the manager's keys (members/, assignments/, owners/ under the root).
	state            *source.Source
	poke, assignPoke chan struct{}
	synced           chan struct{} // closed once state has synced

	mu       sync.Mutex
	sess     *lease.Session
	info     MemberInfo
	held     map[int]*owned
	gone     map[int]int64 // token of the last ownership of each shard that ended here
	leaving  bool
	changed  chan struct{} // closed and replaced when held changes
	targets  []sharded
	shardsOf map[string]func(string) string
	// problems are the permanent errors the member's writes last met, by what they write
	// ("joining", "claiming", "releasing", "assigning"): an entry goes once that write
	// succeeds again.
	problems map[string]error
}

func newSharder(m *Manager, opts ShardingOptions) (*sharder, error) {
	sh := &sharder{
		m: m, opts: opts, id: m.opts.ID, root: m.opts.RootPrefix, client: m.client,
		log:        m.log.WithName("sharding"),
		poke:       make(chan struct{}, 1),
		assignPoke: make(chan struct{}, 1),
		held:       map[int]*owned{},
		gone:       map[int]int64{},
		changed:    make(chan struct{}),
		synced:     make(chan struct{}),
	}
	// One watch over the whole root: a revision that changes members and owners at once
	// (etcd expiring a member's lease) is seen at once.
	ours := func(e source.Event) bool {
		rest := strings.TrimPrefix(e.Key, sh.root)
		return strings.HasPrefix(rest, "members/") || strings.HasPrefix(rest, "assignments/") || strings.HasPrefix(rest, "owners/")
	}
	var err error
	if sh.state, err = source.New(m.client, sh.root, source.Options{Logger: sh.log.WithName("state"), Predicates: []source.Predicate{ours}}); err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	return sh, nil
}

func (sh *sharder) memberKey(id string) string { return sh.root + "members/" + id }
func (sh *sharder) assignKey(s int) string     { return sh.root + "assignments/" + strconv.Itoa(s) }
func (sh *sharder) ownerKey(s int) string      { return sh.root + "owners/" + strconv.Itoa(s) }

// checkShardCount stores the shard count under the root on the first run and refuses a
// different one later: the count decides which shard every key is in.
func (sh *sharder) checkShardCount(ctx context.Context) error {
	key := sh.root + "shards"
	want := strconv.Itoa(sh.opts.Shards)
	resp, err := sh.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, want)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("manager: reading or storing the shard count at %s: %w", key, err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || string(kvs[0].Value) == want {
		return nil
	}
	return fmt.Errorf("manager: Sharding.Shards is %d, but manager %q has run with %s shards (stored at %s); "+
		"a different count would move every key to another shard: stop every replica and delete that key to change it",
		sh.opts.Shards, sh.m.opts.Name, kvs[0].Value, key)
}

// setAddress sets the address the member record gives.
func (sh *sharder) setAddress(addr string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.info.Address = addr
}

// register adds a sharded controller; the gate it returns admits the keys of the shards
// this member owns.
func (sh *sharder) register(c *reconcile.Controller, key func(string) string) gate.Gate {
	if key == nil {
		key = sh.opts.ShardKey
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.targets = append(sh.targets, sharded{c: c, key: key})
	return &shardGate{sh: sh, key: key}
}

func (sh *sharder) shardOf(key func(string) string, k string) int {
	return shard.Of(key(k), sh.opts.Shards)
}

// notify wakes the member loop and the assigner.
func (sh *sharder) notify() {
	for _, ch := range []chan struct{}{sh.poke, sh.assignPoke} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// run is the member: it keeps a session, registers on it, and claims, drains and releases
// shards until ctx ends. A lost session drops every shard at once (their reconciles are
// cancelled) and a new session registers again. It returns ErrDuplicateID, wrapped, when
// another running replica holds this member's ID.
func (sh *sharder) run(ctx context.Context) error {
	sctx, stopState := context.WithCancel(ctx)
	watching := make(chan struct{})
	defer func() {
		stopState()
		<-watching
	}()
	go func() { // the state's watch: ends with sctx, at the end of run
		defer close(watching)
		_ = sh.state.Run(sctx, func(source.Event) { sh.notify() })
	}()
	if err := sh.state.WaitForSync(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("manager: sharding: %w", err)
	}
	close(sh.synced)
	bo := etcdutil.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for ctx.Err() == nil {
		sess, err := sh.join(ctx)
		if errors.Is(err, ErrDuplicateID) {
			return err
		}
		if err != nil {
			d := bo.Next()
			// A refusal is retried slowly, so that a role an operator mends is picked up;
			// /readyz and etcdkit_permanent_error report it meanwhile.
			if ctx.Err() == nil && sh.report("joining", err) {
				d = sh.slowRetry()
			} else if ctx.Err() == nil {
				sh.log.Error(err, "joining failed, retrying", "after", d)
			}
			etcdutil.Sleep(ctx, d)
			continue
		}
		sh.report("joining", nil)
		bo.Reset()
		sh.serve(ctx, sess)
		cause := context.Cause(sess.Context())
		if ctx.Err() != nil {
			cause = errors.New("manager: stopping")
		}
		sh.dropAll(cause)
		sh.mu.Lock()
		sh.sess = nil
		sh.mu.Unlock()
		if err := sess.Close(); err != nil {
			sh.log.Error(err, "ending the session")
		}
		if ctx.Err() == nil {
			sh.log.Info("session lost; every shard dropped, joining again", "cause", cause.Error())
		}
	}
	return nil
}

// report records the outcome of one kind of write: a permanent error is kept until the
// same kind succeeds (err nil) and logged at the default level; it reports whether err was
// permanent, for the caller to retry slowly.
func (sh *sharder) report(what string, err error) bool {
	permanent := err != nil && etcderr.IsPermanent(err)
	sh.mu.Lock()
	if permanent {
		if sh.problems == nil {
			sh.problems = map[string]error{}
		}
		sh.problems[what] = err
	} else if err == nil {
		delete(sh.problems, what)
	}
	sh.mu.Unlock()
	if permanent {
		sh.log.Error(err, what+" refused by etcd, retrying", "after", sh.slowRetry())
	}
	return permanent
}

// slowRetry is the pause before a write that etcd refused for good is tried again: long
// enough not to flood the log, short enough to pick up a mended role soon.
func (sh *sharder) slowRetry() time.Duration {
	return sh.m.opts.LeaseTTL
}

// err is the permanent error that keeps this member from sharding: the state's watch
// refused, or a write refused (the first by kind).
func (sh *sharder) err() error {
	if err := sh.state.Err(); err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, what := range []string{"joining", "claiming", "releasing", "assigning"} {
		if err := sh.problems[what]; err != nil {
			return err
		}
	}
	return nil
}

// join grants a session and registers the member on it. When the member key exists on
// another lease, it waits up to that lease's TTL and a second for it to vanish (a crashed
// predecessor with this ID); a key still kept alive after that belongs to a running
// replica: ErrDuplicateID.
func (sh *sharder) join(ctx context.Context) (*lease.Session, error) {
	// LeaseTTL is a whole number of seconds: Options.setDefaults checked it.
	sess, err := lease.Grant(ctx, sh.client, int(sh.m.opts.LeaseTTL/time.Second), sh.log)
	if err != nil {
		return nil, err
	}
	// The keep-alive ends when the session does: every session granted here is closed,
	// by fail below or by run once it is lost or run ends, and Close waits for it.
	go sess.KeepAlive()
	fail := func(err error) (*lease.Session, error) {
		_ = sess.Close()
		return nil, err
	}
	key := sh.memberKey(sh.id)
	var giveUp time.Time
	for {
		sh.mu.Lock()
		info := sh.info
		info.ID = sh.id
		if info.Started.IsZero() {
			info.Started = time.Now().UTC()
		}
		info.State = MemberActive
		if sh.leaving {
			info.State = MemberLeaving
		}
		sh.info = info
		sh.mu.Unlock()
		val, _ := json.Marshal(info)
		resp, err := sh.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(sess.ID()))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return fail(fmt.Errorf("manager: registering member %s: %w", key, err))
		}
		if resp.Succeeded {
			// Act only on a cache that holds at least what etcd held at the registration:
			// a member back from a pause does not claim on what it saw before.
			wctx, cancel := etcdutil.Bound(ctx, sess.Context())
			err := sh.state.WaitForRevision(wctx, resp.Header.Revision)
			cancel()
			if err != nil {
				return fail(fmt.Errorf("manager: waiting for the sharding state to catch up: %w", err))
			}
			sh.mu.Lock()
			sh.sess = sess
			sh.mu.Unlock()
			sh.log.Info("joined", "lease", fmt.Sprintf("%x", sess.ID()), "ttl", sess.TTL())
			return sess, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted in between
		}
		other := clientv3.LeaseID(kvs[0].Lease)
		now := time.Now()
		if giveUp.IsZero() {
			wait := sh.m.predecessorWait(ctx, other)
			giveUp = now.Add(wait)
			sh.log.Info("member ID registered on another lease; waiting for it to expire", "lease", fmt.Sprintf("%x", other), "upTo", wait)
		}
		if now.After(giveUp) {
			return fail(fmt.Errorf("%w: %q is registered at %s by a running replica (lease %x is kept alive); give every replica its own ID",
				ErrDuplicateID, sh.id, key, int64(other)))
		}
		t := time.NewTimer(time.Until(giveUp))
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(ctx.Err())
		case <-sh.poke:
		case <-t.C:
		}
		t.Stop()
	}
}

// statusTimeout bounds the etcd read of ShardStatus.
const statusTimeout = time.Second

// retryDelay is how soon a claim or release that failed on an etcd error is tried again.
const retryDelay = 200 * time.Millisecond

// serve acts on every change of assignments and owners until the session ends or ctx does.
func (sh *sharder) serve(ctx context.Context, sess *lease.Session) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wake := sh.step(ctx, sess)
		timer.Stop()
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-sess.Context().Done():
			return
		case <-sh.poke:
		case <-timer.C:
		}
	}
}

// step takes one pass over the shards: claims what is assigned here and free, drains what
// is assigned elsewhere, releases what has drained. It returns when it needs to run again
// without a change (a drain deadline, a retry), or zero. Claims and releases go to etcd in
// batches (one transaction of independent nested transactions), so a member that takes
// or hands over many shards at once pays one round trip, not one per shard.
func (sh *sharder) step(ctx context.Context, sess *lease.Session) time.Time {
	var wake time.Time
	later := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	seen := sh.state.Revision()
	var claimed, toClaim []int
	var toRelease []release
	for s := 0; s < sh.opts.Shards; s++ {
		assignee := ""
		if kv, ok := sh.state.Get(sh.assignKey(s)); ok {
			assignee = string(kv.Value)
		}
		okv, held := sh.state.Get(sh.ownerKey(s))
		sh.mu.Lock()
		o, leaving, gone := sh.held[s], sh.leaving, sh.gone[s]
		sh.mu.Unlock()
		// mine: a key of this session that this member does not hold yet (not one it has
		// released or lost, which the cache may still show for a moment).
		mine := held && string(okv.Value) == sh.id && clientv3.LeaseID(okv.Lease) == sess.ID() && okv.CreateRevision != gone
		switch {
		case o == nil && mine:
			// A claim whose answer was lost, or a key of this session seen first now.
			sh.activate(s, okv.CreateRevision, sess)
			claimed = append(claimed, s)
		case o == nil:
			if !leaving && assignee == sh.id && !held {
				toClaim = append(toClaim, s)
			} // else: not ours, or wait for the current owner to release it
		case seen >= o.token && (!held || okv.CreateRevision != o.token):
			sh.drop(s, o, fmt.Errorf("%w: owners/%d was deleted or taken over", errShardLost, s))
		default:
			if !o.draining && (leaving || assignee != sh.id) {
				sh.startDrain(s, o, assignee)
			}
			if o.draining {
				sh.mu.Lock()
				idle, due := o.inflight == 0, !time.Now().Before(o.drainBy)
				sh.mu.Unlock()
				if idle || due {
					toRelease = append(toRelease, release{shard: s, o: o, idle: idle})
				} else {
					later(o.drainBy)
				}
			}
		}
	}
	if len(toClaim) > 0 && sess.Valid() {
		got, err := sh.claim(ctx, sess, toClaim)
		claimed = append(claimed, got...)
		switch {
		case err == nil:
			sh.report("claiming", nil)
		case ctx.Err() != nil:
		case sh.report("claiming", err):
			later(time.Now().Add(sh.slowRetry()))
		default:
			sh.log.V(1).Info("claim failed, retrying", "shards", toClaim, "error", err.Error())
			later(time.Now().Add(retryDelay))
		}
	}
	if len(toRelease) > 0 {
		err := sh.release(ctx, toRelease)
		switch {
		case err == nil:
			sh.report("releasing", nil)
		case ctx.Err() != nil:
		case sh.report("releasing", err):
			later(time.Now().Add(sh.slowRetry()))
		default:
			sh.log.V(1).Info("release failed, retrying", "error", err.Error())
			later(time.Now().Add(retryDelay))
		}
	}
	if len(claimed) > 0 {
		sh.resync(claimed)
	}
	return wake
}

// batchSize is how many shards one claim or release transaction carries.
const batchSize = 50

// claim takes the shards that no one owns: If(CreateRevision(owners/s)==0) Put(owners/s,
// me, lease), one nested transaction per shard. The create revision of owners/s is the
// shard's token. It returns the shards it took.
func (sh *sharder) claim(ctx context.Context, sess *lease.Session, shards []int) ([]int, error) {
	var got []int
	for len(shards) > 0 {
		n := min(len(shards), batchSize)
		ops := make([]clientv3.Op, n)
		for i, s := range shards[:n] {
			key := sh.ownerKey(s)
			ops[i] = clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
				[]clientv3.Op{clientv3.OpPut(key, sh.id, clientv3.WithLease(sess.ID()))}, nil)
		}
		resp, err := sh.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return got, fmt.Errorf("manager: claiming %d shards under %s: %w", n, sh.root+"owners/", err)
		}
		for i, s := range shards[:n] {
			if resp.Responses[i].GetResponseTxn().GetSucceeded() {
				sh.activate(s, resp.Header.Revision, sess)
				got = append(got, s)
			}
		}
		shards = shards[n:]
	}
	return got, nil
}

func (sh *sharder) activate(s int, token int64, sess *lease.Session) {
	ctx, cancel := context.WithCancelCause(sess.Context())
	o := &owned{token: token, ctx: ctx, cancel: cancel, since: time.Now()}
	sh.mu.Lock()
	sh.held[s] = o
	n := len(sh.held)
	sh.changedLocked()
	sh.mu.Unlock()
	sh.m.metrics.ShardsOwned.Set(float64(n))
	sh.log.V(1).Info("claimed shard", "shard", s, "token", token)
}

// resync queues the cached keys of the shards just claimed: level-triggered, whatever
// happened while another member owned them.
func (sh *sharder) resync(shards []int) {
	set := make(map[int]bool, len(shards))
	for _, s := range shards {
		set[s] = true
	}
	sh.mu.Lock()
	targets := append([]sharded(nil), sh.targets...)
	sh.mu.Unlock()
	for _, t := range targets {
		t.c.ResyncWhere(func(req reconcile.Request) bool { return set[sh.shardOf(t.key, req.Key)] })
	}
	sh.log.Info("claimed shards", "shards", shards)
}

func (sh *sharder) startDrain(s int, o *owned, to string) {
	sh.mu.Lock()
	o.draining = true
	o.drainBy = time.Now().Add(sh.opts.DrainTimeout)
	inflight := o.inflight
	sh.mu.Unlock()
	sh.log.V(1).Info("draining shard", "shard", s, "to", to, "inFlight", inflight)
}

// release is a drained shard to hand back.
type release struct {
	shard int
	o     *owned
	idle  bool // false: its drain timed out
}

// release deletes owners/s, guarded by the token, for shards that have drained (or whose
// drain timed out: their reconciles are cancelled first, and their writes are fenced from
// then on), one nested transaction per shard.
func (sh *sharder) release(ctx context.Context, rs []release) error {
	for len(rs) > 0 {
		n := min(len(rs), batchSize)
		ops := make([]clientv3.Op, n)
		for i, r := range rs[:n] {
			if !r.idle {
				sh.log.Info("drain timed out; cancelling the shard's reconciles in flight", "shard", r.shard, "timeout", sh.opts.DrainTimeout)
				r.o.cancel(errDrainTimeout)
			}
			key := sh.ownerKey(r.shard)
			ops[i] = clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", r.o.token)},
				[]clientv3.Op{clientv3.OpDelete(key)}, nil)
		}
		resp, err := sh.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("manager: releasing %d shards under %s: %w", n, sh.root+"owners/", err)
		}
		for i, r := range rs[:n] {
			if resp.Responses[i].GetResponseTxn().GetSucceeded() {
				sh.m.metrics.ShardHandoffs.Inc()
				sh.drop(r.shard, r.o, errShardReleased)
				sh.log.V(1).Info("released shard", "shard", r.shard, "token", r.o.token)
			} else {
				sh.drop(r.shard, r.o, fmt.Errorf("%w: owners/%d no longer had token %d", errShardLost, r.shard, r.o.token))
			}
		}
		rs = rs[n:]
	}
	return nil
}

// drop forgets a shard and ends its reconciles' contexts.
func (sh *sharder) drop(s int, o *owned, cause error) {
	o.cancel(cause)
	sh.mu.Lock()
	if sh.held[s] == o {
		delete(sh.held, s)
		sh.gone[s] = o.token
		sh.changedLocked()
	}
	n := len(sh.held)
	sh.mu.Unlock()
	sh.m.metrics.ShardsOwned.Set(float64(n))
	if errors.Is(cause, errShardLost) {
		sh.log.Info("shard lost", "shard", s, "cause", cause.Error())
	}
}

// dropAll forgets every shard: the session that held them is gone.
func (sh *sharder) dropAll(cause error) {
	sh.mu.Lock()
	held := sh.held
	sh.held = map[int]*owned{}
	sh.changedLocked()
	sh.mu.Unlock()
	for _, o := range held {
		o.cancel(cause)
	}
	sh.m.metrics.ShardsOwned.Set(0)
}

func (sh *sharder) changedLocked() {
	close(sh.changed)
	sh.changed = make(chan struct{})
}

// leave marks the member leaving, so that the leader assigns its shards elsewhere, drains
// and releases every shard it holds, and waits for that until deadline.
func (sh *sharder) leave(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	sh.mu.Lock()
	sh.leaving = true
	sess, info := sh.sess, sh.info
	sh.mu.Unlock()
	if sess != nil && sess.Valid() {
		info.State = MemberLeaving
		val, _ := json.Marshal(info)
		key := sh.memberKey(sh.id)
		_, err := sh.client.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", sess.ID())).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(sess.ID()))).
			Commit()
		if err != nil {
			sh.log.Error(err, "marking the member leaving")
		}
	}
	sh.notify()
	for {
		sh.mu.Lock()
		n, changed := len(sh.held), sh.changed
		sh.mu.Unlock()
		if n == 0 {
			sh.log.Info("left: every shard released")
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			sh.log.Info("leaving: shards still held at the shutdown deadline", "held", n)
			return
		}
	}
}
