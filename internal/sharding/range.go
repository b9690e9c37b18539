package sharding

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/internal/ranges"
	"github.com/etcdkit/etcdkit/source"
)

// storedMap is the slice map as the leader stores it under <root>slices: the map, and the
// slices a split or merge replaced whose owner key may still exist. A slice is claimed
// only when no retired slice that overlaps it is still owned: the owner of the old slice
// drains and releases it (its writes are fenced from then on) before anyone takes a part
// of its keys.
type storedMap struct {
	Map     ranges.Map     `json:"map"`
	Retired []ranges.Slice `json:"retired,omitempty"`
}

// report is what a member reports of the slices it owns, under <root>reports/<member>,
// by slice ID. It changes only when its figures do (since is fixed per ownership, the load
// rounded), so that a member at rest does not write it again.
type report map[string]sliceReport

// sliceReport is one slice's report: ranges.Stats, with the start of the ownership (Unix
// milliseconds, on the member's clock) in place of its age.
type sliceReport struct {
	Keys    int     `json:"keys"`
	Load    float64 `json:"load"`
	SplitAt string  `json:"splitAt,omitempty"`
	Since   int64   `json:"since"`
}

// stats returns the slice's figures as the leader plans with them, aged at now (the
// member's clock and the leader's may differ by their skew).
func (s sliceReport) stats(now time.Time) ranges.Stats {
	return ranges.Stats{Keys: s.Keys, Load: s.Load, SplitAt: s.SplitAt, Age: now.Sub(time.UnixMilli(s.Since)).Seconds()}
}

// rangeMode is the range mode: the units are the slices of the stored map.
type rangeMode struct {
	sh *Member

	mu  sync.Mutex
	rev int64     // mod revision of the parsed map; guarded by mu
	cur storedMap // guarded by mu
	// pass is the map revision of the member's current pass: its claims carry it.
	pass int64
	// last holds the last report of every slice, by whichever member made it: a slice that
	// just moved keeps its weight until its new owner reports it (with an age of 0, so
	// that it is not split or merged before). Used by the leader only.
	last map[int64]ranges.Stats
	// loads is the smoothed load of the slices this member reported last (used by the
	// report loop only).
	loads map[int]float64

	// wanted holds the slices whose keys this member caches: those it holds, and those
	// assigned to it (so that a slice is cached before it is claimed).
	wanted atomic.Pointer[map[int]bool]
	// srcMu guards sources, the sharded controllers' sources that keep the wanted slices'
	// keys (Member.Keeps), and pending: for a slice wanted since their last list, the
	// Relist each source must have answered before the slice is claimed.
	srcMu   sync.Mutex
	sources []*source.Source
	pending map[int][]int64
}

// listPoll is how soon a member passes again when a claim waits for its sources' lists.
const listPoll = 20 * time.Millisecond

func (r *rangeMode) wants(u int) bool {
	m := r.wanted.Load()
	return m != nil && (*m)[u]
}

func (r *rangeMode) addSources(srcs []*source.Source) {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	r.sources = append(r.sources, srcs...)
}

// begin starts a pass: it works out the slices the member wants (held, or assigned to it
// in the map), and when they changed, evicts the keys of those it no longer wants and asks
// its sources to list the keys of those it newly wants.
func (r *rangeMode) begin() {
	want := map[int]bool{}
	if m, _, ok := r.current(); ok {
		for _, s := range m.Map.Slices {
			if kv, ok := r.sh.state.Get(r.sh.assignKey(int(s.ID))); ok && string(kv.Value) == r.sh.id {
				want[int(s.ID)] = true
			}
		}
	}
	r.sh.mu.Lock()
	for id := range r.sh.held {
		want[id] = true
	}
	r.sh.mu.Unlock()
	prev := r.wanted.Load()
	var gained []int
	lost := false
	for u := range want {
		if prev == nil || !(*prev)[u] {
			gained = append(gained, u)
		}
	}
	if prev != nil {
		for u := range *prev {
			if !want[u] {
				lost = true
			}
		}
	}
	if len(gained) == 0 && !lost {
		return
	}
	r.wanted.Store(&want)
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if lost {
		for _, src := range r.sources {
			src.Evict()
		}
		for u := range r.pending {
			if !want[u] {
				delete(r.pending, u)
			}
		}
	}
	if len(gained) > 0 && len(r.sources) > 0 {
		gens := make([]int64, len(r.sources))
		for i, src := range r.sources {
			gens[i] = src.Relist()
		}
		if r.pending == nil {
			r.pending = map[int][]int64{}
		}
		for _, u := range gained {
			r.pending[u] = gens
		}
	}
}

