package sharding

import (
	"context"
	"encoding/json"
	"sort"
	"time"
)

// Status is a member's view of the sharding, as /debug/shards serves it.
type Status struct {
	// Member is this replica's ID; Leader the leading replica's ("" when none).
	Member string `json:"member"`
	Leader string `json:"leader"`
	// LeaderError says why Leader could not be read (etcd did not answer in time).
	LeaderError string `json:"leaderError,omitempty"`
	Shards      int    `json:"shards"`
	// Members are the registered members, by ID.
	Members []MemberInfo `json:"members"`
	// Assignment holds the assigned member of every shard ("" when unassigned).
	Assignment []string `json:"assignment"`
	// Owners holds the member that owns each shard now ("" when none).
	Owners []string `json:"owners"`
	// Owned are the shards this member owns.
	Owned []OwnedShard `json:"owned"`
	// QueueDepth counts the requests waiting in this member's sharded controllers, by shard.
	QueueDepth map[int]int `json:"queueDepth"`
}

// Settled reports whether the sharding is at rest: every shard assigned, owned by its
// assignee and not draining here, and the assignment balanced (every member that holds
// shards has floor(S/N) or ceil(S/N) of them).
func (st Status) Settled() bool {
	count := map[string]int{}
	for s := 0; s < st.Shards; s++ {
		if s >= len(st.Assignment) || s >= len(st.Owners) || st.Assignment[s] == "" || st.Owners[s] != st.Assignment[s] {
			return false
		}
		count[st.Owners[s]]++
	}
	for _, o := range st.Owned {
		if o.Draining {
			return false
		}
	}
	if len(count) == 0 {
		return st.Shards == 0
	}
	lo, hi := st.Shards/len(count), (st.Shards+len(count)-1)/len(count)
	for _, n := range count {
		if n < lo || n > hi {
			return false
		}
	}
	return true
}

// OwnedShard is one shard this member owns.
type OwnedShard struct {
	Shard int `json:"shard"`
	// Token is the create revision of owners/<shard>: writes carry it as their fence. Shards
	// claimed in one transaction share a token; a token is unique per shard over time.
	Token    int64     `json:"token"`
	Since    time.Time `json:"since"`
	Draining bool      `json:"draining"`
	InFlight int       `json:"inFlight"`
}

// Status reports the member's view of the sharding.
func (sh *Member) Status(ctx context.Context) Status {
	st := Status{Member: sh.id, Shards: sh.o.Shards, QueueDepth: map[int]int{}}
	if sh.d.Leader != nil {
		// A member cut off from etcd still reports what it knows locally.
		lctx, cancel := context.WithTimeout(ctx, statusTimeout)
		leader, err := sh.d.Leader(lctx)
		cancel()
		if err != nil {
			st.LeaderError = err.Error()
		}
		st.Leader = leader
	}
	for _, kv := range sh.state.List(sh.root + "members/") {
		var info MemberInfo
		if json.Unmarshal(kv.Value, &info) == nil {
			st.Members = append(st.Members, info)
		}
	}
	st.Assignment = make([]string, sh.o.Shards)
	for s, m := range sh.currentAssignment() {
		st.Assignment[s] = m
	}
	st.Owners = make([]string, sh.o.Shards)
	for s := range st.Owners {
		if kv, ok := sh.state.Get(sh.ownerKey(s)); ok {
			st.Owners[s] = string(kv.Value)
		}
	}
	sh.mu.Lock()
	for s, o := range sh.held {
		st.Owned = append(st.Owned, OwnedShard{Shard: s, Token: o.token, Since: o.since, Draining: o.draining, InFlight: o.inflight})
	}
	targets := append([]sharded(nil), sh.targets...)
	sh.mu.Unlock()
	sort.Slice(st.Owned, func(i, j int) bool { return st.Owned[i].Shard < st.Owned[j].Shard })
	for _, t := range targets {
		for _, req := range t.c.Queued() {
			st.QueueDepth[sh.shardOf(t.key, req.Key)]++
		}
	}
	return st
}
