package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// jobSpec is the desired state of a job, written by users under jobs/<name>.
type jobSpec struct {
	Steps      int `json:"steps"`
	StepMillis int `json:"stepMillis"`
}

// jobStatus is what the controller reports under status/<name>.
type jobStatus struct {
	Phase string `json:"phase"` // Pending, Running, Succeeded
	Step  int    `json:"step"`
	// ObservedRevision is the mod revision of the spec this status is about.
	ObservedRevision int64 `json:"observedRevision"`
}

// jobReconciler drives each job's status through its phases, one optimistic-concurrency
// write per step, with RequeueAfter for the timed steps.
type jobReconciler struct {
	specs    *store.Store[jobSpec]
	statuses *store.Store[jobStatus]
	say      func(format string, args ...any)
}

func (r *jobReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	name := strings.TrimPrefix(req.Key, r.specs.Prefix())
	statusKey := r.statuses.Key(name)
	spec, err := r.specs.Get(ctx, req.Key)
	if errors.Is(err, store.ErrNotFound) {
		// The job is gone: so is its status.
		return reconcile.Result{}, r.statuses.Delete(ctx, statusKey, 0)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if spec.Value.Steps < 1 {
		return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("job %s: steps must be at least 1, got %d", name, spec.Value.Steps))
	}
	st, err := r.statuses.Get(ctx, statusKey)
	if errors.Is(err, store.ErrNotFound) {
		_, err = r.statuses.Create(ctx, statusKey, &jobStatus{Phase: "Pending", ObservedRevision: spec.ModRevision})
		return reconcile.Result{}, err // the status write wakes nobody: the next step is queued below
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	next := st.Value
	switch {
	case next.ObservedRevision != spec.ModRevision:
		r.say("job %s changed (revision %d): starting over", name, spec.ModRevision)
		next = jobStatus{Phase: "Pending", ObservedRevision: spec.ModRevision}
	case next.Phase == "Pending":
		next.Phase = "Running"
	case next.Phase == "Running" && next.Step < spec.Value.Steps:
		next.Step++
	case next.Phase == "Running":
		next.Phase = "Succeeded"
		r.say("job %s succeeded after %d steps", name, next.Step)
	default:
		return reconcile.Result{}, nil // Succeeded: nothing to do
	}
	// Update fails with a conflict if the status moved since it was read; the controller
	// retries with backoff and the next attempt starts from the fresh state.
	if _, err := r.statuses.Update(ctx, statusKey, &next, st.ModRevision); err != nil {
		return reconcile.Result{}, err
	}
	if next.Phase == "Succeeded" {
		return reconcile.Result{}, nil
	}
	// Pending or Running: the next step is due after the job's step time.
	return reconcile.Result{RequeueAfter: max(time.Duration(spec.Value.StepMillis)*time.Millisecond, time.Millisecond)}, nil
}

// runController runs a small jobs controller in a manager: users write desired states,
// the controller drives statuses, plain puts change jobs while it runs, and the example
// checks that everything converged.
func runController(ctx context.Context, e *env) error {
	jobsPrefix, statusPrefix := e.key("jobs/"), e.key("status/")
	mgr, err := manager.New(manager.Options{
		Client:     e.client,
		Name:       "jobs",
		ID:         e.nodeID,
		RootPrefix: e.key("manager/"),
		LeaseTTL:   5 * time.Second,
		Logger:     e.log,
	})
	if err != nil {
		return err
	}
	specs, err := store.New[jobSpec](e.client, jobsPrefix, store.Options[jobSpec]{})
	if err != nil {
		return err
	}
	statuses, err := store.New[jobStatus](e.client, statusPrefix, store.Options[jobStatus]{})
	if err != nil {
		return err
	}
	r := &jobReconciler{specs: specs, statuses: statuses, say: e.say}
	// A status change maps back to its job, so that a status edited by hand is repaired.
	statusToJob := reconcile.EventHandler(func(ev source.Event) []reconcile.Request {
		return []reconcile.Request{{Key: jobsPrefix + strings.TrimPrefix(ev.Key, statusPrefix)}}
	})
	err = manager.NewControllerManagedBy(mgr).
		Named("jobs").
		For(source.Prefix(jobsPrefix)).
		Watches(source.Prefix(statusPrefix), statusToJob).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
	if err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(runCtx) }() // the manager; ends when runCtx does
	defer func() {
		stop()
		<-stopped
	}()

	for i := 1; i <= 5; i++ {
		name := fmt.Sprintf("job-%d", i)
		if _, err := specs.Create(ctx, specs.Key(name), &jobSpec{Steps: 3, StepMillis: 20 * i}); err != nil {
			return err
		}
	}
	e.say("wrote 5 jobs under %s; the controller drives each to Succeeded", e.rel(jobsPrefix))

	// Plain puts drive the controller through the watch, like any writer's would.
	changed, err := json.Marshal(jobSpec{Steps: 5, StepMillis: 10})
	if err != nil {
		return err
	}
	if _, err := e.client.Put(ctx, specs.Key("job-2"), string(changed)); err != nil {
		return err
	}
	if _, err := e.client.Delete(ctx, specs.Key("job-5")); err != nil {
		return err
	}
	if _, err := e.client.Put(ctx, specs.Key("job-6"), `{"steps":2,"stepMillis":10}`); err != nil {
		return err
	}
	e.say("plain puts: job-2 changed to 5 steps, job-5 deleted, job-6 added")

	deadline := time.Now().Add(30 * time.Second)
	for {
		report, done, err := converged(ctx, e, specs, statuses)
		if err != nil {
			return err
		}
		if done {
			e.say("converged: %s", report)
			return nil
		}
		if time.Now().After(deadline) {
			return expect(false, "every job to succeed for its latest spec within 30s, got %s", report)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// converged reports whether every job's status is Succeeded for its latest spec and no
// status is left for a deleted job.
func converged(ctx context.Context, e *env, specs *store.Store[jobSpec], statuses *store.Store[jobStatus]) (string, bool, error) {
	resp, err := e.client.Txn(ctx).Then(
		clientv3.OpGet(specs.Prefix(), clientv3.WithPrefix()),
		clientv3.OpGet(statuses.Prefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return "", false, err
	}
	specRev := map[string]int64{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		specRev[strings.TrimPrefix(string(kv.Key), specs.Prefix())] = kv.ModRevision
	}
	var parts []string
	done := true
	seen := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		name := strings.TrimPrefix(string(kv.Key), statuses.Prefix())
		seen[name] = true
		var st jobStatus
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return "", false, err
		}
		rev, exists := specRev[name]
		if !exists || st.Phase != "Succeeded" || st.ObservedRevision != rev {
			done = false
		}
		parts = append(parts, fmt.Sprintf("%s=%s/%d", name, st.Phase, st.Step))
	}
	for name := range specRev {
		if !seen[name] {
			done = false
			parts = append(parts, name+"=<no status>")
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), done, nil
}