// listed reports whether every source has listed slice u since the member came to want
// it.
func (r *rangeMode) listed(u int) bool {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	gens, ok := r.pending[u]
	if !ok {
		return true
	}
	for i, g := range gens {
		if !r.sources[i].HasListed(g) {
			return false
		}
	}
	delete(r.pending, u)
	return true
}

// wakeAt: soon, while a claim waits for lists.
func (r *rangeMode) wakeAt() time.Time {
	r.srcMu.Lock()
	defer r.srcMu.Unlock()
	if len(r.pending) > 0 {
		return time.Now().Add(listPoll)
	}
	return time.Time{}
}

// loadSmoothing is the weight of the newest interval in a slice's reported load.
const loadSmoothing = 0.3

func (r *rangeMode) mapKey() string             { return r.sh.root + "slices" }
func (r *rangeMode) reportKey(id string) string { return r.sh.root + "reports/" + id }

// current returns the stored map as the state cache holds it, parsed once per revision;
// false when there is none (or it cannot be read).
func (r *rangeMode) current() (storedMap, int64, bool) {
	kv, ok := r.sh.state.Get(r.mapKey())
	if !ok {
		return storedMap{}, 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if kv.ModRevision != r.rev {
		var m storedMap
		err := json.Unmarshal(kv.Value, &m)
		if err == nil {
			err = m.Map.Validate()
		}
		if err != nil {
			r.sh.log.Error(err, "unreadable slice map, ignored", "key", r.mapKey(), "revision", kv.ModRevision)
			return storedMap{}, 0, false
		}
		r.cur, r.rev = m, kv.ModRevision
		if r.sh.d.Units != nil {
			r.sh.d.Units.Set(float64(len(m.Map.Slices)))
		}
	}
	return r.cur, r.rev, true
}

func (r *rangeMode) units() []int {
	m, rev, ok := r.current()
	r.mu.Lock()
	r.pass = rev
	r.mu.Unlock()
	seen := map[int]bool{}
	var out []int
	add := func(id int) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	if ok {
		for _, s := range m.Map.Slices {
			add(int(s.ID))
		}
		for _, s := range m.Retired {
			add(int(s.ID))
		}
	}
	r.sh.mu.Lock()
	for id := range r.sh.held {
		add(id)
	}
	r.sh.mu.Unlock()
	sort.Ints(out)
	return out
}

func (r *rangeMode) unitOf(sk string) (int, bool) {
	m, _, ok := r.current()
	if !ok {
		return 0, false
	}
	return int(m.Map.Find(sk).ID), true
}

// claimable: u is a slice of the map, and no other slice that overlaps it is owned (a
// retired one whose owner has not released it yet, or one the map does not know).
func (r *rangeMode) claimable(u int) bool {
	m, _, ok := r.current()
	if !ok {
		return false
	}
	s, ok := m.Map.Get(int64(u))
	if !ok || !r.listed(u) {
		return false
	}
	known := map[int64]ranges.Slice{}
	for _, x := range m.Map.Slices {
		known[x.ID] = x
	}
	for _, x := range m.Retired {
		known[x.ID] = x
	}
	prefix := r.sh.root + "owners/"
	for _, kv := range r.sh.state.List(prefix) {
		id, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), prefix), 10, 64)
		if err != nil || id == s.ID {
			continue
		}
		other, ok := known[id]
		if !ok || overlap(s, other) {
			return false
		}
	}
	return true
}

// overlap reports whether two slices share a slice key.
func overlap(a, b ranges.Slice) bool {
	return (b.Hi == "" || a.Lo < b.Hi) && (a.Hi == "" || b.Lo < a.Hi)
}

// claimCmps: the map the pass decided on is still the stored one.
func (r *rangeMode) claimCmps() []clientv3.Cmp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(r.mapKey()), "=", r.pass)}
}

func (r *rangeMode) defaultKey(prefixes []string) func(string) string {
	return suffixSegment(prefixes)
}

// owners returns the owner of every owned slice, from the state cache.
func (r *rangeMode) owners() map[int64]string {
	prefix := r.sh.root + "owners/"
	out := map[int64]string{}
	for _, kv := range r.sh.state.List(prefix) {
		if id, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), prefix), 10, 64); err == nil {
			out[id] = string(kv.Value)
		}
	}
	return out
}

