package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// The sharded example's sizes: few shards, so that the printed map stays readable.
const (
	shardedMembers = 3
	shardedShards  = 8
	shardedItems   = 24
	// shardedWaitFor bounds each wait of the example for a condition.
	shardedWaitFor = 10 * time.Second
)

// itemStatus is what the sharded controller writes under status/<item>: who reconciled the
// item, in which shard, under which fencing token, and which revision of the item it saw.
type itemStatus struct {
	Member       string `json:"member"`
	Shard        int    `json:"shard"`
	Token        int64  `json:"token"`
	ItemRevision int64  `json:"itemRevision"`
}

// itemReconciler is one member's reconciler: it records in the item's status that this
// member reconciled it. Its writes go through store, so each carries the shard's fence.
type itemReconciler struct {
	id          string
	cli         *clientv3.Client
	itemsPrefix string
	statuses    *store.Store[itemStatus]
	reconciled  atomic.Int64
}

func (r *itemReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	sh, ok := manager.ShardFrom(ctx)
	if !ok {
		return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("%s: not run by a sharded controller", req.Key))
	}
	statusKey := r.statuses.Key(strings.TrimPrefix(req.Key, r.itemsPrefix))
	item, err := r.cli.Get(ctx, req.Key)
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(item.Kvs) == 0 {
		return reconcile.Result{}, r.statuses.Delete(ctx, statusKey, 0)
	}
	want := itemStatus{Member: r.id, Shard: sh.ID, Token: sh.Token, ItemRevision: item.Kvs[0].ModRevision}
	cur, err := r.statuses.Get(ctx, statusKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = r.statuses.Create(ctx, statusKey, &want)
	case err != nil:
	case cur.Value != want:
		_, err = r.statuses.Update(ctx, statusKey, &want, cur.ModRevision)
	}
	// A write after the shard moved on fails with fence.ErrFenced and is not retried here:
	// the key is no longer this member's, and its new owner reconciles it.
	if err == nil {
		r.reconciled.Add(1)
	}
	return reconcile.Result{}, err
}

// shardedMember is one replica: its own client (so its own session), manager, metrics and
// reconciler, and the result of its Start once it returns.
type shardedMember struct {
	id   string
	cli  *clientv3.Client
	mgr  *manager.Manager
	reg  *prometheus.Registry
	r    *itemReconciler
	stop context.CancelFunc
	done chan error // receives Start's result
	// exited is set until Start runs and once it has returned, with its error.
	exited bool
	err    error
}

// running reports whether Start has not returned yet; it notices a return without waiting.
func (m *shardedMember) running() bool {
	if m.exited {
		return false
	}
	select {
	case m.err = <-m.done:
		m.exited = true
		return false
	default:
		return true
	}
}

// shutdown cancels Start's context and waits up to timeout for Start to return.
func (m *shardedMember) shutdown(timeout time.Duration) error {
	m.stop()
	if m.exited {
		return m.err
	}
	select {
	case m.err = <-m.done:
		m.exited = true
		return m.err
	case <-time.After(timeout):
		return fmt.Errorf("%s: Start did not return within %s of its context's end", m.id, timeout)
	}
}

