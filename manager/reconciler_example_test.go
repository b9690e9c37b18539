package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// jobRun is the child a jobs controller keeps for each job: JSON under /runs/<name>, with
// the key of its job (its owner) in Job.
type jobRun struct {
	Job     string    `json:"job"`
	Command string    `json:"command"`
	Phase   string    `json:"phase"` // Running, then Done
	Started time.Time `json:"started"`
}

// runTime is how long a run takes, in this example.
const runTime = 30 * time.Millisecond

// ownerOf returns the job key a run refers to, "" when value is no run.
func ownerOf(value []byte) string {
	var r jobRun
	if json.Unmarshal(value, &r) != nil {
		return ""
	}
	return r.Job
}

// A jobs controller: etcdctl writes a job's command under /jobs/<name>; the reconciler
// keeps a run of the current command under /runs/<name>, polls it with RequeueAfter until
// it is done, and deletes the runs of a deleted job, found through a cache index on their
// owner.
func Example_writingAReconciler() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	mgr, err := manager.New(manager.Options{Client: c.Client(), Name: "jobs", ID: "replica-1", LeaseTTL: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	cache := mgr.GetCache()
	// A Store[string] reads what etcdctl wrote as it is; a struct is stored as JSON.
	jobs, err := store.New[string](mgr.Client(), "/jobs/", store.Options[string]{Cache: cache})
	if err != nil {
		fmt.Println(err)
		return
	}
	runs, err := store.New[jobRun](mgr.Client(), "/runs/", store.Options[jobRun]{Cache: cache})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = cache.IndexField("/runs/", "job", func(key string, value []byte) []string {
		if job := ownerOf(value); job != "" {
			return []string{job}
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	reconciler := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		job, err := jobs.Cached(req.Key)
		if errors.Is(err, store.ErrNotFound) { // the job was deleted: delete its runs
			children, err := cache.ByIndex("/runs/", "job", req.Key)
			if err != nil {
				return reconcile.Result{}, err
			}
			for _, kv := range children {
				if err := runs.Delete(ctx, string(kv.Key), kv.ModRevision); err != nil {
					return reconcile.Result{}, err // ErrConflict, ErrFenced, ...: retried
				}
			}
			return reconcile.Result{}, nil
		}
		if err != nil { // store.ErrDecode: the value is not text, and a retry cannot fix that
			return reconcile.Result{}, reconcile.TerminalError(err)
		}
		if strings.TrimSpace(job.Value) == "" { // retrying cannot help: wait for a new value
			return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("%s has no command", req.Key))
		}
		key := runs.Key(strings.TrimPrefix(req.Key, jobs.Prefix()))
		run, err := runs.Cached(key)
		switch {
		case errors.Is(err, store.ErrNotFound): // start a run
			_, err := runs.Create(ctx, key, &jobRun{Job: req.Key, Command: job.Value, Phase: "Running", Started: time.Now()})
			return reconcile.Result{RequeueAfter: runTime}, err // ErrExists (the cache lagged): retried
		case err != nil:
			return reconcile.Result{}, err
		case run.Value.Command != job.Value: // the job changed: start the run again
			next := jobRun{Job: req.Key, Command: job.Value, Phase: "Running", Started: time.Now()}
			_, err := runs.Update(ctx, key, &next, run.ModRevision)
			return reconcile.Result{RequeueAfter: runTime}, err // ErrConflict: retried, read again
		case run.Value.Phase == "Running":
			if left := runTime - time.Since(run.Value.Started); left > 0 {
				return reconcile.Result{RequeueAfter: left}, nil // look again when it should be done
			}
			_, err := runs.Mutate(ctx, key, func(r *jobRun) error { r.Phase = "Done"; return nil })
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil
	})

	err = manager.NewControllerManagedBy(mgr).
		Named("jobs").
		For(source.Prefix("/jobs/")).
		Watches(source.Prefix("/runs/"), reconcile.EventHandler(func(e source.Event) []reconcile.Request {
			kv := e.KV
			if e.Type == source.Delete {
				kv = e.PrevKV
			}
			if kv == nil || ownerOf(kv.Value) == "" {
				return nil
			}
			return []reconcile.Request{{Key: ownerOf(kv.Value)}} // a run's change wakes its job
		})).
		WithEventFilter(source.ValueChanged()).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 2}).
		Complete(reconciler)
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error)
	go func() { stopped <- mgr.Start(runCtx) }()
	<-mgr.Elected()

	// waitRun polls etcd until the run of build satisfies ok, and prints it.
	waitRun := func(ok func(*store.Object[jobRun], error) bool) {
		for ctx.Err() == nil {
			run, err := runs.Get(ctx, "/runs/build")
			if ok(run, err) {
				if err != nil {
					fmt.Println("/runs/build:", err)
				} else {
					fmt.Printf("/runs/build: %q %s, owner %s\n", run.Value.Command, run.Value.Phase, run.Value.Job)
				}
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	done := func(cmd string) func(*store.Object[jobRun], error) bool {
		return func(r *store.Object[jobRun], err error) bool {
			return err == nil && r.Value.Command == cmd && r.Value.Phase == "Done"
		}
	}
	cli := c.Client()
	_, _ = cli.Put(ctx, "/jobs/build", "make all") // etcdctl put /jobs/build 'make all'
	waitRun(done("make all"))
	_, _ = cli.Put(ctx, "/jobs/build", "make test")
	waitRun(done("make test"))
	_, _ = cli.Delete(ctx, "/jobs/build") // etcdctl del /jobs/build
	waitRun(func(_ *store.Object[jobRun], err error) bool { return errors.Is(err, store.ErrNotFound) })
	stop()
	fmt.Println("stopped:", <-stopped)
	// Output:
	// /runs/build: "make all" Done, owner /jobs/build
	// /runs/build: "make test" Done, owner /jobs/build
	// /runs/build: store: not found: /runs/build
	// stopped: <nil>
}
