package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// locksOutput is what locks prints with -o json.
type locksOutput struct {
	Prefix   string     `json:"prefix"`
	Revision int64      `json:"revision"`
	Locks    []lockInfo `json:"locks"`
}

// lockInfo is one lock: its queue, split into the entries that hold it and those that wait.
type lockInfo struct {
	// Key is the lock's key K; its queue entries are K/<name>.
	Key string `json:"key"`
	// Mode is "exclusive" (one Lock, or an RWLock's writer, holds it) or "shared" (read
	// holds of an RWLock).
	Mode string `json:"mode"`
	// Token is the exclusive holder's fencing token, what its lock.Token returns; 0 when
	// the lock is held shared (each read hold has its own token in Holders).
	Token          int64       `json:"token"`
	Holders        []lockEntry `json:"holders"`
	Waiting        []lockEntry `json:"waiting"`
	WaitingWriters int         `json:"waitingWriters"`
	WaitingReaders int         `json:"waitingReaders"`
}

// lockEntry is one entry of a lock's queue.
type lockEntry struct {
	Entry string `json:"entry"` // the entry's key
	Kind  string `json:"kind"`  // "exclusive" or "shared"
	Lease string `json:"lease"` // the holder's lease, in hex
	Token int64  `json:"token"` // the entry's create revision
	TTL   int64  `json:"ttl"`   // seconds the lease has left; -1: expired or unknown
}

const (
	exclusive = "exclusive"
	shared    = "shared"
)

func runLocks(ctx context.Context, e *env) error {
	kvs, rev, err := e.list(ctx, e.arg)
	if err != nil {
		return err
	}
	out := locksOutput{Prefix: e.arg, Revision: rev, Locks: []lockInfo{}}
	queues := map[string][]leaseEntry{}
	for _, kv := range kvs {
		// A lock entry holds nothing; an election's key, named the same way, holds an ID.
		if en, ok := parseLeaseEntry(kv); ok && len(kv.Value) == 0 {
			k := strings.TrimSuffix(en.parent, "/")
			queues[k] = append(queues[k], en)
		}
	}
	leases := newTTLs(e.cli)
	for key, q := range queues {
		out.Locks = append(out.Locks, lockOf(ctx, key, q, leases))
	}
	sort.Slice(out.Locks, func(i, j int) bool { return out.Locks[i].Key < out.Locks[j].Key })
	leases.report(e)
	if len(out.Locks) == 0 {
		e.warn("no locks under %s", e.arg)
	}
	if e.opts.output == "json" {
		return writeJSON(e.stdout, out)
	}
	t := newTable(e.stdout, "LOCK", "MODE", "HOLDER LEASE", "TOKEN", "TTL", "WRITERS WAITING", "READERS WAITING")
	for _, l := range out.Locks {
		var ls, toks, ts []string
		for _, h := range l.Holders {
			ls, toks, ts = append(ls, h.Lease), append(toks, token(h.Token)), append(ts, ttl(h.TTL))
		}
		t.row(l.Key, l.Mode, strings.Join(ls, ","), strings.Join(toks, ","), strings.Join(ts, ","),
			fmt.Sprint(l.WaitingWriters), fmt.Sprint(l.WaitingReaders))
	}
	return t.flush()
}

// lockOf reads one lock's queue (lock/queue.go): ordered by create revision, an exclusive
// entry waits for every earlier entry, a shared one for the earlier exclusive entries only.
// So the first entry holds the lock, and when it is shared so does every shared entry
// before the first exclusive one.
func lockOf(ctx context.Context, key string, q []leaseEntry, leases *ttls) lockInfo {
	sort.Slice(q, func(i, j int) bool { return q[i].kv.CreateRevision < q[j].kv.CreateRevision })
	l := lockInfo{Key: key, Mode: exclusive, Holders: []lockEntry{}, Waiting: []lockEntry{}}
	if q[0].shared {
		l.Mode = shared
	}
	holding := true
	for i, en := range q {
		if i > 0 && !(en.shared && q[0].shared) {
			holding = false
		}
		le := lockEntry{
			Entry: string(en.kv.Key), Kind: exclusive, Lease: leaseHex(en.kv.Lease),
			Token: en.kv.CreateRevision, TTL: leases.of(ctx, en.kv.Lease),
		}
		if en.shared {
			le.Kind = shared
		}
		switch {
		case holding:
			l.Holders = append(l.Holders, le)
		case en.shared:
			l.Waiting = append(l.Waiting, le)
			l.WaitingReaders++
		default:
			l.Waiting = append(l.Waiting, le)
			l.WaitingWriters++
		}
	}
	if l.Mode == exclusive {
		l.Token = l.Holders[0].Token
	}
	return l
}
