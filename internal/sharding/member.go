package sharding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/gate"
	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/internal/ranges"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// maxTxnOps is how many operations one assignment transaction carries, below etcd's
// default --max-txn-ops of 128.
const maxTxnOps = 100

// Options are a manager's sharding options, validated and with their defaults set.
type Options struct {
	Shards       int
	ShardKey     func(key string) string
	DrainTimeout time.Duration
	// Ranges selects the range mode (slices the leader splits, merges and moves by the
	// members' reports, every ReportInterval, as Policy says) over the hash mode.
	Ranges         bool
	ReportInterval time.Duration
	Policy         ranges.Policy
}

// Deps is what a member needs of the replica it runs in.
type Deps struct {
	Client *clientv3.Client
	// Root is the manager's root prefix (ending in "/"); Name the manager's name, for
	// messages; ID the replica's.
	Root, Name, ID string
	// LeaseTTL is the TTL of the member's lease: a whole number of seconds.
	LeaseTTL time.Duration
	Log      logr.Logger
	// Owned is set to the number of shards owned; Handoffs counts the shards released to
	// another member.
	Owned    prometheus.Gauge
	Handoffs prometheus.Counter
	// Units is set to the number of slices of the range mode's map (nil: not kept).
	Units prometheus.Gauge
	// PredecessorWait is how long to wait for a member key held on another lease to vanish
	// (a crashed predecessor with this ID) before calling the ID a duplicate.
	PredecessorWait func(ctx context.Context, other clientv3.LeaseID) time.Duration
	// Leader returns the leading replica's ID ("" when none), for Status; nil when the
	// replica runs no election.
	Leader func(ctx context.Context) (string, error)
}

// ErrDuplicateID is returned by Run when another running replica of the manager has
// registered the same ID.
var ErrDuplicateID = errors.New("manager: replica ID in use")

// Member states, the State of a MemberInfo.
const (
	MemberActive  = "active"
	MemberLeaving = "leaving"
)

// MemberInfo is what a member registers under members/<id>.
type MemberInfo struct {
	ID      string    `json:"id"`
	Address string    `json:"address,omitempty"`
	Started time.Time `json:"started"`
	State   string    `json:"state"`
}

// sharded is a controller whose keys are sharded, with its shard key.
type sharded struct {
	c   *reconcile.Controller
	key func(string) string
}

// Member is a replica's part in the sharding protocol: its registration, its claims,
// drains and releases, its gate, and, while it leads, the assignment.
type Member struct {
	d      Deps
	o      Options
	id     string
	root   string
	log    logr.Logger
	client *clientv3.Client

	// mode is the hash or the range mode.
	mode mode
	// state caches the manager's keys (members/, assignments/, owners/, and in the range
	// mode slices and reports/, under the root).
	state            *source.Source
	poke, assignPoke chan struct{}
	synced           chan struct{} // closed once state has synced

	mu       sync.Mutex
	sess     *lease.Session
	info     MemberInfo
	held     map[int]*owned
	admitted map[int]int   // reconciles admitted per unit since the last report
	gone     map[int]int64 // token of the last ownership of each shard that ended here
	leaving  bool
	changed  chan struct{} // closed and replaced when held changes
	targets  []sharded
	// problems are the permanent errors the member's writes last met, by what they write
	// ("joining", "claiming", "releasing", "assigning"): an entry goes once that write
	// succeeds again.
	problems map[string]error
}

// New returns the member of a replica; every field of d must be set, but Leader.
func New(d Deps, o Options) (*Member, error) {
	sh := &Member{
		d: d, o: o, id: d.ID, root: d.Root, client: d.Client,
		log:        d.Log,
		poke:       make(chan struct{}, 1),
		assignPoke: make(chan struct{}, 1),
		held:       map[int]*owned{},
		admitted:   map[int]int{},
		gone:       map[int]int64{},
		changed:    make(chan struct{}),
		synced:     make(chan struct{}),
	}
	// One watch over the whole root: a revision that changes members and owners at once
	// (etcd expiring a member's lease) is seen at once.
	ours := func(e source.Event) bool {
		rest := strings.TrimPrefix(e.Key, sh.root)
		return strings.HasPrefix(rest, "members/") || strings.HasPrefix(rest, "assignments/") || strings.HasPrefix(rest, "owners/") ||
			(o.Ranges && (rest == "slices" || strings.HasPrefix(rest, "reports/")))
	}
	if o.Ranges {
		sh.mode = &rangeMode{sh: sh}
	} else {
		sh.mode = hashMode{sh: sh}
	}
	var err error
	if sh.state, err = source.New(d.Client, sh.root, source.Options{Logger: sh.log.WithName("state"), Predicates: []source.Predicate{ours}}); err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	return sh, nil
}

