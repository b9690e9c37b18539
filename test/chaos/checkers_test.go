//go:build unix

package chaos_test

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/etcdkit/etcdkit/internal/shard"
	"github.com/etcdkit/etcdkit/test/rangecheck"
)

// The checkers, as violations name them.
const (
	checkFencing     = "fencing"
	checkCounter     = "counter"
	checkRecords     = "records"
	checkConvergence = "convergence"
	checkLeases      = "leases"
	checkProcesses   = "processes"
	checkRecorder    = "recorder"
	checkViews       = "views"
)

// violation is a broken invariant, with the part of the histories that proves it.
type violation struct {
	checker string
	msg     string
	excerpt []string
}

func (v violation) String() string {
	s := fmt.Sprintf("[%s] %s", v.checker, v.msg)
	for _, l := range v.excerpt {
		s += "\n      " + l
	}
	return s
}

// recordsByRev indexes the records of accepted writes by revision.
func recordsByRev(hists map[string][]record) map[int64][]record {
	out := map[int64][]record{}
	for _, rs := range hists {
		for _, r := range rs {
			if r.Result == "written" {
				out[r.Rev] = append(out[r.Rev], r)
			}
		}
	}
	return out
}

func tail(evs []event, n int) []string {
	var out []string
	for _, e := range evs[max(0, len(evs)-n):] {
		out = append(out, "etcd: "+e.String())
	}
	return out
}

// checkFencingHistory replays etcd's history and, for every accepted write of /out/ at
// revision R, asks whether owners/<shard> had the writer as its value and the writer's token
// as its create revision just before R (the state the write's transaction compared): a
// member that no longer owned the shard must have been refused (I3). A shard's tokens must
// not go back as revisions grow, and a write's shard must be its item's.
//
// In the range mode it also follows the slice map: no two owned slices may overlap at the
// end of a revision, and a write's item must lie in the slice its shard names.
func checkFencingHistory(evs []event, hists map[string][]record, ranges bool) (vs []violation, writes int) {
	recs := recordsByRev(hists)
	ownerEvs := map[string][]event{}
	lastTok := map[int]event{}
	p := newReplay()
	slices := rangecheck.NewTracker(root)
	p.byRevision(evs, func(rev int64, es []event) {
		if ranges {
			defer func() {
				for _, v := range slices.Overlaps() {
					vs = append(vs, violation{checkFencing, fmt.Sprintf("revision %d: %s", rev, v), nil})
				}
			}()
		}
		for _, e := range es {
			if ranges {
				if err := slices.Apply(e.key, e.put, []byte(e.value)); err != nil {
					vs = append(vs, violation{checkFencing, fmt.Sprintf("revision %d: %v", rev, err), nil})
				}
			}
			if strings.HasPrefix(e.key, root+"owners/") {
				defer func() { ownerEvs[e.key] = append(ownerEvs[e.key], e) }()
			}
			if !e.put || !strings.HasPrefix(e.key, outPrefix) {
				continue
			}
			writes++
			o, err := parseOutput(e.value)
			if err != nil {
				vs = append(vs, violation{checkFencing, fmt.Sprintf("%s at revision %d: %v", e.key, rev, err), nil})
				continue
			}
			okey := root + "owners/" + strconv.Itoa(o.Shard)
			owner, held := p.state[okey]
			proof := func() []string {
				ex := tail(ownerEvs[okey], 4)
				ex = append(ex, "etcd: "+e.String())
				for _, r := range recs[rev] {
					ex = append(ex, "log:  "+r.String())
				}
				return ex
			}
			switch {
			case !held:
				vs = append(vs, violation{checkFencing, fmt.Sprintf("%s written at revision %d by %s with token %d (shard %d), when no one owned the shard",
					e.key, rev, o.Member, o.Token, o.Shard), proof()})
			case owner.create != o.Token || owner.value != o.Member:
				vs = append(vs, violation{checkFencing, fmt.Sprintf("%s written at revision %d by %s with token %d (shard %d), when %s owned the shard with token %d",
					e.key, rev, o.Member, o.Token, o.Shard, owner.value, owner.create), proof()})
			}
			if ranges {
				if sk := strings.TrimPrefix(e.key, outPrefix); !slices.Holds(int64(o.Shard), sk) {
					vs = append(vs, violation{checkFencing, fmt.Sprintf("%s written at revision %d as slice %d, which does not hold %q", e.key, rev, o.Shard, sk), proof()})
				}
			} else if s := shard.Of(itemOf(e.key), shards); s != o.Shard {
				vs = append(vs, violation{checkFencing, fmt.Sprintf("%s written at revision %d as shard %d; its item is in shard %d", e.key, rev, o.Shard, s), proof()})
			}
			if prev, ok := lastTok[o.Shard]; ok {
				if po, _ := parseOutput(prev.value); o.Token < po.Token {
					vs = append(vs, violation{checkFencing, fmt.Sprintf("shard %d: token %d accepted at revision %d after token %d at revision %d",
						o.Shard, o.Token, rev, po.Token, prev.rev), append(proof(), "etcd: "+prev.String())})
				}
			}
			lastTok[o.Shard] = e
		}
	})
	return vs, writes
}