// stats returns the reports of the slices' current owners; with fill, the last report of
// the other slices of m, aged 0.
func (r *rangeMode) stats(owners map[int64]string, m *ranges.Map) map[int64]ranges.Stats {
	prefix := r.sh.root + "reports/"
	out := map[int64]ranges.Stats{}
	defer func() {
		if m == nil {
			return
		}
		if r.last == nil {
			r.last = map[int64]ranges.Stats{}
		}
		for id, st := range out {
			r.last[id] = st
		}
		inMap := map[int64]bool{}
		for _, s := range m.Slices {
			inMap[s.ID] = true
			if _, ok := out[s.ID]; !ok {
				if st, ok := r.last[s.ID]; ok {
					st.Age = 0
					out[s.ID] = st
				}
			}
		}
		for id := range r.last {
			if !inMap[id] {
				delete(r.last, id)
			}
		}
	}()
	for _, kv := range r.sh.state.List(prefix) {
		member := strings.TrimPrefix(string(kv.Key), prefix)
		var rep report
		if err := json.Unmarshal(kv.Value, &rep); err != nil {
			r.sh.log.Error(err, "unreadable slice report, ignored", "key", string(kv.Key))
			continue
		}
		for k, sr := range rep {
			id, err := strconv.ParseInt(k, 10, 64)
			if err == nil && owners[id] == member {
				out[id] = sr.stats(time.Now())
			}
		}
	}
	return out
}

func (r *rangeMode) writeAssignment(ctx context.Context, fc fence.Fence) (int64, error) {
	sh := r.sh
	stored, rev, ok := r.current()
	if !ok {
		stored = storedMap{Map: ranges.NewMap()}
	}
	members := sh.activeMembers()
	cur := map[int64]string{}
	for id, m := range sh.currentAssignment() {
		cur[int64(id)] = m
	}
	owners := r.owners()
	plan := ranges.Decide(stored.Map, r.stats(owners, &stored.Map), members, cur, sh.o.Policy)
	next := storedMap{Map: plan.Map}
	for _, s := range stored.Retired {
		if owners[s.ID] != "" {
			next.Retired = append(next.Retired, s)
		}
	}
	for _, c := range plan.Changes {
		for _, id := range []int64{c.From, c.Other} {
			if s, ok := stored.Map.Get(id); ok && id != 0 && owners[id] != "" {
				next.Retired = append(next.Retired, s)
			}
		}
	}
	var ops []clientv3.Op
	if !ok || !reflect.DeepEqual(next, stored) {
		val, err := json.Marshal(next)
		if err != nil {
			return 0, fmt.Errorf("sharding: encoding the slice map: %w", err)
		}
		ops = append(ops, clientv3.OpPut(r.mapKey(), string(val)))
	}
	inMap := map[int64]bool{}
	for _, s := range plan.Map.Slices {
		inMap[s.ID] = true
		if m := plan.Assign[s.ID]; m != cur[s.ID] {
			if m == "" {
				ops = append(ops, clientv3.OpDelete(sh.assignKey(int(s.ID))))
			} else {
				ops = append(ops, clientv3.OpPut(sh.assignKey(int(s.ID)), m))
			}
		}
	}
	for id := range cur {
		if !inMap[id] {
			ops = append(ops, clientv3.OpDelete(sh.assignKey(int(id))))
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	// The first transaction carries the map, guarded by the map it was planned on: two
	// leaders in turn never interleave their plans.
	cmps := append(append([]clientv3.Cmp(nil), fc.Cmps...), clientv3.Compare(clientv3.ModRevision(r.mapKey()), "=", rev))
	var last int64
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		resp, err := sh.client.Txn(ctx).If(cmps...).Then(ops[:n]...).Commit()
		if err != nil {
			return last, fmt.Errorf("sharding: writing the slice map and %d assignments under %s: %w", n, sh.root, err)
		}
		if !resp.Succeeded {
			return last, fmt.Errorf("sharding: writing the slice map: %w (%s), or the map changed meanwhile", fence.ErrFenced, fc.Holder)
		}
		last = resp.Header.Revision
		cmps = fc.Cmps
		ops = ops[n:]
	}
	if len(plan.Changes) > 0 || plan.Moves > 0 {
		sh.log.Info("planned slices", "slices", len(plan.Map.Slices), "changes", describe(plan.Changes), "moves", plan.Moves, "retired", len(next.Retired), "members", len(members))
	}
	return last, nil
}

// describe renders the changes of a plan for the log.
func describe(cs []ranges.Change) []string {
	var out []string
	for _, c := range cs {
		if c.Split {
			out = append(out, fmt.Sprintf("split %d into %s %s", c.From, c.Into[0], c.Into[1]))
		} else {
			out = append(out, fmt.Sprintf("merged %d and %d into %s", c.From, c.Other, c.Into[0]))
		}
	}
	return out
}

// fill adds the slices to a status.
func (r *rangeMode) fill(st *Status) {
	m, _, ok := r.current()
	if !ok {
		return
	}
	owners := r.owners()
	stats := r.stats(owners, nil)
	assign := r.sh.currentAssignment()
	add := func(s ranges.Slice, retired bool) {
		st.Slices = append(st.Slices, SliceStatus{
			ID: s.ID, Lo: s.Lo, Hi: s.Hi, Retired: retired,
			Assigned: assign[int(s.ID)], Owner: owners[s.ID],
			Keys: stats[s.ID].Keys, Load: stats[s.ID].Load,
		})
	}
	for _, s := range m.Map.Slices {
		add(s, false)
	}
	for _, s := range m.Retired {
		add(s, true)
	}
	st.Shards = len(m.Map.Slices)
	r.srcMu.Lock()
	for _, src := range r.sources {
		st.CachedKeys += src.Len()
	}
	r.srcMu.Unlock()
}

// reportLoop writes this member's report of the slices it owns every interval, on its
// lease, until the session or ctx ends.
func (r *rangeMode) reportLoop(ctx context.Context, sess *lease.Session) {
	t := time.NewTicker(r.sh.o.ReportInterval)
	defer t.Stop()
	last := time.Now()
	written := "" // the report last written on this session
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Context().Done():
			return
		case now := <-t.C:
			rep := r.measure(now.Sub(last))
			last = now
			val, err := json.Marshal(rep)
			if err != nil || string(val) == written {
				continue
			}
			key := r.reportKey(r.sh.id)
			if _, err := r.sh.client.Put(ctx, key, string(val), clientv3.WithLease(sess.ID())); err != nil {
				if ctx.Err() == nil {
					r.sh.log.V(1).Info("writing the slice report failed", "error", err.Error())
				}
				continue
			}
			written = string(val)
		}
	}
}