// runSharded runs one sharded controller in three managers of one process, each with its
// own client and session: the leader assigns the shards, each member reconciles the items
// of the shards it owns (writes fenced by the shard), and a member that leaves hands its
// shards over to the others before it stops.
func runSharded(ctx context.Context, e *env) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	itemsPrefix, statusPrefix := e.key("items/"), e.key("status/")
	// The name and the root are the run's own, so that runs and terminals do not meet.
	name := strings.ReplaceAll(strings.Trim(e.prefix, "/"), "/", ".")

	members, closeAll, err := newShardedMembers(e, name, itemsPrefix, statusPrefix,
		&manager.ShardingOptions{Shards: shardedShards, DrainTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeAll()) }()

	for i := 0; i < shardedItems; i++ {
		if _, err := e.client.Put(ctx, fmt.Sprintf("%sitem-%02d", itemsPrefix, i), "v1"); err != nil {
			return err
		}
	}
	start := time.Now()
	for _, m := range members {
		runCtx, stop := context.WithCancel(ctx)
		m.stop, m.exited = stop, false
		// Start belongs to the member: it returns after runCtx ends (shutdown) and the
		// member has drained and released its shards.
		go func() { m.done <- m.mgr.Start(runCtx) }()
	}
	e.say("wrote %d items under %s; started %d managers %q (own client each, lease TTL 2s, %d shards)",
		shardedItems, e.rel(itemsPrefix), shardedMembers, name, shardedShards)

	view, err := shardedSettle(ctx, members)
	if err != nil {
		return err
	}
	if err := shardedConverged(ctx, e, itemsPrefix, statusPrefix, view); err != nil {
		return err
	}
	e.say("settled %s after the start: %s leads, every shard owned by its assignee, every item's status written by its shard's owner",
		electionMs(time.Since(start)), view.leader)
	counts, err := shardedCounts(ctx, e, statusPrefix)
	if err != nil {
		return err
	}
	e.say("shard map: %s", view.table(counts))
	for _, m := range members {
		e.say("  %s: %s", m.id, view.memberLine(m.id, counts))
	}
	if err := shardedDebug(ctx, e, members[0]); err != nil {
		return err
	}

	// The leader leaves: it marks itself leaving, assigns its own shards to the others,
	// drains and releases them, and only then resigns.
	var leaving *shardedMember
	for _, m := range members {
		if m.id == view.leader {
			leaving = m
		}
	}
	if err := expect(leaving != nil, "the leader %q to be one of the members", view.leader); err != nil {
		return err
	}
	stopped := time.Now()
	if err := leaving.shutdown(15 * time.Second); err != nil {
		return err
	}
	returned := time.Since(stopped)
	after, err := shardedSettle(ctx, members)
	if err != nil {
		return err
	}
	var moves []string
	for s := 0; s < shardedShards; s++ {
		if view.owner[s] == leaving.id {
			moves = append(moves, fmt.Sprintf("%d->%s (+%s)", s, after.owner[s], electionMs(after.since[s].Sub(stopped))))
		}
	}
	e.say("%s (the leader) stopped gracefully: Start returned after %s; its shards moved: %s; %s leads now",
		leaving.id, electionMs(returned), strings.Join(moves, ", "), after.leader)
	for s := 0; s < shardedShards; s++ {
		if view.owner[s] != leaving.id && after.owner[s] != view.owner[s] {
			return expect(false, "only %s's shards to move, but shard %d moved from %s to %s", leaving.id, s, view.owner[s], after.owner[s])
		}
	}
	e.say("  %s released %.0f shards (etcdkit_shard_handoffs_total over its run, joins included)",
		leaving.id, shardedMetric(leaving.reg, "etcdkit_shard_handoffs_total"))

	for i := 0; i < shardedItems; i++ {
		if _, err := e.client.Put(ctx, fmt.Sprintf("%sitem-%02d", itemsPrefix, i), "v2"); err != nil {
			return err
		}
	}
	if err := shardedConverged(ctx, e, itemsPrefix, statusPrefix, after); err != nil {
		return err
	}
	if counts, err = shardedCounts(ctx, e, statusPrefix); err != nil {
		return err
	}
	e.say("updated the %d items: every status rewritten by its shard's owner after the handoff, under its new token", shardedItems)
	e.say("shard map: %s", after.table(counts))
	fenced := 0.0
	for _, m := range members {
		if m != leaving {
			e.say("  %s: %s", m.id, after.memberLine(m.id, counts))
		}
		fenced += shardedMetric(m.reg, "etcdkit_fenced_writes_total")
	}
	e.say("  fenced writes refused over the run: %.0f", fenced)

	for _, m := range members {
		if serr := m.shutdown(15 * time.Second); serr != nil {
			return fmt.Errorf("%s: %w", m.id, serr)
		}
	}
	e.say("every manager stopped cleanly")
	return nil
}

// newShardedMembers makes the example's shardedMembers replicas of the manager name with
// sharding. closeAll stops every one (waiting for Start to return) and closes its client:
// no Start, session or client outlives the example, even on a failure.
func newShardedMembers(e *env, name, itemsPrefix, statusPrefix string, sharding *manager.ShardingOptions) (members []*shardedMember, closeAll func() error, err error) {
	closeAll = func() error {
		var errs []error
		for _, m := range members {
			errs = append(errs, m.shutdown(15*time.Second))
			_ = m.cli.Close()
		}
		return errors.Join(errs...)
	}
	for i := 1; i <= shardedMembers; i++ {
		m, err := newShardedMember(e, name, fmt.Sprintf("member-%d", i), itemsPrefix, statusPrefix, sharding)
		if err != nil {
			return nil, nil, errors.Join(err, closeAll())
		}
		members = append(members, m)
	}
	return members, closeAll, nil
}

