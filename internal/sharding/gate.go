package sharding

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
)

// Shard is the shard a sharded controller's reconcile runs for.
type Shard struct {
	// ID is the shard's number, in [0, Shards).
	ID int
	// Token is the create revision of owners/<ID> while this member owns it: the fence its
	// writes carry.
	Token int64
}

type shardCtxKey struct{}

// ShardFrom returns the shard of a reconcile's context, when a sharded controller runs it.
func ShardFrom(ctx context.Context) (Shard, bool) {
	s, ok := ctx.Value(shardCtxKey{}).(Shard)
	return s, ok
}

// shardGate admits the keys of the shards this member owns and does not drain, while its
// session certainly lives, in a context fenced by the shard's token that ends with the
// ownership.
type shardGate struct {
	sh  *Member
	key func(string) string
}

// Wants keeps the keys of shards owned elsewhere out of the queue.
func (g *shardGate) Wants(key string) bool {
	s, ok := g.sh.unitOf(g.key, key)
	if !ok {
		return false
	}
	g.sh.mu.Lock()
	defer g.sh.mu.Unlock()
	o := g.sh.held[s]
	return o != nil && !o.draining
}

// Admit implements gate.Gate.
func (g *shardGate) Admit(ctx context.Context, key string) (context.Context, func(), bool) {
	sh := g.sh
	s, ok := sh.unitOf(g.key, key)
	if !ok {
		return nil, nil, false
	}
	sh.mu.Lock()
	o, sess := sh.held[s], sh.sess
	if o == nil || o.draining || sess == nil || !sess.Valid() || o.ctx.Err() != nil {
		sh.mu.Unlock()
		return nil, nil, false
	}
	o.inflight++
	sh.admitted[s]++
	sh.mu.Unlock()
	f := fence.Fence{
		Cmps:   []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(sh.ownerKey(s)), "=", o.token)},
		Holder: fmt.Sprintf("shard %d of %s (token %d)", s, sh.id, o.token),
	}
	rctx, cancel := context.WithCancelCause(context.WithValue(fence.With(ctx, f), shardCtxKey{}, Shard{ID: s, Token: o.token}))
	stop := context.AfterFunc(o.ctx, func() { cancel(context.Cause(o.ctx)) })
	return rctx, func() {
		stop()
		cancel(nil)
		sh.mu.Lock()
		o.inflight--
		wake := o.inflight == 0 && o.draining
		sh.mu.Unlock()
		if wake {
			sh.notify()
		}
	}, true
}