func (sh *Member) memberKey(id string) string { return sh.root + "members/" + id }
func (sh *Member) assignKey(s int) string     { return sh.root + "assignments/" + strconv.Itoa(s) }
func (sh *Member) ownerKey(s int) string      { return sh.root + "owners/" + strconv.Itoa(s) }

// CheckShardCount stores the shard count under the root on the first run and refuses a
// different one later: the count decides which shard every key is in.
func (sh *Member) CheckShardCount(ctx context.Context) error {
	key := sh.root + "shards"
	want := strconv.Itoa(sh.o.Shards)
	if sh.o.Ranges {
		want = "ranges"
	}
	resp, err := sh.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, want)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("sharding: reading or storing the shard count at %s: %w", key, err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || string(kvs[0].Value) == want {
		return nil
	}
	return fmt.Errorf("sharding: Sharding.Shards is %d, but manager %q has run with %s shards (stored at %s); "+
		"a different count would move every key to another shard: stop every replica and delete that key to change it",
		sh.o.Shards, sh.d.Name, kvs[0].Value, key)
}

// SetAddress sets the address the member record gives.
func (sh *Member) SetAddress(addr string) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.info.Address = addr
}

// Register adds a sharded controller; the gate it returns admits the keys of the shards
// this member owns.
func (sh *Member) Register(c *reconcile.Controller, key func(string) string) gate.Gate {
	if key == nil {
		var prefixes []string
		for _, src := range c.Sources() {
			prefixes = append(prefixes, src.Prefix())
		}
		key = sh.KeyFunc(nil, prefixes)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.targets = append(sh.targets, sharded{c: c, key: key})
	return &shardGate{sh: sh, key: key}
}

// KeyFunc returns the shard-key function of a controller: key when set, else the
// manager's ShardKey, else the mode's default for a controller watching prefixes.
func (sh *Member) KeyFunc(key func(string) string, prefixes []string) func(string) string {
	switch {
	case key != nil:
		return key
	case sh.o.ShardKey != nil:
		return sh.o.ShardKey
	}
	return sh.mode.defaultKey(prefixes)
}

// Ranged reports whether the member shards in the range mode.
func (sh *Member) Ranged() bool { return sh.o.Ranges }

// Keeps returns, for the range mode, the Keep function of a sharded controller's source
// (source.Options.Keep): it keeps the keys of the slices this member owns or is assigned,
// so that a member caches its own slices only, and an assigned slice is cached before it
// is claimed (warm). The member relists the sources it is given with Cache when it comes
// to want a slice, and evicts when it stops. key is the controller's shard-key function.
func (sh *Member) Keeps(key func(string) string) func(string) bool {
	r, ok := sh.mode.(*rangeMode)
	if !ok {
		return nil
	}
	return func(k string) bool {
		u, ok := sh.unitOf(key, k)
		return ok && r.wants(u)
	}
}

// Cache registers the sources whose Keep comes from Keeps: the member relists them when it
// comes to want a slice, and claims the slice once they have listed it.
func (sh *Member) Cache(srcs ...*source.Source) {
	if r, ok := sh.mode.(*rangeMode); ok {
		r.addSources(srcs)
	}
}

// unitOf returns the unit (shard or slice) of a key of a controller with the shard-key
// function key; false when it has none yet (the range mode before the first map).
func (sh *Member) unitOf(key func(string) string, k string) (int, bool) {
	return sh.mode.unitOf(key(k))
}

// notify wakes the member loop and the assigner.
func (sh *Member) notify() {
	for _, ch := range []chan struct{}{sh.poke, sh.assignPoke} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run is the member: it keeps a session, registers on it, and claims, drains and releases
// shards until ctx ends. A lost session drops every shard at once (their reconciles are
// cancelled) and a new session registers again. It returns ErrDuplicateID, wrapped, when
// another running replica holds this member's ID.
func (sh *Member) Run(ctx context.Context) error {
	sctx, stopState := context.WithCancel(ctx)
	watching := make(chan struct{})
	defer func() {
		stopState()
		<-watching
	}()
	go func() { // the state's watch: ends with sctx, at the end of run
		defer close(watching)
		_ = sh.state.Run(sctx, func(source.Event) { sh.notify() })
	}()
	if err := sh.state.WaitForSync(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("sharding: sharding: %w", err)
	}
	close(sh.synced)
	bo := etcdutil.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for ctx.Err() == nil {
		sess, err := sh.join(ctx)
		if errors.Is(err, ErrDuplicateID) {
			return err
		}
		if err != nil {
			d := bo.Next()
			// A refusal is retried slowly, so that a role an operator mends is picked up;
			// /readyz and etcdkit_permanent_error report it meanwhile.
			if ctx.Err() == nil && sh.report("joining", err) {
				d = sh.slowRetry()
			} else if ctx.Err() == nil {
				sh.log.Error(err, "joining failed, retrying", "after", d)
			}
			etcdutil.Sleep(ctx, d)
			continue
		}
		sh.report("joining", nil)
		bo.Reset()
		sh.serve(ctx, sess)
		cause := context.Cause(sess.Context())
		if ctx.Err() != nil {
			cause = errors.New("sharding: stopping")
		}
		sh.dropAll(cause)
		sh.mu.Lock()
		sh.sess = nil
		sh.mu.Unlock()
		if err := sess.Close(); err != nil {
			sh.log.Error(err, "ending the session")
		}
		if ctx.Err() == nil {
			sh.log.Info("session lost; every shard dropped, joining again", "cause", cause.Error())
		}
	}
	return nil
}

// report records the outcome of one kind of write: a permanent error is kept until the
// same kind succeeds (err nil) and logged at the default level; it reports whether err was
// permanent, for the caller to retry slowly.
func (sh *Member) report(what string, err error) bool {
	permanent := err != nil && etcderr.IsPermanent(err)
	sh.mu.Lock()
	if permanent {
		if sh.problems == nil {
			sh.problems = map[string]error{}
		}
		sh.problems[what] = err
	} else if err == nil {
		delete(sh.problems, what)
	}
	sh.mu.Unlock()
	if permanent {
		sh.log.Error(err, what+" refused by etcd, retrying", "after", sh.slowRetry())
	}
	return permanent
}

// slowRetry is the pause before a write that etcd refused for good is tried again: long
// enough not to flood the log, short enough to pick up a mended role soon.
func (sh *Member) slowRetry() time.Duration {
	return sh.d.LeaseTTL
}

// Err is the permanent error that keeps this member from sharding: the state's watch
// refused, or a write refused (the first by kind).
func (sh *Member) Err() error {
	if err := sh.state.Err(); err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, what := range []string{"joining", "claiming", "releasing", "assigning"} {
		if err := sh.problems[what]; err != nil {
			return err
		}
	}
	return nil
}

// join grants a session and registers the member on it. When the member key exists on
// another lease, it waits up to that lease's TTL and a second for it to vanish (a crashed
// predecessor with this ID); a key still kept alive after that belongs to a running
// replica: ErrDuplicateID.
func (sh *Member) join(ctx context.Context) (*lease.Session, error) {
	// LeaseTTL is a whole number of seconds: Options.setDefaults checked it.
	sess, err := lease.Grant(ctx, sh.client, int(sh.d.LeaseTTL/time.Second), sh.log)
	if err != nil {
		return nil, err
	}
	// The keep-alive ends when the session does: every session granted here is closed,
	// by fail below or by run once it is lost or run ends, and Close waits for it.
	go sess.KeepAlive()
	fail := func(err error) (*lease.Session, error) {
		_ = sess.Close()
		return nil, err
	}
	key := sh.memberKey(sh.id)
	var giveUp time.Time
	for {
		sh.mu.Lock()
		info := sh.info
		info.ID = sh.id
		if info.Started.IsZero() {
			info.Started = time.Now().UTC()
		}
		info.State = MemberActive
		if sh.leaving {
			info.State = MemberLeaving
		}
		sh.info = info
		sh.mu.Unlock()
		val, _ := json.Marshal(info)
		resp, err := sh.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(sess.ID()))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return fail(fmt.Errorf("sharding: registering member %s: %w", key, err))
		}
		if resp.Succeeded {
			// Act only on a cache that holds at least what etcd held at the registration:
			// a member back from a pause does not claim on what it saw before.
			wctx, cancel := etcdutil.Bound(ctx, sess.Context())
			err := sh.state.WaitForRevision(wctx, resp.Header.Revision)
			cancel()
			if err != nil {
				return fail(fmt.Errorf("sharding: waiting for the sharding state to catch up: %w", err))
			}
			sh.mu.Lock()
			sh.sess = sess
			sh.mu.Unlock()
			sh.log.Info("joined", "lease", fmt.Sprintf("%x", sess.ID()), "ttl", sess.TTL())
			return sess, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted in between
		}
		other := clientv3.LeaseID(kvs[0].Lease)
		now := time.Now()
		if giveUp.IsZero() {
			wait := sh.d.PredecessorWait(ctx, other)
			giveUp = now.Add(wait)
			sh.log.Info("member ID registered on another lease; waiting for it to expire", "lease", fmt.Sprintf("%x", other), "upTo", wait)
		}
		if now.After(giveUp) {
			return fail(fmt.Errorf("%w: %q is registered at %s by a running replica (lease %x is kept alive); give every replica its own ID",
				ErrDuplicateID, sh.id, key, int64(other)))
		}
		t := time.NewTimer(time.Until(giveUp))
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(ctx.Err())
		case <-sh.poke:
		case <-t.C:
		}
		t.Stop()
	}
}

// Synced is closed once the member's cache of the sharding state has synced.
func (sh *Member) Synced() <-chan struct{} { return sh.synced }