// newShardedMember makes one replica of the manager name with its sharded controller.
func newShardedMember(e *env, name, id, itemsPrefix, statusPrefix string, sharding *manager.ShardingOptions) (*shardedMember, error) {
	cli, err := e.newClient()
	if err != nil {
		return nil, err
	}
	m := &shardedMember{id: id, cli: cli, reg: prometheus.NewRegistry(), done: make(chan error, 1), stop: func() {}, exited: true}
	fail := func(err error) (*shardedMember, error) {
		_ = cli.Close()
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	if m.mgr, err = manager.New(manager.Options{
		Client:                  cli,
		Name:                    name,
		ID:                      id,
		RootPrefix:              e.key("manager/"),
		LeaseTTL:                2 * time.Second,
		GracefulShutdownTimeout: 5 * time.Second,
		HealthProbeAddr:         "127.0.0.1:0",
		Registry:                m.reg,
		Sharding:                sharding,
		Logger:                  e.log.WithName(id).V(1), // the story tells what happens; -v shows the log
	}); err != nil {
		return fail(err)
	}
	statuses, err := store.New[itemStatus](cli, statusPrefix, store.Options[itemStatus]{})
	if err != nil {
		return fail(err)
	}
	m.r = &itemReconciler{id: id, cli: cli, itemsPrefix: itemsPrefix, statuses: statuses}
	err = manager.NewControllerManagedBy(m.mgr).
		Named("items").
		For(source.Prefix(itemsPrefix)).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 2}).
		Complete(m.r)
	if err != nil {
		return fail(err)
	}
	return m, nil
}

// shardedView is the sharding as the running members see it, once settled.
type shardedView struct {
	leader string
	owner  []string    // owner of each shard, as Owners reports it
	token  []int64     // its fencing token
	since  []time.Time // when its owner claimed it
}

// table renders shard -> owner (keys in the shard).
func (v *shardedView) table(counts map[int]int) string {
	var parts []string
	for s, m := range v.owner {
		parts = append(parts, fmt.Sprintf("%d->%s (%d keys)", s, m, counts[s]))
	}
	return strings.Join(parts, ", ")
}

// memberLine renders a member's shards and how many keys it reconciled in them.
func (v *shardedView) memberLine(id string, counts map[int]int) string {
	var shards []string
	keys := 0
	for s, m := range v.owner {
		if m == id {
			shards = append(shards, fmt.Sprintf("%d", s))
			keys += counts[s]
		}
	}
	return fmt.Sprintf("shards %s, %d keys", strings.Join(shards, " "), keys)
}

// shardedSettle waits until the running members agree that every shard is owned by its
// assignee, the assignment is balanced over them, and one of them leads.
func shardedSettle(ctx context.Context, members []*shardedMember) (*shardedView, error) {
	var view *shardedView
	err := shardedWait(ctx, "the shards to settle over the running members", func() (string, error) {
		var why string
		view, why = shardedSettled(ctx, members)
		return why, nil
	}, members)
	return view, err
}

// shardedSettled returns the view when it is settled, or why it is not.
func shardedSettled(ctx context.Context, members []*shardedMember) (*shardedView, string) {
	var running []*shardedMember
	var ids []string
	for _, m := range members {
		if m.running() {
			running = append(running, m)
			ids = append(ids, m.id)
		}
	}
	n := len(running)
	if n == 0 {
		return nil, "no member runs"
	}
	v := &shardedView{owner: make([]string, shardedShards), token: make([]int64, shardedShards), since: make([]time.Time, shardedShards)}
	holder := make([]string, shardedShards) // the member whose Owned holds each shard
	var first manager.ShardStatus
	for i, m := range running {
		st, _ := m.mgr.ShardStatus(ctx)
		if i == 0 {
			first = st
		}
		switch {
		case st.Leader == "" || !slices.Contains(ids, st.Leader):
			return nil, fmt.Sprintf("%s sees leader %q", m.id, st.Leader)
		case st.Leader != first.Leader || !slices.Equal(st.Owners, first.Owners):
			return nil, fmt.Sprintf("%s and %s disagree: owners %v and %v", running[0].id, m.id, first.Owners, st.Owners)
		case len(st.Members) != n:
			return nil, fmt.Sprintf("%s sees %d members, %d run", m.id, len(st.Members), n)
		}
		for _, o := range st.Owned {
			if o.Draining {
				return nil, fmt.Sprintf("%s drains shard %d", m.id, o.Shard)
			}
			if holder[o.Shard] != "" {
				return nil, fmt.Sprintf("shard %d held by %s and %s", o.Shard, holder[o.Shard], m.id)
			}
			holder[o.Shard], v.token[o.Shard], v.since[o.Shard] = m.id, o.Token, o.Since
		}
	}
	v.leader = first.Leader
	count := map[string]int{}
	for s := 0; s < shardedShards; s++ {
		owner := first.Owners[s]
		if owner == "" || owner != first.Assignment[s] || owner != holder[s] {
			return nil, fmt.Sprintf("shard %d assigned to %q, owned by %q, held by %q", s, first.Assignment[s], owner, holder[s])
		}
		v.owner[s] = owner
		count[owner]++
	}
	for _, id := range ids {
		if c := count[id]; c < shardedShards/n || c > (shardedShards+n-1)/n {
			return nil, fmt.Sprintf("not balanced: %s owns %d of %d shards", id, c, shardedShards)
		}
	}
	return v, ""
}

