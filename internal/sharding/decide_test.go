package sharding

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func TestDecide(t *testing.T) {
	const timeout = 10 * time.Second
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	me := self{id: "a", lease: 7}
	leaving := self{id: "a", lease: 7, leaving: true}
	key := func(owner string, lease, rev int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte("owners/3"), Value: []byte(owner), Lease: lease, CreateRevision: rev}
	}
	held := func(token int64) *ownership { return &ownership{token: token} }
	for _, tc := range []struct {
		name string
		u    unit
		me   self
		want action
	}{
		{"an assigned shard without owner is claimed",
			unit{assignee: "a", seen: 10}, me, action{claim: true}},
		{"a shard assigned elsewhere is left alone",
			unit{assignee: "b", seen: 10}, me, action{}},
		{"a leaving member claims nothing",
			unit{assignee: "a", seen: 10}, leaving, action{}},
		{"a shard still owned by its previous owner waits for its release",
			unit{assignee: "a", owner: key("b", 9, 5), seen: 10}, me, action{}},
		{"this session's key, from a claim whose answer was lost, is adopted",
			unit{assignee: "a", owner: key("a", 7, 8), seen: 10}, me, action{adopt: true}},
		{"this session's key of an ownership that ended here is not adopted again",
			unit{assignee: "a", owner: key("a", 7, 8), seen: 10, gone: 8}, me, action{}},
		{"a key with this ID on another lease (a predecessor) is not adopted",
			unit{assignee: "a", owner: key("a", 6, 8), seen: 10}, me, action{}},
		{"a held shard whose key is gone is lost once the cache has seen the claim",
			unit{assignee: "a", seen: 10, held: held(8)}, me, action{lose: true}},
		{"a held shard whose key is not in a cache behind the claim is kept",
			unit{assignee: "a", seen: 7, held: held(8)}, me, action{}},
		{"a held shard whose key another member recreated is lost",
			unit{assignee: "a", owner: key("b", 9, 12), seen: 12, held: held(8)}, me, action{lose: true}},
		{"a held shard assigned here is kept",
			unit{assignee: "a", owner: key("a", 7, 8), seen: 10, held: held(8)}, me, action{}},
		{"a held shard assigned elsewhere starts draining and, idle, is released",
			unit{assignee: "b", owner: key("a", 7, 8), seen: 10, held: held(8)}, me,
			action{drain: true, drainBy: now.Add(timeout), release: true, idle: true}},
		{"a leaving member drains what it holds",
			unit{assignee: "a", owner: key("a", 7, 8), seen: 10, held: held(8)}, leaving,
			action{drain: true, drainBy: now.Add(timeout), release: true, idle: true}},
		{"a draining shard with reconciles in flight waits for them until its deadline",
			unit{assignee: "b", owner: key("a", 7, 8), seen: 10, held: &ownership{token: 8, draining: true, drainBy: now.Add(time.Second), inflight: 2}}, me,
			action{wake: now.Add(time.Second)}},
		{"a draining shard past its deadline is released though not idle",
			unit{assignee: "b", owner: key("a", 7, 8), seen: 10, held: &ownership{token: 8, draining: true, drainBy: now, inflight: 2}}, me,
			action{release: true}},
		{"a draining shard lost meanwhile is dropped, not released",
			unit{assignee: "b", seen: 10, held: &ownership{token: 8, draining: true, drainBy: now.Add(time.Second)}}, me,
			action{lose: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(tc.u, tc.me, now, timeout); got != tc.want {
				t.Errorf("decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDecideDrainIsFinal checks, over every combination of inputs, that decide never
// claims or adopts a shard it holds, never drains one it does not hold, and only releases
// a shard that is draining by the end of the pass.
func TestDecideDrainIsFinal(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	owners := []*mvccpb.KeyValue{nil,
		{Value: []byte("a"), Lease: 7, CreateRevision: 8},
		{Value: []byte("a"), Lease: 6, CreateRevision: 8},
		{Value: []byte("b"), Lease: 9, CreateRevision: 12}}
	helds := []*ownership{nil, {token: 8}, {token: 8, draining: true, drainBy: now.Add(time.Second), inflight: 1},
		{token: 8, draining: true, drainBy: now}, {token: 12}}
	n := 0
	for _, assignee := range []string{"", "a", "b"} {
		for _, owner := range owners {
			for _, h := range helds {
				for _, seen := range []int64{7, 10, 12} {
					for _, gone := range []int64{0, 8} {
						for _, leaving := range []bool{false, true} {
							u := unit{assignee: assignee, owner: owner, seen: seen, gone: gone, held: h}
							a := decide(u, self{id: "a", lease: 7, leaving: leaving}, now, time.Second)
							n++
							if h != nil && (a.claim || a.adopt) {
								t.Errorf("%+v: claims or adopts a shard it holds: %+v", u, a)
							}
							if h == nil && (a.drain || a.release || a.lose) {
								t.Errorf("%+v: drains, releases or loses a shard it does not hold: %+v", u, a)
							}
							if a.release && !a.drain && !h.draining {
								t.Errorf("%+v: releases a shard that is not draining: %+v", u, a)
							}
							if a.lose && (a.release || a.drain) {
								t.Errorf("%+v: both loses and hands over: %+v", u, a)
							}
							if a.claim && (owner != nil || leaving || assignee != "a") {
								t.Errorf("%+v: claims a shard not free and assigned here: %+v", u, a)
							}
						}
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no case ran")
	}
}