// measure counts the cached keys of every slice this member owns (over its sharded
// controllers' sources), finds the slice key that cuts each in half, and the reconciles
// admitted since the last report, per second of elapsed.
func (r *rangeMode) measure(elapsed time.Duration) report {
	sh := r.sh
	m, _, ok := r.current()
	if !ok {
		return report{}
	}
	sh.mu.Lock()
	held := map[int]bool{}
	since := map[int]time.Time{}
	for id, o := range sh.held {
		held[id] = !o.draining
		since[id] = o.since
	}
	admitted := sh.admitted
	sh.admitted = map[int]int{}
	targets := append([]sharded(nil), sh.targets...)
	sh.mu.Unlock()
	keys := map[int][]string{} // slice keys of the cached keys, by slice
	seen := map[string]bool{}
	for _, t := range targets {
		for _, src := range t.c.Sources() {
			for _, kv := range src.List("") {
				k := string(kv.Key)
				if seen[k] {
					continue
				}
				seen[k] = true
				sk := t.key(k)
				if s := m.Map.Find(sk); held[int(s.ID)] {
					keys[int(s.ID)] = append(keys[int(s.ID)], sk)
				}
			}
		}
	}
	rep := report{}
	loads := map[int]float64{}
	defer func() { r.loads = loads }()
	for id, live := range held {
		s, ok := m.Map.Get(int64(id))
		if !ok || !live {
			continue
		}
		sks := keys[id]
		st := sliceReport{Keys: len(sks), SplitAt: median(sks, s.Lo), Since: since[id].UnixMilli()}
		if elapsed > 0 {
			// Smoothed over about three reports: a burst does not make a slice look hot.
			now := float64(admitted[id]) / elapsed.Seconds()
			load := now
			if prev, ok := r.loads[id]; ok {
				load = prev + (now-prev)*loadSmoothing
			}
			loads[id] = load
			st.Load = math.Round(load*100) / 100 // so that a slice at rest reports the same
		}
		rep[strconv.Itoa(id)] = st
	}
	return rep
}

// median returns the slice key at the middle of sks (one per key), or the next one above
// the lowest of them and lo; "" when every key has one slice key (the slice cannot be cut).
func median(sks []string, lo string) string {
	if len(sks) < 2 {
		return ""
	}
	sort.Strings(sks)
	// Strictly above the lowest, so that neither part is empty.
	for i := len(sks) / 2; i < len(sks); i++ {
		if sks[i] > sks[0] && sks[i] > lo {
			return sks[i]
		}
	}
	return ""
}
