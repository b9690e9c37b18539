package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/internal/ranges"
	"github.com/etcdkit/etcdkit/internal/shard"
	"github.com/etcdkit/etcdkit/internal/sharding"
)

// Defaults and limits of ShardingOptions.
const (
	DefaultShards         = 64
	DefaultDrainTimeout   = 10 * time.Second
	DefaultReportInterval = 2 * time.Second
	// MaxShards is the largest shard count a manager accepts.
	MaxShards = 4096
)

// ShardMode is how a sharded manager divides its keys among its members.
type ShardMode int

const (
	// HashShards divides the keys into a fixed number of shards: a key's shard is
	// fnv1a64(ShardKey(key)) % Shards. The leader spreads the shards evenly over the
	// members, moving as few as it can.
	HashShards ShardMode = iota
	// RangeShards divides the keys into slices: contiguous ranges [lo, hi) of slice keys
	// (ShardKey; by default the first path segment of a key's suffix below its
	// controller's watched prefix, so that /jobs/x and /status/x fall in one slice, and
	// x/a and x/b too). Members report every ReportInterval how many keys and reconciles
	// each slice they own has; the leader splits a slice well above a member's share at
	// its median slice key, merges light neighbours, and balances the members by keys and
	// load with as few moves as it can. A split or merge ends the old slice's ownership
	// (its writes are fenced) before any part of it is claimed.
	//
	// A range-sharded controller's watches have sources of their own that cache the keys
	// of this member's slices only (owned, or assigned and about to be claimed): see
	// ShardStatus.CachedKeys. In this release each member still watches every key of the
	// prefixes and drops the others' events itself, and lists the prefix again when it is
	// given a slice.
	RangeShards
)

// ShardingOptions spread the keys of a manager's controllers over its replicas: each key
// belongs to a shard (Mode says how), the leader assigns shards to members, each member
// reconciles the keys of the shards it owns, and every write made through store in a
// reconcile carries the shard's fence.
type ShardingOptions struct {
	// Mode is HashShards (the default) or RangeShards. It must stay the same across runs
	// of a manager, as Shards must.
	Mode ShardMode
	// Shards is the number of shards of the hash mode. Default (0) DefaultShards; at most
	// MaxShards. It must stay the same across runs of a manager: New refuses a count that
	// differs from the one stored under the manager's root. The range mode has no count:
	// leave it 0.
	Shards int
	// ShardKey maps a request's key to its shard key: in the hash mode the string that
	// is hashed (default: the key itself), in the range mode its slice key (default: the
	// first path segment below the controller's watched prefix). A function that keeps
	// related keys together puts them in one shard. A controller may set its own
	// (Builder.ShardKey).
	ShardKey func(key string) string
	// ReportInterval is how often a member of the range mode reports its slices' keys and
	// load to the leader. Default DefaultReportInterval (2 s).
	ReportInterval time.Duration
	// DrainTimeout bounds how long a member waits for the reconciles in flight of a shard
	// it hands over before it cancels them and releases the shard (their writes fail,
	// fenced, from then on). Default 10 s.
	DrainTimeout time.Duration
}

