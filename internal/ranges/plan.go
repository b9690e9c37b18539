package ranges

import (
	"slices"
	"sort"
)

// Stats is what the owner of a slice reports of it.
type Stats struct {
	// Keys is how many keys of the slice the owner caches (over every watched prefix);
	// Load its reconciles per second, smoothed.
	Keys int     `json:"keys"`
	Load float64 `json:"load"`
	// SplitAt is a slice key strictly inside the slice that cuts its keys about in half
	// (their median slice key); "" when the slice holds one slice key and cannot be cut.
	SplitAt string `json:"splitAt,omitempty"`
	// Age is how long, in seconds, the reporting member has owned the slice.
	Age float64 `json:"age"`
}

// Policy tunes Plan. The zero value takes the defaults.
type Policy struct {
	// Split: a slice heavier than this fraction of a member's fair share of the weight is
	// split at its SplitAt (default 0.5), so that members can be balanced within about
	// that much.
	Split float64
	// Merge: two neighbouring slices lighter together than this fraction of a member's
	// share are merged (default 0.1), so that slices do not multiply without need.
	Merge float64
	// Tolerance: a member more than this fraction over its share gives slices to the least
	// loaded member (default 0.15).
	Tolerance float64
	// MaxSlices caps the slice count (default 1024); MinSlices is kept per member (default
	// 2), so that every member can be given some.
	MaxSlices, MinSlices int
	// MinAge is how long, in seconds, a slice must have been owned by its reporter before
	// it is split or merged (default 5): its figures are those of a settled owner, and a
	// slice just made is not changed again at once.
	MinAge float64
	// LoadFloor damps the load's part of the weight while the total load is low (default
	// 200 reconciles per second): it counts for load/(load+LoadFloor) of its share, so that
	// a few reconciles do not make a slice look hot.
	LoadFloor float64
}

func (p Policy) withDefaults() Policy {
	if p.Split <= 0 {
		p.Split = 0.5
	}
	if p.Merge <= 0 {
		p.Merge = 0.1
	}
	if p.Tolerance <= 0 {
		p.Tolerance = 0.15
	}
	if p.MaxSlices <= 0 {
		p.MaxSlices = 1024
	}
	if p.MinSlices <= 0 {
		p.MinSlices = 2
	}
	if p.MinAge <= 0 {
		p.MinAge = 5
	}
	if p.LoadFloor <= 0 {
		p.LoadFloor = 200
	}
	return p
}

// Change is one change of the slice map a plan makes: a split of From into Into[0] and
// Into[1], or a merge of From and Other into Into[0].
type Change struct {
	Split bool
	From  int64
	Other int64
	Into  []Slice
}

// Plan is the leader's decision: the next slice map, the member of every slice, and the
// changes that lead there from the current map.
type Plan struct {
	Map     Map
	Assign  map[int64]string
	Changes []Change
	// Moves counts the slices of the current map (or their parts) given to another member.
	Moves int
}

// weights returns each slice's share of the keys plus its share of the load, the latter
// damped by load/(load+floor).
func weights(m Map, stats map[int64]Stats, floor float64) map[int64]float64 {
	var keys, load float64
	for _, s := range m.Slices {
		keys += float64(stats[s.ID].Keys)
		load += stats[s.ID].Load
	}
	w := make(map[int64]float64, len(m.Slices))
	for _, s := range m.Slices {
		st := stats[s.ID]
		if keys > 0 {
			w[s.ID] += float64(st.Keys) / keys
		}
		if load > 0 {
			w[s.ID] += st.Load / load * load / (load + floor)
		}
	}
	return w
}

