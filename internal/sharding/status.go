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
	// Slices is the slice map of the range mode, retired slices last (Shards counts the
	// others); Assignment and Owners are empty in that mode.
	Slices []SliceStatus `json:"slices,omitempty"`
	// CachedKeys counts the keys the sharded controllers' sources of this member cache in
	// the range mode: those of its slices (owned, or assigned and not yet claimed).
	CachedKeys int `json:"cachedKeys,omitempty"`
}

// SliceStatus is one slice of the range mode: its ID and bounds [Lo, Hi) of slice-key
// values (Hi "" is no bound), whether a split or merge replaced it (its owner has not
// released it yet), its assigned member and owner, and its owner's last report.
type SliceStatus struct {
	ID       int64   `json:"id"`
	Lo       string  `json:"lo"`
	Hi       string  `json:"hi"`
	Retired  bool    `json:"retired,omitempty"`
	Assigned string  `json:"assigned"`
	Owner    string  `json:"owner"`
	Keys     int     `json:"keys"`
	Load     float64 `json:"load"`
}

// Settled reports whether the sharding is at rest: every shard assigned, owned by its
// assignee and not draining here, and the assignment balanced (every member that holds
// shards has floor(S/N) or ceil(S/N) of them).
func (st Status) Settled() bool {
	if len(st.Slices) > 0 {
		return st.slicesSettled()
	}
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

// slicesSettled is Settled in the range mode: every slice assigned and owned by its
// assignee, none retired, none draining here.
func (st Status) slicesSettled() bool {
	for _, s := range st.Slices {
		if s.Retired || s.Assigned == "" || s.Owner != s.Assigned {
			return false
		}
	}
	for _, o := range st.Owned {
		if o.Draining {
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
	if sh.o.Ranges {
		st.Shards = 0 // the slices of the map, once there is one
	}
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
	sh.mode.fill(&st)
	sh.mu.Lock()
	for s, o := range sh.held {
		st.Owned = append(st.Owned, OwnedShard{Shard: s, Token: o.token, Since: o.since, Draining: o.draining, InFlight: o.inflight})
	}
	targets := append([]sharded(nil), sh.targets...)
	sh.mu.Unlock()
	sort.Slice(st.Owned, func(i, j int) bool { return st.Owned[i].Shard < st.Owned[j].Shard })
	for _, t := range targets {
		for _, req := range t.c.Queued() {
			if u, ok := sh.unitOf(t.key, req.Key); ok {
				st.QueueDepth[u]++
			}
		}
	}
	return st
}
