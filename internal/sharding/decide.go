package sharding

import (
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// unit is what a member knows of one shard when it decides what to do with it.
type unit struct {
	// assignee is the member the leader assigned the shard to ("" when none); owner the
	// shard's owner key as the cache holds it (nil when absent), as of the cache's
	// revision seen.
	assignee string
	owner    *mvccpb.KeyValue
	seen     int64
	// gone is the token of this member's last ownership of the shard that ended: the
	// cache may still show its key for a moment, which must not be taken for a new one.
	gone int64
	// held is this member's ownership of the shard; nil when it holds none.
	held *ownership
}

// ownership is the state of a shard a member holds, as decide reads it.
type ownership struct {
	token    int64
	draining bool
	drainBy  time.Time
	inflight int
}

// self is the member deciding: its ID, its session's lease, and whether it is leaving.
type self struct {
	id      string
	lease   clientv3.LeaseID
	leaving bool
}

// action is what a member does with one shard in one pass.
type action struct {
	// adopt: the owner key is this session's, made by a claim whose answer was lost (or
	// seen before the answer): hold it under its create revision.
	adopt bool
	// claim: the shard is assigned here and has no owner.
	claim bool
	// lose: the owner key of a held shard was deleted or taken over.
	lose bool
	// drain: start draining a held shard (assigned elsewhere, or the member leaves),
	// until drainBy.
	drain   bool
	drainBy time.Time
	// release: hand the drained shard back now; idle is false when its drain timed out
	// with reconciles still in flight.
	release, idle bool
	// wake: nothing to do until then (a drain's deadline), zero when not waiting.
	wake time.Time
}

// decide is the ownership state machine of one shard: what member me does with u at now,
// given the drain timeout. It is pure.
func decide(u unit, me self, now time.Time, drainTimeout time.Duration) action {
	present := u.owner != nil
	o := u.held
	if o == nil {
		// Mine: a key of this session that this member does not hold yet (not one it has
		// released or lost, which the cache may still show for a moment).
		mine := present && string(u.owner.Value) == me.id && clientv3.LeaseID(u.owner.Lease) == me.lease && u.owner.CreateRevision != u.gone
		switch {
		case mine:
			return action{adopt: true}
		case !me.leaving && u.assignee == me.id && !present:
			return action{claim: true}
		}
		return action{} // not ours, or wait for the current owner to release it
	}
	// Lost only once the cache has seen the claim: before that, its absence says nothing.
	if u.seen >= o.token && (!present || u.owner.CreateRevision != o.token) {
		return action{lose: true}
	}
	var a action
	draining, drainBy := o.draining, o.drainBy
	if !draining && (me.leaving || u.assignee != me.id) {
		draining, drainBy = true, now.Add(drainTimeout)
		a.drain, a.drainBy = true, drainBy
	}
	if draining {
		idle, due := o.inflight == 0, !now.Before(drainBy)
		if idle || due {
			a.release, a.idle = true, idle
		} else {
			a.wake = drainBy
		}
	}
	return a
}