// shardedConverged waits until every item's status was written for the item's current
// revision by the owner of the item's shard, under that shard's current token.
func shardedConverged(ctx context.Context, e *env, itemsPrefix, statusPrefix string, v *shardedView) error {
	return shardedWait(ctx, "every item's status to be written by its shard's owner", func() (string, error) {
		resp, err := e.client.Txn(ctx).Then(
			clientv3.OpGet(itemsPrefix, clientv3.WithPrefix()),
			clientv3.OpGet(statusPrefix, clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return "", err
		}
		statuses := map[string]itemStatus{}
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			var st itemStatus
			if err := json.Unmarshal(kv.Value, &st); err != nil {
				return "", err
			}
			statuses[strings.TrimPrefix(string(kv.Key), statusPrefix)] = st
		}
		var stale []string
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			name := strings.TrimPrefix(string(kv.Key), itemsPrefix)
			st, ok := statuses[name]
			switch {
			case !ok:
				stale = append(stale, name+": no status")
			case st.ItemRevision != kv.ModRevision:
				stale = append(stale, fmt.Sprintf("%s: status for revision %d, item at %d", name, st.ItemRevision, kv.ModRevision))
			case st.Shard < 0 || st.Shard >= shardedShards || st.Member != v.owner[st.Shard] || st.Token != v.token[st.Shard]:
				stale = append(stale, fmt.Sprintf("%s: written by %s in shard %d with token %d", name, st.Member, st.Shard, st.Token))
			}
		}
		if n := len(resp.Responses[0].GetResponseRange().Kvs); n != shardedItems {
			stale = append(stale, fmt.Sprintf("%d items, want %d", n, shardedItems))
		}
		return strings.Join(stale, "; "), nil
	}, nil)
}

// shardedCounts counts the items of each shard, from their statuses.
func shardedCounts(ctx context.Context, e *env, statusPrefix string) (map[int]int, error) {
	resp, err := e.client.Get(ctx, statusPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	counts := map[int]int{}
	for _, kv := range resp.Kvs {
		var st itemStatus
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, err
		}
		counts[st.Shard]++
	}
	return counts, nil
}

// shardedWait polls check until it reports nothing left to wait for, for at most
// shardedWaitFor; check returns what is still missing. A member whose Start returned
// meanwhile ends the wait with its error.
func shardedWait(ctx context.Context, what string, check func() (string, error), members []*shardedMember) error {
	return membersWait(ctx, what, shardedWaitFor, check, members)
}

// membersWait waits up to bound for check to report nothing missing, failing at once when a
// member stopped with an error.
func membersWait(ctx context.Context, what string, bound time.Duration, check func() (string, error), members []*shardedMember) error {
	deadline := time.Now().Add(bound)
	for {
		missing, err := check()
		if err != nil {
			return err
		}
		if missing == "" {
			return nil
		}
		for _, m := range members {
			if m.exited && m.err != nil {
				return fmt.Errorf("%s stopped: %w", m.id, m.err)
			}
		}
		if time.Now().After(deadline) {
			return expect(false, "%s within %s; still: %s", what, bound, missing)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (still: %s)", what, ctx.Err(), missing)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// shardedDebug reads a member's /debug/shards, the JSON of its ShardStatus.
func shardedDebug(ctx context.Context, e *env, m *shardedMember) error {
	url := "http://" + m.mgr.HealthProbeAddr() + "/debug/shards"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No idle connection outlives the request.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var st manager.ShardStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("decoding %s: %w", url, err)
	}
	var owned []string
	for _, o := range st.Owned {
		owned = append(owned, fmt.Sprintf("%d(token %d)", o.Shard, o.Token))
	}
	e.say("  %s's /debug/shards (%s): member %s, leader %s, %d members, owns %s",
		m.id, m.mgr.HealthProbeAddr(), st.Member, st.Leader, len(st.Members), strings.Join(owned, " "))
	return expect(resp.StatusCode == http.StatusOK && st.Member == m.id && st.Shards == shardedShards,
		"/debug/shards of %s to answer 200 with its status, got %d for member %q, %d shards", m.id, resp.StatusCode, st.Member, st.Shards)
}

// shardedMetric sums the values of a counter or gauge family in reg (0 when absent).
func shardedMetric(reg *prometheus.Registry, name string) float64 {
	families, err := reg.Gather()
	if err != nil {
		return 0
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
