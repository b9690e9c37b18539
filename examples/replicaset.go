package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// replicaSet asks for Replicas pods named <set>-<i>; its status says how many run. It
// embeds store.Lifecycle for the finalizer that deletes its pods before it goes.
type replicaSet struct {
	store.Lifecycle
	Replicas int `json:"replicas"`
	Ready    int `json:"ready"` // the status: pods running
}

// pod is one replica; the node controller runs it.
type pod struct {
	Owner string `json:"owner"` // the replica set's name
	Phase string `json:"phase"` // Pending, Running
}

const (
	podFinalizer = "replicasets/pods"
	ownerIndex   = "owner"
)

// replicaSetReconciler keeps each set's pods: it creates the missing, deletes the extra,
// writes the status, and on a deletion deletes every pod before it removes its finalizer.
// Every read is from the manager's cache; the pods of a set come from the owner index.
type replicaSetReconciler struct {
	cache *manager.Cache
	sets  *store.Store[replicaSet]
	pods  *store.Store[pod]
	say   func(format string, args ...any)
}

func (r *replicaSetReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	name := strings.TrimPrefix(req.Key, r.sets.Prefix())
	set, err := r.sets.Cached(req.Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Gone without the finalizer's cleanup (an etcdctl del): the tombstone still says
		// it was a replica set, and its pods go.
		if t, ok := reconcile.TombstoneFrom(ctx); ok {
			last, err := r.sets.Decode(t.KV)
			if err != nil {
				return reconcile.Result{}, reconcile.TerminalError(err)
			}
			if last.Value.Deleting() {
				return reconcile.Result{}, nil // deleted by the removal of its finalizer: its cleanup ran
			}
			r.say("replica set %s deleted outside the store (it asked for %d): deleting its pods", name, last.Value.Replicas)
			_, err = r.deletePods(ctx, name, 0)
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	if set.Value.Deleting() {
		left, err := r.deletePods(ctx, name, 0)
		if err != nil || left > 0 {
			return reconcile.Result{}, err // the pods' deletes wake this set again
		}
		r.say("replica set %s: every pod deleted, removing the finalizer", name)
		return reconcile.Result{}, r.sets.RemoveFinalizer(ctx, req.Key, podFinalizer)
	}
	if !set.Value.HasFinalizer(podFinalizer) {
		_, err := r.sets.AddFinalizer(ctx, req.Key, podFinalizer)
		return reconcile.Result{}, err // the write wakes this set again
	}

	// Create the pods that are missing, delete those past the count.
	owned, err := r.owned(name)
	if err != nil {
		return reconcile.Result{}, err
	}
	for i := range set.Value.Replicas {
		key := r.pods.Key(fmt.Sprintf("%s-%d", name, i))
		if _, ok := owned[key]; ok {
			continue
		}
		_, err := r.pods.Create(ctx, key, &pod{Owner: name, Phase: "Pending"})
		if err != nil && !errors.Is(err, store.ErrExists) { // exists: the cache has not seen it yet
			return reconcile.Result{}, err
		}
	}
	if _, err := r.deletePods(ctx, name, set.Value.Replicas); err != nil {
		return reconcile.Result{}, err
	}
	ready := 0
	for _, p := range owned {
		if p.Value.Phase == "Running" {
			ready++
		}
	}
	_, err = r.sets.Mutate(ctx, req.Key, func(s *replicaSet) error { s.Ready = ready; return nil })
	return reconcile.Result{}, err
}

// owned returns the cached pods of a set, by key.
func (r *replicaSetReconciler) owned(name string) (map[string]*store.Object[pod], error) {
	kvs, err := r.cache.ByIndex(r.pods.Prefix(), ownerIndex, name)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*store.Object[pod], len(kvs))
	for _, kv := range kvs {
		p, err := r.pods.Decode(kv)
		if err != nil {
			return nil, err
		}
		out[p.Key] = p
	}
	return out, nil
}

// deletePods deletes the cached pods of a set whose ordinal is keep or more, and returns
// how many it found.
func (r *replicaSetReconciler) deletePods(ctx context.Context, name string, keep int) (int, error) {
	owned, err := r.owned(name)
	if err != nil {
		return 0, err
	}
	n := 0
	for key := range owned {
		i, err := strconv.Atoi(key[strings.LastIndexByte(key, '-')+1:])
		if err == nil && i < keep {
			continue
		}
		n++
		if err := r.pods.Delete(ctx, key, 0); err != nil {
			return n, err
		}
	}
	return n, nil
}

// nodeReconciler plays the node: it runs every pending pod.
type nodeReconciler struct{ pods *store.Store[pod] }

func (r *nodeReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p, err := r.pods.Cached(req.Key)
	if errors.Is(err, store.ErrNotFound) || (err == nil && p.Value.Phase == "Running") {
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	_, err = r.pods.Mutate(ctx, req.Key, func(p *pod) error { p.Phase = "Running"; return nil })
	if errors.Is(err, store.ErrNotFound) {
		return reconcile.Result{}, nil // deleted meanwhile
	}
	return reconcile.Result{}, err
}

// runReplicaSet runs two controllers in one manager: replica sets that own pods through a
// cache index, and a node that runs the pods. It scales sets up and down, deletes a pod by
// hand, deletes a set through its finalizer and another with a plain delete, and checks
// each outcome in etcd.
func runReplicaSet(ctx context.Context, e *env) error {
	setsPrefix, podsPrefix := e.key("replicasets/"), e.key("pods/")
	mgr, err := manager.New(manager.Options{
		Client:     e.client,
		Name:       "replicasets",
		ID:         e.nodeID,
		RootPrefix: e.key("manager/"),
		LeaseTTL:   5 * time.Second,
		Logger:     e.log,
	})
	if err != nil {
		return err
	}
	cache := mgr.GetCache()
	sets, err := store.New[replicaSet](e.client, setsPrefix, store.Options[replicaSet]{Cache: cache})
	if err != nil {
		return err
	}
	pods, err := store.New[pod](e.client, podsPrefix, store.Options[pod]{Cache: cache})
	if err != nil {
		return err
	}
	err = cache.IndexField(podsPrefix, ownerIndex, func(_ string, value []byte) []string {
		var p pod
		if json.Unmarshal(value, &p) != nil || p.Owner == "" {
			return nil
		}
		return []string{p.Owner}
	})
	if err != nil {
		return err
	}
	// A pod's change (a delete included: its last value names the owner) wakes its set.
	podToSet := func(ev source.Event) []reconcile.Request {
		kv := ev.KV
		if ev.Type == source.Delete {
			kv = ev.PrevKV
		}
		var p pod
		if kv == nil || json.Unmarshal(kv.Value, &p) != nil || p.Owner == "" {
			return nil
		}
		return []reconcile.Request{{Key: sets.Key(p.Owner)}}
	}
	err = manager.NewControllerManagedBy(mgr).
		Named("replicasets").
		For(source.Prefix(setsPrefix)).
		Watches(source.Prefix(podsPrefix), podToSet).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 2}).
		Complete(&replicaSetReconciler{cache: cache, sets: sets, pods: pods, say: e.say})
	if err != nil {
		return err
	}
	err = manager.NewControllerManagedBy(mgr).
		Named("node").
		For(source.Prefix(podsPrefix)).
		WithEventFilter(source.Or(source.CreateOnly(), source.ValueChanged())).
		Complete(&nodeReconciler{pods: pods})
	if err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(runCtx) }()
	defer func() {
		stop()
		<-stopped
	}()

	check := func(what string, want map[string]int) error {
		report, err := waitReplicaSets(ctx, e, sets, pods, want)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		e.say("%s: %s", what, report)
		return nil
	}

	for name, n := range map[string]int{"web": 3, "api": 2, "batch": 2} {
		if _, err := sets.Create(ctx, sets.Key(name), &replicaSet{Replicas: n}); err != nil {
			return err
		}
	}
	if err := check("created web=3 api=2 batch=2", map[string]int{"web": 3, "api": 2, "batch": 2}); err != nil {
		return err
	}

	for name, n := range map[string]int{"web": 5, "api": 1} {
		if _, err := sets.Mutate(ctx, sets.Key(name), func(s *replicaSet) error { s.Replicas = n; return nil }); err != nil {
			return err
		}
	}
	if err := check("scaled web to 5, api to 1", map[string]int{"web": 5, "api": 1, "batch": 2}); err != nil {
		return err
	}

	before, err := pods.Get(ctx, pods.Key("web-1"))
	if err != nil {
		return err
	}
	if _, err := e.client.Delete(ctx, pods.Key("web-1")); err != nil {
		return err
	}
	if err := check("pod web-1 deleted by hand", map[string]int{"web": 5, "api": 1, "batch": 2}); err != nil {
		return err
	}
	after, err := pods.Get(ctx, pods.Key("web-1"))
	if err != nil {
		return err
	}
	if err := expect(after.CreateRevision > before.CreateRevision, "web-1 to be created again, its create revision is still %d", after.CreateRevision); err != nil {
		return err
	}

	// Through the store, a delete of a set with the finalizer marks it: its pods go first.
	if err := sets.Delete(ctx, sets.Key("api"), 0); err != nil {
		return err
	}
	// A plain delete bypasses the finalizer: the tombstone still brings the pods down.
	if _, err := e.client.Delete(ctx, sets.Key("batch")); err != nil {
		return err
	}
	return check("deleted api through its finalizer and batch with a plain delete", map[string]int{"web": 5})
}

