package main

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
)

// runLock shows the guide's section 1: a lock with Lock/Unlock and WithLock, TryLock while
// another process holds the lock, fencing a holder whose lease ran out, and a lock manager.
func runLock(ctx context.Context, e *env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	steps := []func(context.Context, *env) error{lockBasic, lockTry, lockFencing, lockManager}
	for _, step := range steps {
		if err := step(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// lockBasic takes and releases a lock, then runs a critical section with WithLock.
func lockBasic(ctx context.Context, e *env) error {
	l, err := lock.New(e.client, e.key("resource1"), lock.Options{TTL: 10 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Lock(ctx); err != nil {
		return err
	}
	e.say("locked %s, fencing token %d", e.rel(l.Key()), l.Token())
	if err := l.Unlock(ctx); err != nil {
		return err
	}
	if err := expect(l.Token() == 0, "no token after Unlock, got %d", l.Token()); err != nil {
		return err
	}
	e.say("unlocked %s", e.rel(l.Key()))

	ran := false
	err = l.WithLock(ctx, func() error {
		ran = true
		e.say("WithLock: inside the critical section with token %d", l.Token())
		return nil
	})
	if err != nil {
		return err
	}
	return expect(ran && l.Token() == 0, "WithLock to run its function and release the lock")
}

// lockTry shows TryLock failing while another session holds the lock and succeeding once
// it is free.
func lockTry(ctx context.Context, e *env) error {
	key := e.key("job")
	mine, err := lock.New(e.client, key, lock.Options{TTL: 10 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer mine.Close()
	other, err := lock.New(e.client, key, lock.Options{TTL: 10 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer other.Close()

	if err := other.Lock(ctx); err != nil {
		return err
	}
	got, err := mine.TryLock(ctx)
	if err != nil {
		return err
	}
	e.say("TryLock while another session holds %s: %v", e.rel(key), got)
	if err := expect(!got, "TryLock to fail while the lock is held elsewhere"); err != nil {
		return err
	}
	if err := other.Unlock(ctx); err != nil {
		return err
	}
	if got, err = mine.TryLock(ctx); err != nil {
		return err
	}
	e.say("TryLock once it is free: %v", got)
	if err := expect(got, "TryLock to succeed on a free lock"); err != nil {
		return err
	}
	return mine.Unlock(ctx)
}

// lockFencing shows why writes made under a lock carry its Guard: a holder whose lease runs
// out (here revoked, as etcd does when a paused process misses its TTL) loses the lock to
// the next waiter, and its late write is rejected instead of overwriting the new holder's.
func lockFencing(ctx context.Context, e *env) error {
	key, data := e.key("report-lock"), e.key("report")
	stale, err := lock.New(e.client, key, lock.Options{TTL: 5 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer stale.Close()
	next, err := lock.New(e.client, key, lock.Options{TTL: 5 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer next.Close()

	if err := stale.Lock(ctx); err != nil {
		return err
	}
	staleToken, lost := stale.Token(), stale.Lost()
	e.say("holder A locked %s with token %d", e.rel(key), staleToken)
	waiting := lockAsync(func() error { return next.Lock(ctx) })
	if err := lockAwaitQueue(ctx, e, key, 2); err != nil {
		return err
	}
	e.say("holder B waits for it")

	resp, err := e.client.Get(ctx, key+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return err
	}
	if _, err := e.client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		return err
	}
	e.say("A pauses past its TTL: etcd ends its lease and deletes its queue entry")
	if err := lockResult(ctx, waiting, "B to get the lock"); err != nil {
		return err
	}
	e.say("B holds the lock with token %d", next.Token())
	select {
	case <-lost:
		e.say("A's Lost() channel is closed")
	case <-time.After(5 * time.Second):
		return expect(false, "A's Lost() to close within 5s")
	}

	write := func(l *lock.Lock, v string) (bool, error) {
		r, err := e.client.Txn(ctx).If(l.Guard()).Then(clientv3.OpPut(data, v)).Commit()
		if err != nil {
			return false, err
		}
		return r.Succeeded, nil
	}
	okB, err := write(next, "written by B")
	if err != nil {
		return err
	}
	okA, err := write(stale, "written late by A")
	if err != nil {
		return err
	}
	e.say("B's guarded write accepted: %v; A's late guarded write accepted: %v", okB, okA)
	if err := expect(okB && !okA, "the new holder's write accepted and the stale holder's rejected"); err != nil {
		return err
	}
	got, err := e.client.Get(ctx, data)
	if err != nil {
		return err
	}
	if err := expect(len(got.Kvs) == 1 && string(got.Kvs[0].Value) == "written by B", "the report to hold B's write"); err != nil {
		return err
	}
	err = stale.Unlock(ctx)
	e.say("A's Unlock says: %v", err)
	if err := expect(errors.Is(err, lock.ErrLost), "A's Unlock to report the lost lock, got %v", err); err != nil {
		return err
	}
	return next.Unlock(ctx)
}

// lockManager shows named locks on one session.
func lockManager(ctx context.Context, e *env) error {
	m, err := lock.NewManager(e.client, e.key("tenants"), lock.Options{TTL: 10 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer m.Close()
	acme, err := m.Get("acme")
	if err != nil {
		return err
	}
	globex, err := m.Get("globex")
	if err != nil {
		return err
	}
	if err := acme.Lock(ctx); err != nil {
		return err
	}
	got, err := globex.TryLock(ctx)
	if err != nil {
		return err
	}
	resp, err := e.client.Get(ctx, e.key("tenants/"), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	leases := map[int64]bool{}
	for _, kv := range resp.Kvs {
		leases[kv.Lease] = true
	}
	e.say("manager: %s and %s held at once: %v, on %d session(s)", e.rel(acme.Key()), e.rel(globex.Key()), got, len(leases))
	if err := expect(got && len(resp.Kvs) == 2 && len(leases) == 1, "two independent locks on one session, got held=%v entries=%d sessions=%d", got, len(resp.Kvs), len(leases)); err != nil {
		return err
	}
	same, err := m.Get("acme")
	if err != nil {
		return err
	}
	if err := expect(same == acme, "the same lock for the same name"); err != nil {
		return err
	}
	if err := m.Close(); err != nil {
		return err
	}
	resp, err = e.client.Get(ctx, e.key("tenants/"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	e.say("manager closed: %d lock entries left", resp.Count)
	return expect(resp.Count == 0, "Close to release every lock of the manager, %d left", resp.Count)
}

// lockAsync runs fn in a goroutine and delivers its error. The goroutine ends when fn
// returns; every fn given here waits with the example's context.
func lockAsync(fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	return done
}

// lockResult waits for the outcome of a lockAsync call, for at most 5 seconds.
func lockResult(ctx context.Context, done <-chan error, what string) error {
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return expect(false, "%s within 5s", what)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lockStillWaiting checks that a lockAsync call is still waiting after a moment.
func lockStillWaiting(done <-chan error, what string) error {
	select {
	case err := <-done:
		return expect(false, "%s to wait, but it returned %v", what, err)
	case <-time.After(200 * time.Millisecond):
		return nil
	}
}

// lockAwaitQueue waits until n entries are queued under a lock key.
func lockAwaitQueue(ctx context.Context, e *env, key string, n int64) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := e.client.Get(ctx, key+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return expect(false, "%d waiters queued on %s within 5s, got %d", n, e.rel(key), resp.Count)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
