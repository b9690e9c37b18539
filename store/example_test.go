package store_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// Writes are optimistic: an Update from a stale read is refused with the current state.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	type Job struct{ Phase string }
	jobs, err := store.New[Job](c.Client(), "/jobs/", store.Options[Job]{})
	if err != nil {
		fmt.Println(err)
		return
	}
	v1, _ := jobs.Create(ctx, jobs.Key("build"), &Job{Phase: "Pending"})
	_, _ = jobs.Update(ctx, v1.Key, &Job{Phase: "Running"}, v1.ModRevision)

	_, err = jobs.Update(ctx, v1.Key, &Job{Phase: "Failed"}, v1.ModRevision) // stale
	var conflict *store.ConflictError[Job]
	if errors.As(err, &conflict) {
		fmt.Println("conflict; it is now", conflict.Current.Value.Phase)
	}
	done, _ := jobs.Mutate(ctx, v1.Key, func(j *Job) error { j.Phase = "Succeeded"; return nil })
	fmt.Println(done.Value.Phase, "at version", done.Version)
	// Output:
	// conflict; it is now Running
	// Succeeded at version 3
}

// A delete of an object with finalizers marks it; the removal of its last finalizer,
// once the cleanup is done, deletes it.
func ExampleLifecycle() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	type Set struct {
		store.Lifecycle
		Replicas int
	}
	sets, err := store.New[Set](c.Client(), "/sets/", store.Options[Set]{})
	if err != nil {
		fmt.Println(err)
		return
	}
	key := sets.Key("web")
	_, _ = sets.Create(ctx, key, &Set{Replicas: 3})
	_, _ = sets.AddFinalizer(ctx, key, "pods") // a controller owns pods of this set

	_ = sets.Delete(ctx, key, 0)
	marked, _ := sets.Get(ctx, key)
	fmt.Println("after Delete: deleting", marked.Value.Deleting(), "finalizers", marked.Value.Finalizers)

	// The controller deletes the pods, then:
	_ = sets.RemoveFinalizer(ctx, key, "pods")
	_, err = sets.Get(ctx, key)
	fmt.Println("after RemoveFinalizer:", errors.Is(err, store.ErrNotFound))
	// Output:
	// after Delete: deleting true finalizers [pods]
	// after RemoveFinalizer: true
}
