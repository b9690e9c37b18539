package shard

import (
	"fmt"
	"math/rand"
	"testing"
)

func asMap(a []string) map[int]string {
	m := make(map[int]string, len(a))
	for s, mem := range a {
		if mem != "" {
			m[s] = mem
		}
	}
	return m
}

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%d", i)
	}
	return out
}

// checkBalanced fails unless every member holds floor(S/N) or ceil(S/N) shards and every
// shard has a member.
func checkBalanced(t *testing.T, shards int, ms []string, a []string) {
	t.Helper()
	count := map[string]int{}
	for s, m := range a {
		if m == "" {
			t.Fatalf("shard %d unassigned with %d members", s, len(ms))
		}
		count[m]++
	}
	lo, hi := shards/len(ms), (shards+len(ms)-1)/len(ms)
	for _, m := range ms {
		if count[m] < lo || count[m] > hi {
			t.Fatalf("member %s holds %d shards, want %d..%d (S=%d N=%d)", m, count[m], lo, hi, shards, len(ms))
		}
	}
}

func TestOfIsStableAndInRange(t *testing.T) {
	for _, tc := range []struct {
		key  string
		n    int
		want int
	}{
		{"/jobs/a", 64, Of("/jobs/a", 64)},
		{"", 1, 0},
	} {
		if got := Of(tc.key, tc.n); got != tc.want || got < 0 || got >= tc.n {
			t.Errorf("Of(%q, %d) = %d", tc.key, tc.n, got)
		}
	}
	// fnv1a64 of "a" is 0xaf63dc4c8601ec8c: the shard function is part of the keyspace.
	if got := Of("a", 1000); got != int(uint64(0xaf63dc4c8601ec8c)%1000) {
		t.Errorf("Of(a, 1000) = %d: the shard function changed", got)
	}
}

func TestAssignEdgeCases(t *testing.T) {
	if a := Assign(4, nil, nil); len(a) != 4 || a[0] != "" {
		t.Fatalf("no members: want 4 unassigned shards, got %q", a)
	}
	if a := Assign(0, members(2), nil); len(a) != 0 {
		t.Fatalf("no shards: want none, got %q", a)
	}
	a := Assign(3, []string{"b", "a", "a", ""}, nil)
	checkBalanced(t, 3, []string{"a", "b"}, a)
}

// TestAssignProperties runs random histories of joins and leaves and checks, at every
// step, balance, minimal movement and determinism.
func TestAssignProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for trial := 0; trial < 300; trial++ {
		shards := 1 + rng.Intn(200)
		next := 0
		var live []string
		join := func() string {
			m := fmt.Sprintf("member-%d", next)
			next++
			live = append(live, m)
			return m
		}
		for i := 0; i < 1+rng.Intn(5); i++ {
			join()
		}
		cur := asMap(Assign(shards, live, nil))
		checkBalanced(t, shards, live, Assign(shards, live, nil))
		for step := 0; step < 10; step++ {
			before := cur
			// The optimum: a leave moves exactly the leaver's shards; a join moves exactly
			// floor(S/N) shards, all to the newcomer.
			var optimum int
			var leaver, newcomer string
			if len(live) > 1 && rng.Intn(2) == 0 {
				i := rng.Intn(len(live))
				leaver = live[i]
				live = append(live[:i:i], live[i+1:]...)
				for _, m := range before {
					if m == leaver {
						optimum++
					}
				}
			} else {
				newcomer = join()
				optimum = shards / len(live)
			}
			after := Assign(shards, live, before)
			checkBalanced(t, shards, live, after)
			if moves := Moves(before, after); moves != optimum {
				t.Fatalf("trial %d step %d (S=%d N=%d): %d moves, optimum %d", trial, step, shards, len(live), moves, optimum)
			}
			for s, m := range after {
				if before[s] == m {
					continue
				}
				if (leaver != "" && before[s] != leaver) || (newcomer != "" && m != newcomer) {
					t.Fatalf("shard %d moved from %q to %q, which neither the leave of %q nor the join of %q needs", s, before[s], m, leaver, newcomer)
				}
			}
			// Deterministic, whatever the order of the members.
			shuffled := append([]string(nil), live...)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			again := Assign(shards, shuffled, before)
			for s := range after {
				if after[s] != again[s] {
					t.Fatalf("not deterministic: shard %d went to %s and to %s", s, after[s], again[s])
				}
			}
			// Stable: assigning again from the result changes nothing.
			if m := Moves(asMap(after), Assign(shards, live, asMap(after))); m != 0 {
				t.Fatalf("a second pass moved %d shards", m)
			}
			cur = asMap(after)
		}
	}
}