// checkCounterHistory replays etcd's history of the counter: its accepted writes must form
// one chain (each value the previous plus one, no value twice), their tokens must not go
// back, and each must have been made while its token headed the lock's queue (the entry
// with the lowest create revision under the lock's key had that create revision).
func checkCounterHistory(evs []event, hists map[string][]record) (vs []violation, writes int) {
	recs := recordsByRev(hists)
	entries := map[int64][]event{} // the lock's queue entries' events, by create revision
	var prev *event
	var prevVal counterValue
	values := map[string]int64{}
	p := newReplay()
	p.byRevision(evs, func(rev int64, es []event) {
		for _, e := range es {
			if strings.HasPrefix(e.key, lockKey+"/") {
				c := e.create
				if !e.put {
					c = e.prevCreate
				}
				defer func() { entries[c] = append(entries[c], e) }()
			}
			if e.key != counterKey {
				continue
			}
			if !e.put {
				vs = append(vs, violation{checkCounter, fmt.Sprintf("the counter deleted at revision %d", rev), []string{"etcd: " + e.String()}})
				prev = nil
				continue
			}
			v, err := parseCounter(e.value)
			if err != nil {
				vs = append(vs, violation{checkCounter, fmt.Sprintf("revision %d: %v", rev, err), nil})
				continue
			}
			if v.holder == "init" {
				prev, prevVal = &e, v
				continue
			}
			writes++
			proof := func() []string {
				var ex []string
				if prev != nil {
					ex = append(ex, "etcd: "+prev.String())
				}
				ex = append(ex, "etcd: "+e.String())
				for _, r := range recs[rev] {
					ex = append(ex, "log:  "+r.String())
				}
				return ex
			}
			if at, dup := values[e.value]; dup {
				vs = append(vs, violation{checkCounter, fmt.Sprintf("revision %d wrote %q again (first at revision %d)", rev, e.value, at), proof()})
			}
			values[e.value] = rev
			if prev != nil && v.n != prevVal.n+1 {
				vs = append(vs, violation{checkCounter, fmt.Sprintf("revision %d wrote %d after %d: an increment lost or applied twice", rev, v.n, prevVal.n), proof()})
			}
			if prev != nil && v.token < prevVal.token {
				vs = append(vs, violation{checkCounter, fmt.Sprintf("revision %d wrote under token %d after token %d at revision %d", rev, v.token, prevVal.token, prev.rev), proof()})
			}
			var head string
			var headCreate int64
			for k, s := range p.state {
				if strings.HasPrefix(k, lockKey+"/") && (headCreate == 0 || s.create < headCreate) {
					head, headCreate = k, s.create
				}
			}
			if headCreate != v.token {
				ex := proof()
				if head != "" {
					ex = append(ex, fmt.Sprintf("etcd: the queue's head at revision %d: %s (create %d)", rev-1, head, headCreate))
				} else {
					ex = append(ex, fmt.Sprintf("etcd: the queue was empty at revision %d", rev-1))
				}
				ex = append(ex, tail(entries[v.token], 2)...)
				vs = append(vs, violation{checkCounter, fmt.Sprintf("revision %d wrote %q by %s under token %d, which did not head the lock's queue",
					rev, e.value, v.holder, v.token), ex})
			}
			prev, prevVal = &e, v
		}
	})
	return vs, writes
}

// checkRecordsHistory matches the processes' records with etcd's history: every write a
// process logged as accepted is in etcd at that revision, as logged. It also counts the
// writes etcd accepted that no process logged (its process was killed first, or the
// answer was lost): not violations.
func checkRecordsHistory(evs []event, hists map[string][]record) (vs []violation, unlogged int) {
	byRev := map[int64][]event{}
	for _, e := range evs {
		byRev[e.rev] = append(byRev[e.rev], e)
	}
	logged := map[int64]bool{}
	var procs []string
	for id := range hists {
		procs = append(procs, id)
	}
	sort.Strings(procs)
	for _, id := range procs {
		for _, r := range hists[id] {
			if r.Result != "written" {
				continue
			}
			logged[r.Rev] = true
			found := false
			for _, e := range byRev[r.Rev] {
				found = found || e.put && e.key == r.Key && sameValue(r, e.value)
			}
			if !found {
				ex := []string{"log:  " + r.String()}
				for _, e := range byRev[r.Rev] {
					ex = append(ex, "etcd: "+e.String())
				}
				vs = append(vs, violation{checkRecords, fmt.Sprintf("%s logged a write of %s at revision %d that etcd does not have", r.Proc, r.Key, r.Rev), ex})
			}
		}
	}
	for _, e := range evs {
		if e.put && (strings.HasPrefix(e.key, outPrefix) || strings.HasPrefix(e.key, leaderOutPrefix) || e.key == counterKey && !strings.HasSuffix(e.value, " init")) && !logged[e.rev] {
			unlogged++
		}
	}
	return vs, unlogged
}

// sameValue tells whether a stored value is the one a record logged: an output as decoded.
func sameValue(r record, stored string) bool {
	if r.Op == "lead" {
		o, err := parseLeaderOutput(stored)
		return err == nil && o.Leader == r.Proc && o.Token == r.Token && strconv.Itoa(o.Seq) == r.Value
	}
	if r.Op != "out" {
		return stored == r.Value
	}
	o, err := parseOutput(stored)
	return err == nil && o == output{Member: r.Proc, Shard: r.Shard, Token: r.Token, Item: r.Value}
}
