package election

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/lease"
)

// candidacy is this candidate's key under the prefix, on one session. Campaign creates it;
// once it is the oldest key it is the term of office.
//
// Its ctx ends when the candidacy does: the key is deleted (by Resign, by etcd when the
// lease goes, by anyone), the session is lost, Campaign gives up, or the election is
// closed. While the candidacy leads, ctx is the leader context.
type candidacy struct {
	sess   *lease.Session
	key    string
	rev    int64 // the key's create revision: the fencing token
	ctx    context.Context
	cancel context.CancelCauseFunc
	// unfollow stops ending ctx with the session; called when the candidacy has ended.
	unfollow func() bool
	// scopes are the contexts of leader-only work (see Election.leaderScope), cancelled
	// with ctx when the term ends. Guarded by Election.mu.
	scopes []context.CancelCauseFunc
}

// deleted is the cause of a candidacy whose key went.
func (c *candidacy) deleted() error {
	return fmt.Errorf("%w: key %s was deleted", ErrSessionLost, c.key)
}

// nominate creates this candidate's key on session s, named after the lease as
// concurrency.Election names it, and starts watching it. The caller holds the campaign lock.
func (e *Election) nominate(ctx context.Context, s *lease.Session) (*candidacy, error) {
	key := fmt.Sprintf("%s%x", e.prefix, s.ID())
	resp, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, e.id, clientv3.WithLease(s.ID()))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			err = fmt.Errorf("%w: lease %x is gone", ErrSessionLost, s.ID())
			s.Lose(err)
			return nil, err
		}
		return nil, fmt.Errorf("election: creating candidate key %s: %w", key, err)
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		// A key of this session is left from an earlier candidacy whose removal failed
		// (which abandons the session, so this is rare): it keeps its place in line.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, fmt.Errorf("election: key %s vanished while it was created", key)
		}
		rev = kvs[0].CreateRevision
	}
	cctx, cancel := context.WithCancelCause(context.Background())
	c := &candidacy{sess: s, key: key, rev: rev, ctx: cctx, cancel: cancel}
	c.unfollow = context.AfterFunc(s.Context(), func() { cancel(s.Cause()) })
	e.mu.Lock()
	e.wg.Add(1)
	e.mu.Unlock()
	// The key watcher belongs to the candidacy: it ends when c.ctx ends, and then ends the
	// term if the candidacy led.
	go e.watchOwnKey(c, resp.Header.Revision+1)
	return c, nil
}

// watchOwnKey ends the candidacy when its key is deleted. A broken watch (compaction, a
// member without leader, a lost connection) is resumed after checking that the key still
// holds.
func (e *Election) watchOwnKey(c *candidacy, from int64) {
	defer e.wg.Done()
	defer e.candidacyEnded(c)
	bo := &etcdutil.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for c.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(c.ctx))
		for wr := range etcdutil.Watch(wctx, e.client, c.key, clientv3.WithRev(from)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != c.rev {
					c.cancel(c.deleted())
					break
				}
				from = ev.Kv.ModRevision + 1
			}
		}
		cancel()
		if !etcdutil.Sleep(c.ctx, bo.Next()) {
			return
		}
		resp, err := e.client.Get(c.ctx, c.key)
		if err != nil {
			continue
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != c.rev {
			c.cancel(c.deleted())
			return
		}
		from = resp.Header.Revision + 1
	}
}

// candidacyEnded ends the term when the candidacy that ended was leading.
func (e *Election) candidacyEnded(c *candidacy) {
	c.unfollow()
	e.mu.Lock()
	e.endTermLocked(c, context.Cause(c.ctx))
	e.mu.Unlock()
}

// waitTurn blocks until c's key is the oldest under the prefix. Each look is one
// transaction that checks the candidate's own key and looks for an older one, so a
// candidacy whose key has gone never wins (the trap of etcd issue #19597). Between looks it
// waits for the deletion of the next older key only, so a change of leader wakes one
// candidate, not all.
func (e *Election) waitTurn(ctx context.Context, c *candidacy) error {
	ctx, cancel := etcdutil.Bound(ctx, c.ctx)
	defer cancel()
	bo := &etcdutil.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		resp, err := e.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev)).
			Then(clientv3.OpGet(e.prefix, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(c.rev-1))...)).
			Commit()
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil && etcderr.IsTransient(err):
			e.log.V(1).Info("campaign: etcd did not answer, retrying", "error", err.Error())
			if !etcdutil.Sleep(ctx, bo.Next()) {
				return context.Cause(ctx)
			}
			continue
		case err != nil:
			return fmt.Errorf("election: campaign: %w", err)
		case !resp.Succeeded:
			err := c.deleted()
			c.cancel(err)
			return err
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil
		}
		ahead := string(kvs[0].Key)
		e.log.V(1).Info("campaign: waiting for the candidate ahead", "key", ahead)
		deleted, err := e.waitDelete(ctx, ahead, resp.Header.Revision+1)
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case deleted:
			// Only a deletion seen resets the backoff: a watch that breaks as soon as it
			// is opened (a refused or expired token) must not turn this loop into a spin.
			bo.Reset()
		default:
			if etcderr.IsPermanent(err) {
				return fmt.Errorf("election: campaign: watching %s: %w", ahead, err)
			}
			e.log.V(1).Info("campaign: watch broke, looking again", "key", ahead, "error", fmt.Sprint(err))
			if !etcdutil.Sleep(ctx, bo.Next()) {
				return context.Cause(ctx)
			}
		}
	}
}

// waitDelete returns deleted when key is deleted after revision from, and the watch's error
// when the watch breaks first (the caller looks again).
func (e *Election) waitDelete(ctx context.Context, key string, from int64) (deleted bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range etcdutil.Watch(wctx, e.client, key, clientv3.WithRev(from), clientv3.WithFilterPut()) {
		if err := wr.Err(); err != nil {
			return false, err
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				return true, nil
			}
		}
	}
	return false, ctx.Err()
}

// deleteKey deletes c's key if it is still c's, retrying while etcd is unavailable and ctx
// lives (the guarded delete can be repeated safely). When that fails, the session is
// abandoned: its lease is revoked or runs out, and etcd deletes the key then, so a key
// never outlives a candidacy by more than a TTL.
func (e *Election) deleteKey(ctx context.Context, c *candidacy) error {
	bo := &etcdutil.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	var err error
	for {
		_, err = e.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev)).
			Then(clientv3.OpDelete(c.key)).
			Commit()
		if err == nil || ctx.Err() != nil || !etcderr.IsTransient(err) {
			break
		}
		e.log.V(1).Info("deleting the key: etcd did not answer, retrying", "key", c.key, "error", err.Error())
		if !etcdutil.Sleep(ctx, bo.Next()) {
			break
		}
	}
	if err != nil {
		err = fmt.Errorf("election: deleting key %s: %w", c.key, err)
		c.sess.Lose(fmt.Errorf("%w: %w", ErrSessionLost, err))
		e.log.Error(err, "abandoning the session, so that etcd drops the key within its TTL")
	}
	return err
}
