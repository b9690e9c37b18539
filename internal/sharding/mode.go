package sharding

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/shard"
)

// mode is what differs between the hash mode (a fixed number of shards, a key's shard a
// hash of its shard key) and the range mode (slices of slice-key values that the leader
// splits, merges and moves): the units a member owns, the unit of a key, what a claim
// must check, the leader's assignment, and the status. Membership, claims, fencing,
// drains and releases are shared.
type mode interface {
	// units returns the IDs of the units a member considers in a pass.
	units() []int
	// unitOf returns the unit of a shard key (a key mapped by its controller's shard-key
	// function); false when the key has none yet.
	unitOf(sk string) (int, bool)
	// claimable reports whether unit u may be claimed now, and cmps the comparisons a
	// claim of it carries.
	claimable(u int) bool
	claimCmps() []clientv3.Cmp
	// writeAssignment computes the leader's assignment and writes what changed, guarded by
	// fc; it returns the revision of its last write (0 when nothing changed).
	writeAssignment(ctx context.Context, fc fence.Fence) (int64, error)
	// fill adds the mode's part of a member's status.
	fill(st *Status)
	// defaultKey returns the shard-key function of a controller that gives none, given
	// the prefixes of its sources.
	defaultKey(prefixes []string) func(string) string
	// begin starts a member's pass; wakeAt is when the pass must run again without a
	// change (zero: no need).
	begin()
	wakeAt() time.Time
}

// hashMode is the hash mode: shards 0..Shards-1, a key's shard fnv1a64(shard key) mod
// Shards, assigned by rendezvous hashing with caps (shard.Assign).
type hashMode struct{ sh *Member }

func (h hashMode) units() []int {
	out := make([]int, h.sh.o.Shards)
	for i := range out {
		out[i] = i
	}
	return out
}

func (h hashMode) unitOf(sk string) (int, bool) { return shard.Of(sk, h.sh.o.Shards), true }
func (h hashMode) claimable(int) bool           { return true }
func (h hashMode) begin()                       {}
func (h hashMode) wakeAt() time.Time            { return time.Time{} }
func (h hashMode) claimCmps() []clientv3.Cmp    { return nil }

func (h hashMode) defaultKey([]string) func(string) string {
	return h.sh.o.ShardKey
}

// suffixSegment returns the default slice key of the range mode: the first path segment
// of a key's suffix below the longest of prefixes it lies under (the key itself below
// none).
func suffixSegment(prefixes []string) func(string) string {
	return func(key string) string {
		best := ""
		for _, p := range prefixes {
			if strings.HasPrefix(key, p) && len(p) > len(best) {
				best = p
			}
		}
		rest := key[len(best):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[:i]
		}
		return rest
	}
}

// fill sets the assignment and owner of every shard.
func (h hashMode) fill(st *Status) {
	sh := h.sh
	st.Assignment = make([]string, sh.o.Shards)
	for s, m := range sh.currentAssignment() {
		st.Assignment[s] = m
	}
	st.Owners = make([]string, sh.o.Shards)
	for s := range st.Owners {
		if kv, ok := sh.state.Get(sh.ownerKey(s)); ok {
			st.Owners[s] = string(kv.Value)
		}
	}
}
