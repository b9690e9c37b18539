package main

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// runLease shows the guide's section 6: grant, put with a lease, keep-alive, time-to-live,
// revoke, one lease for many keys, the three use cases, and noticing a keep-alive channel
// that closes (Best Practices 5).
func runLease(ctx context.Context, e *env) error {
	cli := e.client

	// A short TTL, so that the keep-alive (every TTL/3) shows a few answers quickly.
	grant, err := cli.Grant(ctx, 3)
	if err != nil {
		return err
	}
	session := e.key("session/user123")
	if _, err := cli.Put(ctx, session, "active", clientv3.WithLease(grant.ID)); err != nil {
		return err
	}
	e.say("granted lease %x with TTL %ds and put %s on it", grant.ID, grant.TTL, e.rel(session))

	// Keep-alive: the client renews the lease about every TTL/3; each answer carries the TTL.
	kaCtx, stopKA := context.WithCancel(ctx)
	ka, err := cli.KeepAlive(kaCtx, grant.ID)
	if err != nil {
		stopKA()
		return err
	}
	for i := 0; i < 3; i++ {
		select {
		case resp, ok := <-ka:
			if !ok {
				stopKA()
				return expect(false, "keep-alive answers for lease %x", grant.ID)
			}
			e.say("keep-alive answer %d: TTL=%ds", i+1, resp.TTL)
		case <-time.After(5 * time.Second):
			stopKA()
			return expect(false, "a keep-alive answer within 5s")
		}
	}
	stopKA()

	ttl, err := cli.TimeToLive(ctx, grant.ID, clientv3.WithAttachedKeys())
	if err != nil {
		return err
	}
	e.say("time-to-live: %ds of %ds left, keys attached: %d", ttl.TTL, ttl.GrantedTTL, len(ttl.Keys))
	if err := expect(ttl.TTL > 0 && ttl.TTL <= 3 && len(ttl.Keys) == 1, "a live lease with one key, got TTL=%d keys=%d", ttl.TTL, len(ttl.Keys)); err != nil {
		return err
	}

	if _, err := cli.Revoke(ctx, grant.ID); err != nil {
		return err
	}
	if err := expectGone(ctx, e, session); err != nil {
		return err
	}
	e.say("revoked the lease: %s is gone with it", e.rel(session))

	if err := oneLeaseManyKeys(ctx, e); err != nil {
		return err
	}
	if err := leaseUseCases(ctx, e); err != nil {
		return err
	}
	return noticeLostKeepAlive(ctx, e)
}

// oneLeaseManyKeys attaches three keys to one lease and lets it expire: all go at once.
func oneLeaseManyKeys(ctx context.Context, e *env) error {
	grant, err := e.client.Grant(ctx, 2)
	if err != nil {
		return err
	}
	keys := []string{e.key("many/a"), e.key("many/b"), e.key("many/c")}
	for _, k := range keys {
		if _, err := e.client.Put(ctx, k, "x", clientv3.WithLease(grant.ID)); err != nil {
			return err
		}
	}
	// Watch from the next revision so that no delete can slip between the check and the wait.
	resp, err := e.client.Get(ctx, e.key("many/"), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	e.say("one lease (TTL 2s) holds %d keys; no keep-alive, so it expires", resp.Count)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	deleted := map[string]bool{}
	start := time.Now()
	for wr := range e.client.Watch(wctx, e.key("many/"), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				deleted[string(ev.Kv.Key)] = true
			}
		}
		if len(deleted) == len(keys) {
			e.say("the lease expired after %.1fs: etcd deleted all %d keys", time.Since(start).Seconds(), len(keys))
			return nil
		}
	}
	return expect(false, "all %d keys deleted when their lease expired, saw %d", len(keys), len(deleted))
}