func (o *ShardingOptions) setDefaults() error {
	switch o.Mode {
	case HashShards:
	case RangeShards:
		if o.Shards != 0 {
			return fmt.Errorf("manager: Sharding.Shards is %d, but the range mode has no shard count: leave it 0", o.Shards)
		}
		if o.ReportInterval < 0 {
			return fmt.Errorf("manager: Sharding.ReportInterval must not be negative, got %s", o.ReportInterval)
		}
		if o.ReportInterval == 0 {
			o.ReportInterval = DefaultReportInterval
		}
	default:
		return fmt.Errorf("manager: Sharding.Mode %d is neither HashShards nor RangeShards", o.Mode)
	}
	if o.Shards < 0 || o.Shards > MaxShards {
		return fmt.Errorf("manager: Sharding.Shards must be between 1 and %d (0 for the default %d), got %d", MaxShards, DefaultShards, o.Shards)
	}
	if o.Shards == 0 && o.Mode == HashShards {
		o.Shards = DefaultShards
	}
	if o.DrainTimeout < 0 {
		return fmt.Errorf("manager: Sharding.DrainTimeout must not be negative, got %s", o.DrainTimeout)
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.ShardKey == nil && o.Mode == HashShards {
		o.ShardKey = func(key string) string { return key }
	}
	return nil
}

// ErrDuplicateID is returned by Start when another running replica of the manager has
// registered the same ID (sharded) or campaigns under it (leader-only).
var ErrDuplicateID = sharding.ErrDuplicateID

// Member states, the State of a MemberInfo.
const (
	MemberActive  = sharding.MemberActive
	MemberLeaving = sharding.MemberLeaving
)

// MemberInfo is what a member registers under members/<id>: its ID, the address it serves
// its probes and /debug/shards on, when it started, and its state (MemberActive or
// MemberLeaving).
type MemberInfo = sharding.MemberInfo

// Shard is the shard a sharded controller's reconcile runs for: its ID, in [0, Shards),
// and its Token, the create revision of owners/<ID> while this member owns it, which is
// the fence its writes carry.
type Shard = sharding.Shard

// ShardFrom returns the shard of a reconcile's context, when a sharded controller runs it.
func ShardFrom(ctx context.Context) (Shard, bool) { return sharding.ShardFrom(ctx) }

// ShardStatus is a member's view of the sharding, as /debug/shards serves it: the
// members, the assignment and owner of every shard, the shards this member owns (with
// their tokens, drains and reconciles in flight) and its queue depth by shard. Its Settled
// method reports whether the sharding is at rest: every shard assigned, owned by its
// assignee and not draining, and the assignment balanced.
type ShardStatus = sharding.Status

// SliceStatus is one slice of the range mode, in a ShardStatus: its ID and bounds [Lo, Hi)
// of slice keys (Hi "" is no bound), whether a split or merge replaced it (its owner has
// not released it yet), its assigned member and owner, and its owner's last report of its
// keys and load (reconciles per second).
type SliceStatus = sharding.SliceStatus

// OwnedShard is one shard a member owns, in its ShardStatus: the shard, its token (shards
// claimed in one transaction share one; a token is unique per shard over time), since
// when, whether it drains, and its reconciles in flight.
type OwnedShard = sharding.OwnedShard

// ShardOf returns the shard of a key among shards shards (shards > 0), given the key's
// shard key (the key itself unless a ShardKey function maps it): fnv1a64(key) % shards.
func ShardOf(shardKey string, shards int) int {
	if shards <= 0 {
		return 0
	}
	return shard.Of(shardKey, shards)
}

// newSharder returns the replica's sharding member, given the validated options.
func newSharder(m *Manager, opts ShardingOptions) (*sharding.Member, error) {
	d := sharding.Deps{
		Client:          m.client,
		Root:            m.opts.RootPrefix,
		Name:            m.opts.Name,
		ID:              m.opts.ID,
		LeaseTTL:        m.opts.LeaseTTL,
		Log:             m.log.WithName("sharding"),
		Owned:           m.metrics.ShardsOwned,
		Handoffs:        m.metrics.ShardHandoffs,
		Units:           m.metrics.Shards,
		PredecessorWait: m.predecessorWait,
	}
	if e := m.election; e != nil {
		d.Leader = func(ctx context.Context) (string, error) {
			id, err := e.GetLeader(ctx)
			if errors.Is(err, election.ErrNoLeader) {
				return "", nil
			}
			return id, err
		}
	}
	sh, err := sharding.New(d, sharding.Options{
		Shards: opts.Shards, ShardKey: opts.ShardKey, DrainTimeout: opts.DrainTimeout,
		Ranges: opts.Mode == RangeShards, ReportInterval: opts.ReportInterval,
		// A slice is split or merged once its owner has reported it three times.
		Policy: ranges.Policy{MinAge: 3 * opts.ReportInterval.Seconds()},
	})
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	return sh, nil
}
