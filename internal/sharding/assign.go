package sharding

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/shard"
)

// Assign is the leader's part: it keeps the assignment balanced over the active members,
// writing only the shards that change, in transactions guarded by the leadership (the
// fence in ctx). It runs while this replica leads.
func (sh *Member) Assign(ctx context.Context) error {
	fc, _ := fence.From(ctx)
	if sh.state.WaitForSync(ctx) != nil {
		return nil
	}
	bo := etcdutil.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	var written int64 // revision of the last write; the cache is stale until it has seen it
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		if sh.state.Revision() >= written {
			rev, err := sh.mode.writeAssignment(ctx, fc)
			switch {
			case err != nil && ctx.Err() != nil:
				return nil
			case sh.report("assigning", err):
				timer.Reset(sh.slowRetry())
			case err != nil:
				sh.log.Error(err, "writing the assignment, retrying")
				timer.Reset(bo.Next())
			default:
				bo.Reset()
				written = max(written, rev)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sh.assignPoke:
		case <-timer.C:
		}
	}
}

// activeMembers returns the IDs of the registered members that are not leaving.
func (sh *Member) activeMembers() []string {
	var out []string
	for _, kv := range sh.state.List(sh.root + "members/") {
		var info MemberInfo
		if err := json.Unmarshal(kv.Value, &info); err != nil {
			sh.log.Error(err, "undecodable member record, ignored", "key", string(kv.Key), "revision", kv.ModRevision)
			continue
		}
		if info.State != MemberLeaving {
			out = append(out, strings.TrimPrefix(string(kv.Key), sh.root+"members/"))
		}
	}
	return out
}

// currentAssignment reads the stored assignment from the cache.
func (sh *Member) currentAssignment() map[int]string {
	cur := map[int]string{}
	prefix := sh.root + "assignments/"
	for _, kv := range sh.state.List(sh.root + "assignments/") {
		s, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), prefix))
		if err != nil || s < 0 || (!sh.o.Ranges && s >= sh.o.Shards) {
			continue
		}
		cur[s] = string(kv.Value)
	}
	return cur
}

// writeAssignment computes the target assignment of the hash mode and writes what differs
// from the stored one. It returns the revision of its last write (0 when nothing changed).
func (h hashMode) writeAssignment(ctx context.Context, fc fence.Fence) (int64, error) {
	sh := h.sh
	members := sh.activeMembers()
	cur := sh.currentAssignment()
	target := shard.Assign(sh.o.Shards, members, cur)
	var ops []clientv3.Op
	for s, m := range target {
		switch {
		case m == cur[s]:
		case m == "":
			ops = append(ops, clientv3.OpDelete(sh.assignKey(s)))
		default:
			ops = append(ops, clientv3.OpPut(sh.assignKey(s), m))
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	var rev int64
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		resp, err := sh.client.Txn(ctx).If(fc.Cmps...).Then(ops[:n]...).Commit()
		if err != nil {
			return rev, fmt.Errorf("sharding: writing %d assignments under %s: %w", n, sh.root+"assignments/", err)
		}
		if !resp.Succeeded {
			return rev, fmt.Errorf("sharding: writing assignments: %w (%s)", fence.ErrFenced, fc.Holder)
		}
		rev = resp.Header.Revision
		ops = ops[n:]
	}
	sh.log.Info("assigned shards", "moved", shard.Moves(cur, target), "members", len(members))
	return rev, nil
}