// leaseUseCases shows the guide's three uses: a session, a service registration, a lock.
func leaseUseCases(ctx context.Context, e *env) error {
	// 1. A user session that expires after 30 minutes of no renewal.
	sess, err := e.client.Grant(ctx, 1800)
	if err != nil {
		return err
	}
	if _, err := e.client.Put(ctx, e.key("sessions/abc"), `{"user":"alice"}`, clientv3.WithLease(sess.ID)); err != nil {
		return err
	}
	e.say("use 1, session: sessions/abc lives for %ds unless renewed", sess.TTL)

	// 2. A service registration kept by heartbeats; it vanishes when they stop.
	reg, err := e.client.Grant(ctx, 30)
	if err != nil {
		return err
	}
	if _, err := e.client.Put(ctx, e.key("services/api/instance-1"), "10.0.0.1:8080", clientv3.WithLease(reg.ID)); err != nil {
		return err
	}
	hbCtx, stopHB := context.WithCancel(ctx)
	if _, err := e.client.KeepAlive(hbCtx, reg.ID); err != nil {
		stopHB()
		return err
	}
	e.say("use 2, registration: instance-1 registered, heartbeat running")
	stopHB()

	// 3. A temporary lock: create-if-absent on a lease, so a crashed holder frees it after the TTL.
	lockKey := e.key("locks/resource")
	acquire := func(holder string) (bool, clientv3.LeaseID, error) {
		l, err := e.client.Grant(ctx, 60)
		if err != nil {
			return false, 0, err
		}
		resp, err := e.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(lockKey), "=", 0)).
			Then(clientv3.OpPut(lockKey, holder, clientv3.WithLease(l.ID))).
			Commit()
		if err != nil {
			return false, 0, err
		}
		if !resp.Succeeded {
			_, _ = e.client.Revoke(ctx, l.ID)
		}
		return resp.Succeeded, l.ID, nil
	}
	gotA, leaseA, err := acquire("node-a")
	if err != nil {
		return err
	}
	gotB, _, err := acquire("node-b")
	if err != nil {
		return err
	}
	e.say("use 3, temporary lock: node-a acquired=%v, node-b acquired=%v while node-a holds it", gotA, gotB)
	if err := expect(gotA && !gotB, "only the first of two contenders to get the lock"); err != nil {
		return err
	}
	if _, err := e.client.Revoke(ctx, leaseA); err != nil { // node-a's lease ends, as after a crash
		return err
	}
	gotB, leaseB, err := acquire("node-b")
	if err != nil {
		return err
	}
	e.say("node-a's lease ended: node-b acquired=%v", gotB)
	if err := expect(gotB, "the lock to be free once its holder's lease ended"); err != nil {
		return err
	}
	for _, id := range []clientv3.LeaseID{sess.ID, reg.ID, leaseB} {
		if _, err := e.client.Revoke(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// noticeLostKeepAlive shows Best Practices 5: the keep-alive channel closes when the lease
// is gone, and the holder notices, grants a new lease and registers again.
func noticeLostKeepAlive(ctx context.Context, e *env) error {
	k := e.key("monitored")
	grant, err := e.client.Grant(ctx, 5)
	if err != nil {
		return err
	}
	if _, err := e.client.Put(ctx, k, "v", clientv3.WithLease(grant.ID)); err != nil {
		return err
	}
	kaCtx, stopKA := context.WithCancel(ctx)
	defer stopKA()
	ka, err := e.client.KeepAlive(kaCtx, grant.ID)
	if err != nil {
		return err
	}
	<-ka // the first answer: the keep-alive runs
	// Someone (an operator, or etcd after a long partition) ends the lease.
	if _, err := e.client.Revoke(ctx, grant.ID); err != nil {
		return err
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ka:
			if ok {
				continue // answers sent before the revoke
			}
			e.say("keep-alive channel closed: lease %x is lost; granting a new one", grant.ID)
			again, err := e.client.Grant(ctx, 5)
			if err != nil {
				return err
			}
			if _, err := e.client.Put(ctx, k, "v", clientv3.WithLease(again.ID)); err != nil {
				return err
			}
			e.say("re-registered %s on lease %x", e.rel(k), again.ID)
			_, err = e.client.Revoke(ctx, again.ID)
			return err
		case <-deadline:
			return expect(false, "the keep-alive channel to close within 10s of the revoke")
		}
	}
}

// expectGone checks that key no longer exists.
func expectGone(ctx context.Context, e *env, key string) error {
	resp, err := e.client.Get(ctx, key)
	if err != nil {
		return err
	}
	return expect(resp.Count == 0, "%s to be deleted, it still exists", key)
}