// Decide computes the next plan from the current map, the owners' reports, the active
// members and the current assignment (slice ID to member; a member not in members is
// gone). It splits slices heavier than Policy.Split of a member's share (the heaviest
// first, at most one change per member per plan), merges light neighbours, and then
// balances the members by weight with as few moves as it can: a slice
// stays with its member unless that member is over its share by more than the
// tolerance. The parts of a split go to the member of the slice they came from, and a
// merged slice to the member of its heavier part: they already cache (most of) its keys. Decide is pure and deterministic.
func Decide(m Map, stats map[int64]Stats, members []string, current map[int64]string, p Policy) Plan {
	p = p.withDefaults()
	ms := slices.Clone(members)
	sort.Strings(ms)
	ms = slices.Compact(ms)
	active := map[string]bool{}
	for _, id := range ms {
		if id != "" {
			active[id] = true
		}
	}
	plan := Plan{Map: m, Assign: map[int64]string{}}
	for _, s := range m.Slices {
		if o := current[s.ID]; active[o] {
			plan.Assign[s.ID] = o
		}
	}
	if len(active) == 0 {
		plan.Assign = map[int64]string{}
		return plan
	}
	w := weights(m, stats, p.LoadFloor)
	settled := func(id int64) bool {
		st, ok := stats[id]
		return ok && st.Age >= p.MinAge
	}
	share := 0.0
	for _, x := range w {
		share += x
	}
	share /= float64(len(active))

	// Splits: heaviest first, while the map may grow.
	budget := len(active)
	byWeight := slices.Clone(m.Slices)
	sort.SliceStable(byWeight, func(i, j int) bool {
		if w[byWeight[i].ID] != w[byWeight[j].ID] {
			return w[byWeight[i].ID] > w[byWeight[j].ID]
		}
		return byWeight[i].ID < byWeight[j].ID
	})
	for _, s := range byWeight {
		few := len(plan.Map.Slices) < p.MinSlices*len(active)
		heavy := share > 0 && w[s.ID] > p.Split*share
		// Too few slices to give every member some: split those above a MinSlices-th of a
		// share, not slivers.
		few = few && w[s.ID] > 0 && w[s.ID] >= share/float64(p.MinSlices)
		if budget == 0 || len(plan.Map.Slices) >= p.MaxSlices || !settled(s.ID) || !(heavy || few) {
			continue
		}
		at := stats[s.ID].SplitAt
		next, parts, err := plan.Map.Split(s.ID, at)
		if err != nil {
			continue // one slice key, or a stale report: cannot be cut
		}
		plan.Map = next
		plan.Changes = append(plan.Changes, Change{Split: true, From: s.ID, Into: parts[:]})
		owner := plan.Assign[s.ID]
		delete(plan.Assign, s.ID)
		for _, part := range parts {
			w[part.ID] = w[s.ID] / 2
			if owner != "" {
				plan.Assign[part.ID] = owner
			}
		}
		delete(w, s.ID)
		budget--
	}

	// Merges: light neighbours, left to right, none just made by a split.
	fresh := map[int64]bool{}
	for _, c := range plan.Changes {
		for _, part := range c.Into {
			fresh[part.ID] = true
		}
	}
	for i := 0; i+1 < len(plan.Map.Slices) && budget > 0; i++ {
		a, b := plan.Map.Slices[i], plan.Map.Slices[i+1]
		if len(plan.Map.Slices) <= p.MinSlices*len(active) {
			break
		}
		if fresh[a.ID] || fresh[b.ID] || !settled(a.ID) || !settled(b.ID) || w[a.ID]+w[b.ID] >= p.Merge*share {
			continue // a slice not reported yet (just made) may be anything but light
		}
		next, joined, err := plan.Map.Merge(a.ID, b.ID)
		if err != nil {
			continue
		}
		plan.Map = next
		plan.Changes = append(plan.Changes, Change{From: a.ID, Other: b.ID, Into: []Slice{joined}})
		// The merged slice stays with the member of the heavier part, which caches most of
		// its keys; the lighter part moves, if its member differs.
		keep, other := a, b
		if w[b.ID] > w[a.ID] {
			keep, other = b, a
		}
		if owner := plan.Assign[keep.ID]; owner != "" {
			plan.Assign[joined.ID] = owner
			if o := plan.Assign[other.ID]; o != "" && o != owner {
				plan.Moves++
			}
		}
		w[joined.ID] = w[a.ID] + w[b.ID]
		delete(plan.Assign, a.ID)
		delete(plan.Assign, b.ID)
		fresh[joined.ID] = true
		budget--
	}

	plan.Moves += balance(plan.Map, w, ms, active, plan.Assign, share, p.Tolerance)
	return plan
}

// balance assigns the unassigned slices and moves slices off members over their share,
// changing assign in place; it returns how many assigned slices it moved.
func balance(m Map, w map[int64]float64, members []string, active map[string]bool, assign map[int64]string, share, tol float64) int {
	load := map[string]float64{}
	count := map[string]int{}
	for _, id := range members {
		if active[id] {
			load[id], count[id] = 0, 0
		}
	}
	var free []Slice
	for _, s := range m.Slices {
		if o, ok := assign[s.ID]; ok {
			load[o] += w[s.ID]
			count[o]++
		} else {
			free = append(free, s)
		}
	}
	least := func(except string) string {
		best := ""
		for _, id := range members {
			if !active[id] || id == except {
				continue
			}
			if best == "" || load[id] < load[best] || (load[id] == load[best] && count[id] < count[best]) {
				best = id
			}
		}
		return best
	}
	sort.SliceStable(free, func(i, j int) bool { return w[free[i].ID] > w[free[j].ID] })
	for _, s := range free {
		to := least("")
		assign[s.ID] = to
		load[to] += w[s.ID]
		count[to]++
	}
	moves := 0
	for range len(m.Slices) {
		// The most loaded member over its share gives the slice that best evens it with the
		// least loaded one, lighter than their gap and leaving the receiver within half the
		// tolerance: a move never makes another member one to move from, and figures that
		// drift a little do not move a slice back.
		from := ""
		for _, id := range members {
			if active[id] && (from == "" || load[id] > load[from]) {
				from = id
			}
		}
		to := least(from)
		if to == "" || load[from] <= share*(1+tol) {
			break
		}
		gap := load[from] - load[to]
		var pick *Slice
		best := gap
		for i, s := range m.Slices {
			if assign[s.ID] != from || w[s.ID] >= gap || load[to]+w[s.ID] > share*(1+tol/2) {
				continue
			}
			if after := abs(gap - 2*w[s.ID]); after < best {
				best, pick = after, &m.Slices[i]
			}
		}
		if pick == nil {
			break
		}
		assign[pick.ID] = to
		load[from] -= w[pick.ID]
		load[to] += w[pick.ID]
		count[from]--
		count[to]++
		moves++
	}
	return moves
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
