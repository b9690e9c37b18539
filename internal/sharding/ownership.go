package sharding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/reconcile"
)

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

// view returns what decide reads of o (nil for nil); the caller holds the member's mu.
func (o *owned) view() *ownership {
	if o == nil {
		return nil
	}
	return &ownership{token: o.token, draining: o.draining, drainBy: o.drainBy, inflight: o.inflight}
}

var (
	errShardReleased = errors.New("sharding: shard released to another member")
	errShardLost     = errors.New("sharding: shard ownership lost")
	errDrainTimeout  = errors.New("sharding: shard drain timed out")
)

// statusTimeout bounds the etcd read of ShardStatus.
const statusTimeout = time.Second

// retryDelay is how soon a claim or release that failed on an etcd error is tried again.
const retryDelay = 200 * time.Millisecond

// serve acts on every change of assignments and owners until the session ends or ctx does.
func (sh *Member) serve(ctx context.Context, sess *lease.Session) {
	if r, ok := sh.mode.(*rangeMode); ok {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // the reports of this session: end with serve
			defer close(done)
			r.reportLoop(rctx, sess)
		}()
		defer func() {
			cancel()
			<-done
		}()
	}
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
func (sh *Member) step(ctx context.Context, sess *lease.Session) time.Time {
	var wake time.Time
	later := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	sh.mode.begin()
	seen := sh.state.Revision()
	var claimed, toClaim []int
	var toRelease []release
	me := self{id: sh.id, lease: sess.ID()}
	for _, s := range sh.mode.units() {
		u := unit{seen: seen}
		if kv, ok := sh.state.Get(sh.assignKey(s)); ok {
			u.assignee = string(kv.Value)
		}
		if kv, ok := sh.state.Get(sh.ownerKey(s)); ok {
			u.owner = kv
		}
		sh.mu.Lock()
		o := sh.held[s]
		me.leaving, u.gone = sh.leaving, sh.gone[s]
		u.held = o.view()
		sh.mu.Unlock()
		now := time.Now()
		a := decide(u, me, now, sh.o.DrainTimeout)
		if a.drain {
			// Draining stops new reconciles of the shard: only now does the count in flight
			// say whether it is idle.
			sh.startDrain(s, o, u.assignee, a.drainBy)
			sh.mu.Lock()
			u.held = o.view()
			sh.mu.Unlock()
			a = decide(u, me, now, sh.o.DrainTimeout)
		}
		switch {
		case a.adopt:
			sh.activate(s, u.owner.CreateRevision, sess)
			claimed = append(claimed, s)
		case a.claim && sh.mode.claimable(s):
			toClaim = append(toClaim, s)
		case a.lose:
			sh.drop(s, o, fmt.Errorf("%w: owners/%d was deleted or taken over", errShardLost, s))
		}
		if a.release {
			toRelease = append(toRelease, release{shard: s, o: o, idle: a.idle})
		}
		if !a.wake.IsZero() {
			later(a.wake)
		}
	}
	if w := sh.mode.wakeAt(); !w.IsZero() {
		later(w)
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
func (sh *Member) claim(ctx context.Context, sess *lease.Session, shards []int) ([]int, error) {
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
		resp, err := sh.client.Txn(ctx).If(sh.mode.claimCmps()...).Then(ops...).Commit()
		if err != nil {
			return got, fmt.Errorf("sharding: claiming %d shards under %s: %w", n, sh.root+"owners/", err)
		}
		if !resp.Succeeded {
			// The slice map changed since the pass decided: the next pass decides again.
			sh.notify()
			return got, nil
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

func (sh *Member) activate(s int, token int64, sess *lease.Session) {
	ctx, cancel := context.WithCancelCause(sess.Context())
	o := &owned{token: token, ctx: ctx, cancel: cancel, since: time.Now()}
	sh.mu.Lock()
	sh.held[s] = o
	n := len(sh.held)
	sh.changedLocked()
	sh.mu.Unlock()
	sh.d.Owned.Set(float64(n))
	sh.log.V(1).Info("claimed shard", "shard", s, "token", token)
}

// resync queues the cached keys of the shards just claimed: level-triggered, whatever
// happened while another member owned them.
func (sh *Member) resync(shards []int) {
	set := make(map[int]bool, len(shards))
	for _, s := range shards {
		set[s] = true
	}
	sh.mu.Lock()
	targets := append([]sharded(nil), sh.targets...)
	sh.mu.Unlock()
	for _, t := range targets {
		t.c.ResyncWhere(func(req reconcile.Request) bool {
			u, ok := sh.unitOf(t.key, req.Key)
			return ok && set[u]
		})
	}
	sh.log.Info("claimed shards", "shards", shards)
}

func (sh *Member) startDrain(s int, o *owned, to string, by time.Time) {
	sh.mu.Lock()
	o.draining = true
	o.drainBy = by
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
func (sh *Member) release(ctx context.Context, rs []release) error {
	for len(rs) > 0 {
		n := min(len(rs), batchSize)
		ops := make([]clientv3.Op, n)
		for i, r := range rs[:n] {
			if !r.idle {
				sh.log.Info("drain timed out; cancelling the shard's reconciles in flight", "shard", r.shard, "timeout", sh.o.DrainTimeout)
				r.o.cancel(errDrainTimeout)
			}
			key := sh.ownerKey(r.shard)
			ops[i] = clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", r.o.token)},
				[]clientv3.Op{clientv3.OpDelete(key)}, nil)
		}
		resp, err := sh.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("sharding: releasing %d shards under %s: %w", n, sh.root+"owners/", err)
		}
		for i, r := range rs[:n] {
			if resp.Responses[i].GetResponseTxn().GetSucceeded() {
				sh.d.Handoffs.Inc()
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
func (sh *Member) drop(s int, o *owned, cause error) {
	o.cancel(cause)
	sh.mu.Lock()
	if sh.held[s] == o {
		delete(sh.held, s)
		sh.gone[s] = o.token
		sh.changedLocked()
	}
	n := len(sh.held)
	sh.mu.Unlock()
	sh.d.Owned.Set(float64(n))
	if errors.Is(cause, errShardLost) {
		sh.log.Info("shard lost", "shard", s, "cause", cause.Error())
	}
}

// dropAll forgets every shard: the session that held them is gone.
func (sh *Member) dropAll(cause error) {
	sh.mu.Lock()
	held := sh.held
	sh.held = map[int]*owned{}
	sh.changedLocked()
	sh.mu.Unlock()
	for _, o := range held {
		o.cancel(cause)
	}
	sh.d.Owned.Set(0)
}

func (sh *Member) changedLocked() {
	close(sh.changed)
	sh.changed = make(chan struct{})
}

// Leave marks the member leaving, so that the leader assigns its shards elsewhere, drains
// and releases every shard it holds, and waits for that until deadline.
func (sh *Member) Leave(deadline time.Time) {
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
