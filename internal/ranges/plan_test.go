package ranges

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"testing"
)

// statsOf computes what owners would report of m for a keyspace of slice keys (each key
// counted once, load zero): the count and the median slice key of each slice.
func statsOf(m Map, keys []string) map[int64]Stats {
	by := map[int64][]string{}
	for _, k := range keys {
		s := m.Find(k)
		by[s.ID] = append(by[s.ID], k)
	}
	out := map[int64]Stats{}
	for _, s := range m.Slices {
		ks := by[s.ID]
		sort.Strings(ks)
		st := Stats{Keys: len(ks), Age: 60}
		if len(ks) > 1 {
			if at := ks[len(ks)/2]; at > s.Lo {
				st.SplitAt = at
			}
		}
		out[s.ID] = st
	}
	return out
}

// converge runs Decide until it changes nothing, as a leader fed by fresh reports would;
// it fails the test after 100 rounds.
func converge(t *testing.T, m Map, assign map[int64]string, keys, members []string) Plan {
	t.Helper()
	for round := range 100 {
		p := Decide(m, statsOf(m, keys), members, assign, Policy{})
		if err := p.Map.Validate(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		checkAssigned(t, p, members)
		if len(p.Changes) == 0 && p.Moves == 0 && reflect.DeepEqual(p.Assign, assign) {
			return p
		}
		m, assign = p.Map, p.Assign
	}
	t.Fatalf("no rest after 100 rounds")
	return Plan{}
}

func checkAssigned(t *testing.T, p Plan, members []string) {
	t.Helper()
	for _, s := range p.Map.Slices {
		if o := p.Assign[s.ID]; !slices.Contains(members, o) {
			t.Fatalf("slice %s assigned to %q, not a member of %q", s, o, members)
		}
	}
	if len(p.Assign) != len(p.Map.Slices) {
		t.Fatalf("%d assignments for %d slices", len(p.Assign), len(p.Map.Slices))
	}
}

func keyspace(rng *rand.Rand, n int, hot float64) []string {
	var keys []string
	for i := range n {
		if rng.Float64() < hot {
			keys = append(keys, fmt.Sprintf("hot-%05d", i))
		} else {
			keys = append(keys, fmt.Sprintf("k%05d", rng.IntN(100000)))
		}
	}
	return keys
}

// memberLoads returns each member's share of the keys.
func memberLoads(p Plan, keys []string) map[string]float64 {
	out := map[string]float64{}
	for _, k := range keys {
		out[p.Assign[p.Map.Find(k).ID]] += 1 / float64(len(keys))
	}
	return out
}

func TestDecideBalancesKeysAndComesToRest(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		members := []string{"a", "b", "c", "d"}[:1+rng.IntN(4)]
		keys := keyspace(rng, 2000+rng.IntN(3000), rng.Float64())
		p := converge(t, NewMap(), nil, keys, members)
		share := 1 / float64(len(members))
		for m, l := range memberLoads(p, keys) {
			// Within the tolerance plus the split threshold: no slice is heavier than half a share.
			if l > share*(1+0.15)+0.5*share {
				t.Errorf("seed %d: member %s holds %.2f of the keys, share %.2f (%d slices)", seed, m, l, share, len(p.Map.Slices))
			}
		}
		again := Decide(p.Map, statsOf(p.Map, keys), members, p.Assign, Policy{})
		if len(again.Changes) > 0 || again.Moves > 0 {
			t.Errorf("seed %d: a plan at rest changes again: %+v", seed, again.Changes)
		}
	}
}

func TestDecideIsDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	keys := keyspace(rng, 3000, 0.5)
	p := converge(t, NewMap(), nil, keys, []string{"a", "b", "c"})
	st := statsOf(p.Map, keys)
	x := Decide(p.Map, st, []string{"a", "b", "c", "d"}, p.Assign, Policy{})
	y := Decide(p.Map, st, []string{"d", "c", "a", "b", "a"}, p.Assign, Policy{})
	if !reflect.DeepEqual(x, y) {
		t.Errorf("the order of members changed the plan:\n%+v\n%+v", x, y)
	}
}

// TestDecideMovesOnlyToAJoiner checks that a member that joins a plan at rest takes
// slices (or parts of them) from the others, and that no slice moves between the others.
func TestDecideMovesOnlyToAJoiner(t *testing.T) {
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 11))
		keys := keyspace(rng, 4000, 0.3)
		p := converge(t, NewMap(), nil, keys, []string{"a", "b", "c"})
		before := p.Assign
		next := Decide(p.Map, statsOf(p.Map, keys), []string{"a", "b", "c", "d"}, before, Policy{})
		// The owner before of every key: moved keys must go to d.
		moved := 0
		for _, k := range keys {
			was := before[p.Map.Find(k).ID]
			now := next.Assign[next.Map.Find(k).ID]
			if was != now {
				moved++
				if now != "d" {
					t.Fatalf("seed %d: key %s moved from %s to %s, not to the joiner", seed, k, was, now)
				}
			}
		}
		if moved == 0 {
			t.Errorf("seed %d: the joiner got nothing", seed)
		}
	}
}

