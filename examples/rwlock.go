package main

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
)

// runRWLock shows the guide's read-write lock as a distributed one: two readers with
// clients of their own hold it together, a writer waits for them, and a reader that comes
// after the waiting writer queues behind it (no writer starves).
func runRWLock(ctx context.Context, e *env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	key := e.key("data")

	// Each party is its own process as far as etcd is concerned: a client and a session.
	var rws []*lock.RWLock
	for i := 0; i < 4; i++ {
		cli, err := e.newClient()
		if err != nil {
			return err
		}
		defer cli.Close()
		rw, err := lock.NewRW(cli, key, lock.Options{TTL: 10 * time.Second, Logger: e.log})
		if err != nil {
			return err
		}
		defer rw.Close()
		rws = append(rws, rw)
	}
	reader1, reader2, writer, reader3 := rws[0], rws[1], rws[2], rws[3]

	if err := reader1.RLock(ctx); err != nil {
		return err
	}
	if err := reader2.RLock(ctx); err != nil {
		return err
	}
	e.say("reader 1 and reader 2 (two clients) hold the read lock on %s together", e.rel(key))

	writing := lockAsync(func() error { return writer.Lock(ctx) })
	if err := lockAwaitQueue(ctx, e, key, 3); err != nil {
		return err
	}
	if err := lockStillWaiting(writing, "the writer"); err != nil {
		return err
	}
	e.say("the writer waits for both readers")

	reading := lockAsync(func() error { return reader3.RLock(ctx) })
	if err := lockAwaitQueue(ctx, e, key, 4); err != nil {
		return err
	}
	if err := lockStillWaiting(reading, "reader 3, queued behind the waiting writer"); err != nil {
		return err
	}
	e.say("reader 3 arrives after the writer: it queues behind it instead of joining the readers")

	if err := reader1.RUnlock(ctx); err != nil {
		return err
	}
	if err := reader2.RUnlock(ctx); err != nil {
		return err
	}
	e.say("readers 1 and 2 let go")
	if err := lockResult(ctx, writing, "the writer to get the lock"); err != nil {
		return err
	}
	e.say("the writer holds the lock alone, token %d", writer.Token())
	if err := lockStillWaiting(reading, "reader 3, while the writer writes"); err != nil {
		return err
	}
	resp, err := e.client.Txn(ctx).If(writer.Guard()).Then(clientv3.OpPut(e.key("value"), "v2")).Commit()
	if err != nil {
		return err
	}
	if err := expect(resp.Succeeded, "the writer's guarded write to be accepted"); err != nil {
		return err
	}

	if err := writer.Unlock(ctx); err != nil {
		return err
	}
	if err := lockResult(ctx, reading, "reader 3 to get the read lock after the writer"); err != nil {
		return err
	}
	e.say("the writer is done; reader 3 reads")
	return reader3.RUnlock(ctx)
}
