package election

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// Observe returns a channel that receives the leader's id each time the leader changes,
// and "" each time the election has no leader. The first value is the leader at the
// observer's first read of the candidates, which it makes as it starts. Values arrive in the order of etcd's revisions; the observer waits for a slow
// reader rather than drop a change.
//
// The observer keeps the candidates' keys in memory from one consistent read and follows
// them with a watch from the next revision. A broken watch (a lost connection, a member
// without leader) resumes where it stopped, so no change is missed; after a compaction
// took the revisions it needs, it reads the keys again and reports the leader of that
// moment if it changed. The channel is closed when ctx ends or the Election is closed.
func (e *Election) Observe(ctx context.Context) <-chan string {
	ch := make(chan string)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		close(ch)
		return ch
	}
	e.wg.Add(1)
	e.mu.Unlock()
	ctx, cancel := etcdutil.Bound(ctx, e.stopCtx)
	// The observer belongs to the caller's ctx and to the Election: it ends when either
	// ends, and closes ch.
	go func() {
		defer e.wg.Done()
		defer cancel()
		defer close(ch)
		e.observe(ctx, ch)
	}()
	return ch
}

// candidate is a key of the election as an observer sees it.
type candidate struct {
	rev int64 // create revision
	id  string
}

// observer follows the candidates' keys and reports the leader when it changes.
type observer struct {
	ch    chan<- string
	cands map[string]candidate
	sent  bool
	last  string
}

// report sends the leader if it changed; it returns false when ctx ended first.
func (o *observer) report(ctx context.Context) bool {
	var lead candidate
	for _, c := range o.cands {
		if lead.rev == 0 || c.rev < lead.rev {
			lead = c
		}
	}
	if o.sent && lead.id == o.last {
		return true
	}
	select {
	case o.ch <- lead.id:
		o.sent, o.last = true, lead.id
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Election) observe(ctx context.Context, ch chan<- string) {
	o := &observer{ch: ch}
	bo := &etcdutil.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for ctx.Err() == nil {
		resp, err := e.client.Get(ctx, e.prefix, clientv3.WithPrefix())
		if err != nil {
			if ctx.Err() == nil {
				e.log.V(1).Info("observe: listing the candidates failed, retrying", "error", err.Error())
			}
			_ = etcdutil.Sleep(ctx, bo.Next())
			continue
		}
		o.cands = make(map[string]candidate, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			o.cands[string(kv.Key)] = candidate{rev: kv.CreateRevision, id: string(kv.Value)}
		}
		if !o.report(ctx) {
			return
		}
		if !e.follow(ctx, o, resp.Header.Revision+1, bo) {
			return
		}
		e.log.V(1).Info("observe: history compacted, listing the candidates again")
	}
}

// follow applies the watch from revision from to o until ctx ends (false) or the revisions
// it needs are compacted (true: the caller lists again).
func (e *Election) follow(ctx context.Context, o *observer, from int64, bo *etcdutil.Backoff) bool {
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := e.client.Watch(wctx, e.prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
		for wr := range wch {
			if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
				cancel()
				return true
			}
			if wr.Err() != nil {
				e.log.V(1).Info("observe: watch broke, resuming", "revision", from, "error", wr.Err().Error())
				break
			}
			bo.Reset()
			// Events of one revision (one transaction) are applied together, then reported.
			for i, ev := range wr.Events {
				key := string(ev.Kv.Key)
				if ev.Type == mvccpb.DELETE {
					delete(o.cands, key)
				} else {
					o.cands[key] = candidate{rev: ev.Kv.CreateRevision, id: string(ev.Kv.Value)}
				}
				from = ev.Kv.ModRevision + 1
				if i+1 < len(wr.Events) && wr.Events[i+1].Kv.ModRevision == ev.Kv.ModRevision {
					continue
				}
				if !o.report(wctx) {
					cancel()
					return false
				}
			}
		}
		cancel()
		if !etcdutil.Sleep(ctx, bo.Next()) {
			return false
		}
	}
}