// TestDecideMovesOnlyALeaversSlices checks that a member that leaves hands its slices to
// the others, and that no other slice moves.
func TestDecideMovesOnlyALeaversSlices(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	keys := keyspace(rng, 4000, 0.2)
	p := converge(t, NewMap(), nil, keys, []string{"a", "b", "c", "d"})
	next := Decide(p.Map, statsOf(p.Map, keys), []string{"a", "b", "c"}, p.Assign, Policy{})
	for _, k := range keys {
		was := p.Assign[p.Map.Find(k).ID]
		now := next.Assign[next.Map.Find(k).ID]
		if was != now && was != "d" {
			t.Fatalf("key %s moved from %s to %s, though %s stays", k, was, now, was)
		}
		if now == "d" {
			t.Fatalf("key %s still with the leaver", k)
		}
	}
}

func TestDecideSplitsAHotRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	members := []string{"a", "b", "c", "d"}
	cold := keyspace(rng, 2000, 0)
	p := converge(t, NewMap(), nil, cold, members)
	// A hot range appears: 6000 keys with one prefix, in one slice today.
	keys := append(slices.Clone(cold), keyspace(rng, 6000, 1)...)
	hot := p.Map.Find("hot-00000").ID
	next := Decide(p.Map, statsOf(p.Map, keys), members, p.Assign, Policy{})
	split := false
	for _, c := range next.Changes {
		split = split || (c.Split && c.From == hot)
	}
	if !split {
		t.Fatalf("the hot slice %d was not split: %+v", hot, next.Changes)
	}
	rest := converge(t, next.Map, next.Assign, keys, members)
	owners := map[string]bool{}
	for _, k := range keys[len(cold):] {
		owners[rest.Assign[rest.Map.Find(k).ID]] = true
	}
	if len(owners) < len(members) {
		t.Errorf("the hot range is spread over %d of %d members", len(owners), len(members))
	}
}

func TestDecideWithoutMembersAssignsNothing(t *testing.T) {
	p := Decide(NewMap(), nil, nil, map[int64]string{1: "a"}, Policy{})
	if len(p.Assign) != 0 || len(p.Changes) != 0 {
		t.Errorf("plan without members: %+v", p)
	}
}

func TestMapSplitMergeFind(t *testing.T) {
	m := NewMap()
	m, parts, err := m.Split(1, "m")
	if err != nil || parts[0].Hi != "m" || parts[1].Lo != "m" {
		t.Fatalf("Split: %v %v", parts, err)
	}
	if _, _, err := m.Split(parts[0].ID, "z"); err == nil {
		t.Error("a split outside its slice was accepted")
	}
	if _, _, err := m.Split(parts[1].ID, "m"); err == nil {
		t.Error("a split at a slice's own lower bound was accepted")
	}
	if got := m.Find("a").ID; got != parts[0].ID {
		t.Errorf("Find(a) = %d", got)
	}
	if got := m.Find("zz").ID; got != parts[1].ID {
		t.Errorf("Find(zz) = %d", got)
	}
	if _, _, err := m.Merge(parts[1].ID, parts[0].ID); err == nil {
		t.Error("a merge of slices out of order was accepted")
	}
	m, joined, err := m.Merge(parts[0].ID, parts[1].ID)
	if err != nil || joined.Lo != "" || joined.Hi != "" || joined.ID != 4 {
		t.Fatalf("Merge: %v %v", joined, err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Map{Slices: []Slice{{ID: 1, Hi: "k"}, {ID: 2, Lo: "j"}}, Next: 3}
	if err := bad.Validate(); err == nil {
		t.Error("overlapping slices were valid")
	}
}

func TestDecideMergesWhatCooledDown(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 2))
	members := []string{"a", "b", "c", "d"}
	// 40 slices, left by a hot range that is gone: the keys now are the cold ones alone.
	m, assign := NewMap(), map[int64]string{}
	for i := range 39 {
		next, _, err := m.Split(m.Slices[len(m.Slices)-1].ID, fmt.Sprintf("hot-%05d", 500*(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		m = next
	}
	for i, s := range m.Slices {
		assign[s.ID] = members[i%len(members)]
	}
	rest := converge(t, m, assign, keyspace(rng, 1000, 0), members)
	if n := len(rest.Map.Slices); n > 4*len(members) {
		t.Errorf("%d slices of 40 left once the hot range went: too few merged", n)
	}
	if n := len(rest.Map.Slices); n < 2*len(members) {
		t.Errorf("merged down to %d slices, fewer than 2 per member", n)
	}
}
