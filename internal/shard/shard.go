package shard

import (
	"hash/fnv"
	"sort"
	"strconv"
)

// Of returns the shard of a key among n shards (n > 0): fnv1a64(key) mod n.
func Of(key string, n int) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum64() % uint64(n))
}

// weight is the rendezvous weight of member m for shard s: of the members with room, the
// one with the highest weight takes a free shard.
func weight(s int, m string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(strconv.Itoa(s)))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(m))
	return h.Sum64()
}

// Assign computes the target assignment of shards 0..shards-1 to members, given the
// current one (shard -> member; absent or "" for unassigned). It is
//   - balanced: every member gets floor(S/N) or ceil(S/N) shards;
//   - sticky: a shard stays with its member while that member is in members and under
//     its cap, so a leave moves only the leaver's shards and a join moves only what the
//     newcomer must take;
//   - deterministic: the same shards, set of members and current assignment give the same
//     result, whatever the order of members.
//
// Members not in members (dead or leaving) lose their shards. With no member, every shard
// is unassigned (""). The result has one entry per shard.
func Assign(shards int, members []string, current map[int]string) []string {
	out := make([]string, shards)
	if shards <= 0 || len(members) == 0 {
		return out
	}
	ms := append([]string(nil), members...)
	sort.Strings(ms)
	ms = dedupe(ms)
	active := make(map[string]bool, len(ms))
	for _, m := range ms {
		active[m] = true
	}

	// What each live member holds now.
	held := make(map[string][]int, len(ms))
	for s := 0; s < shards; s++ {
		if m, ok := current[s]; ok && active[m] {
			held[m] = append(held[m], s)
		}
	}

	// Caps: floor(S/N) each, and one more for S mod N members, given to those that hold
	// the most already (ties by name), so that as few shards as possible move.
	base, extra := shards/len(ms), shards%len(ms)
	byLoad := append([]string(nil), ms...)
	sort.SliceStable(byLoad, func(i, j int) bool { return len(held[byLoad[i]]) > len(held[byLoad[j]]) })
	capOf := make(map[string]int, len(ms))
	for i, m := range byLoad {
		capOf[m] = base
		if i < extra {
			capOf[m]++
		}
	}

	// Members over their cap keep the shards they weigh highest and free the rest.
	count := make(map[string]int, len(ms))
	for _, m := range ms {
		keep := held[m]
		if len(keep) > capOf[m] {
			sort.Slice(keep, func(i, j int) bool { return weight(keep[i], m) > weight(keep[j], m) })
			keep = keep[:capOf[m]]
		}
		for _, s := range keep {
			out[s] = m
		}
		count[m] = len(keep)
	}

	// Free shards go, in shard order, to the member with room that weighs them highest.
	for s := 0; s < shards; s++ {
		if out[s] != "" {
			continue
		}
		best, bestW := "", uint64(0)
		for _, m := range ms {
			if count[m] >= capOf[m] {
				continue
			}
			if w := weight(s, m); best == "" || w > bestW {
				best, bestW = m, w
			}
		}
		out[s] = best
		count[best]++
	}
	return out
}

func dedupe(sorted []string) []string {
	out := sorted[:0]
	for i, m := range sorted {
		if m == "" || (i > 0 && m == sorted[i-1]) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// Moves counts the shards whose member differs between two assignments.
func Moves(before map[int]string, after []string) int {
	n := 0
	for s, m := range after {
		if before[s] != m {
			n++
		}
	}
	return n
}