// waitReplicaSets waits until etcd holds exactly the sets of want, each with its number of
// pods, every pod running, every status up to date, and no pod of another set.
func waitReplicaSets(ctx context.Context, e *env, sets *store.Store[replicaSet], pods *store.Store[pod], want map[string]int) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		report, ok, err := replicaSetsMatch(ctx, sets, pods, want)
		if err != nil || ok {
			return report, err
		}
		if time.Now().After(deadline) {
			return "", expect(false, "replica sets %v within 30s, got %s", want, report)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func replicaSetsMatch(ctx context.Context, sets *store.Store[replicaSet], pods *store.Store[pod], want map[string]int) (string, bool, error) {
	all, err := sets.List(ctx)
	if err != nil {
		return "", false, err
	}
	ps, err := pods.List(ctx)
	if err != nil {
		return "", false, err
	}
	running := map[string]int{}
	total := map[string]int{}
	for _, p := range ps {
		total[p.Value.Owner]++
		if p.Value.Phase == "Running" {
			running[p.Value.Owner]++
		}
	}
	ok := len(all) == len(want)
	var parts []string
	for _, s := range all {
		name := strings.TrimPrefix(s.Key, sets.Prefix())
		n, wanted := want[name]
		ok = ok && wanted && s.Value.Replicas == n && total[name] == n && running[name] == n && s.Value.Ready == n && !s.Value.Deleting()
		parts = append(parts, fmt.Sprintf("%s=%d/%d ready", name, s.Value.Ready, s.Value.Replicas))
	}
	for owner, n := range total {
		if _, ok2 := want[owner]; !ok2 {
			ok = false
			parts = append(parts, fmt.Sprintf("%d pods of %s", n, owner))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), ok, nil
}
