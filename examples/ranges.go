package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
)

// The ranges example's sizes and bounds.
const (
	rangesCold = 30  // items written first, spread over the slice keys
	rangesHot  = 240 // items of one hot range written next
	// rangesWaitFor bounds each wait: a split waits for three reports of its slice.
	rangesWaitFor = 30 * time.Second
)

// runRanges runs one range-sharded controller in three managers of one process: the keys
// are cut into slices of slice keys (here the item's name), the leader balances them over
// the members by the keys each reports, and a hot range that appears in one slice is split
// and spread. Every write is fenced by its slice, and every status is checked against the
// owner of its item's slice.
func runRanges(ctx context.Context, e *env) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	itemsPrefix, statusPrefix := e.key("items/"), e.key("status/")
	name := strings.ReplaceAll(strings.Trim(e.prefix, "/"), "/", ".")

	members, closeAll, err := newShardedMembers(e, name, itemsPrefix, statusPrefix,
		&manager.ShardingOptions{Mode: manager.RangeShards, ReportInterval: 300 * time.Millisecond, DrainTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeAll()) }()
	put := func(format string, n int) error {
		for i := range n {
			if _, err := e.client.Put(ctx, itemsPrefix+fmt.Sprintf(format, i), "v1"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := put("item-%02d", rangesCold); err != nil {
		return err
	}
	for _, m := range members {
		runCtx, stop := context.WithCancel(ctx)
		m.stop, m.exited = stop, false
		// Start belongs to the member: it returns after runCtx ends (shutdown).
		go func() { m.done <- m.mgr.Start(runCtx) }()
	}
	e.say("wrote %d items under %s; started %d managers in the range mode (reports every 300ms)", rangesCold, e.rel(itemsPrefix), shardedMembers)

	before, err := rangesSettle(ctx, e, members, statusPrefix, "", rangesCold)
	if err != nil {
		return err
	}
	e.say("settled: %d slices over %d members, every status written by its slice's owner", len(before.Slices), shardedMembers)
	rangesTable(e, before)

	start := time.Now()
	if err := put("item-hot-%03d", rangesHot); err != nil {
		return err
	}
	hot, _ := rangesSlice(before, "item-hot-000")
	e.say("wrote %d items item-hot-000..%03d: all in slice %d [%q, %s) of %s", rangesHot, rangesHot-1, hot.ID, hot.Lo, rangesHi(hot.Hi), hot.Owner)
	after, err := rangesSettle(ctx, e, members, statusPrefix, "item-hot-", rangesCold+rangesHot)
	if err != nil {
		return err
	}
	owners := map[string]int{}
	for i := range rangesHot {
		s, _ := rangesSlice(after, fmt.Sprintf("item-hot-%03d", i))
		owners[s.Owner]++
	}
	e.say("%s later the hot range is split and spread: %d slices now; its items by owner: %v", electionMs(time.Since(start)), len(after.Slices), owners)
	rangesTable(e, after)

	for _, m := range members {
		if serr := m.shutdown(15 * time.Second); serr != nil {
			return fmt.Errorf("%s: %w", m.id, serr)
		}
	}
	e.say("every manager stopped cleanly")
	return nil
}

// rangesHi renders a slice's upper bound.
func rangesHi(hi string) string {
	if hi == "" {
		return "∞"
	}
	return fmt.Sprintf("%q", hi)
}

// rangesSlice returns the slice of st that holds the slice key sk.
func rangesSlice(st manager.ShardStatus, sk string) (manager.SliceStatus, bool) {
	for _, s := range st.Slices {
		if !s.Retired && sk >= s.Lo && (s.Hi == "" || sk < s.Hi) {
			return s, true
		}
	}
	return manager.SliceStatus{}, false
}

// rangesTable prints the slice map.
func rangesTable(e *env, st manager.ShardStatus) {
	for _, s := range st.Slices {
		bounds := fmt.Sprintf("[%q, %s)", s.Lo, rangesHi(s.Hi))
		e.say("  slice %-3d %-32s %-9s %4d keys", s.ID, bounds, s.Owner, s.Keys)
	}
}

// rangesSettle waits until the first running member sees every slice owned by its
// assignee and reported with its keys (n in all), every member owning some, the items with
// the prefix spread over at least two members, and every item's status written by the
// owner of its slice; it returns that member's status.
func rangesSettle(ctx context.Context, e *env, members []*shardedMember, statusPrefix, spread string, n int) (manager.ShardStatus, error) {
	var st manager.ShardStatus
	err := membersWait(ctx, "the slices to settle", rangesWaitFor, func() (string, error) {
		st, _ = members[0].mgr.ShardStatus(ctx)
		if !st.Settled() || len(st.Slices) == 0 {
			return "slices not all owned by their assignees", nil
		}
		keys, owners := 0, map[string]bool{}
		for _, s := range st.Slices {
			keys += s.Keys
			owners[s.Owner] = true
		}
		if keys != n || len(owners) != len(members) {
			return fmt.Sprintf("%d of %d keys reported, %d of %d members own slices", keys, n, len(owners), len(members)), nil
		}
		if spread != "" {
			by := map[string]bool{}
			for _, s := range st.Slices {
				if s.Keys > 0 && s.Hi > spread && (s.Lo < spread+"\xff") {
					by[s.Owner] = true
				}
			}
			if len(by) < 2 {
				return "the hot range is still with one member", nil
			}
		}
		resp, err := e.client.Get(ctx, statusPrefix, clientv3.WithPrefix())
		if err != nil {
			return "", err
		}
		if len(resp.Kvs) != n {
			return fmt.Sprintf("%d of %d statuses written", len(resp.Kvs), n), nil
		}
		for _, kv := range resp.Kvs {
			var is itemStatus
			if err := json.Unmarshal(kv.Value, &is); err != nil {
				return "", err
			}
			sk := strings.TrimPrefix(string(kv.Key), statusPrefix)
			s, ok := rangesSlice(st, sk)
			if !ok || is.Member != s.Owner || int64(is.Shard) != s.ID {
				return fmt.Sprintf("%s written by %s in slice %d; its slice is %d of %s", e.rel(string(kv.Key)), is.Member, is.Shard, s.ID, s.Owner), nil
			}
		}
		return "", nil
	}, members)
	return st, err
}
