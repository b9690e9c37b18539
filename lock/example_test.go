package lock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// The basic lock: Lock, the critical section, Unlock; and WithLock for the same in one call.
func Example() {
	ctx := context.Background()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	l, err := lock.New(c.Client(), "/locks/resource1", lock.Options{TTL: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	if err := l.Lock(ctx); err != nil {
		panic(err)
	}
	fmt.Println("holding the lock:", l.Token() > 0)
	if err := l.Unlock(ctx); err != nil {
		panic(err)
	}

	err = l.WithLock(ctx, func() error {
		fmt.Println("inside the critical section")
		return nil
	})
	fmt.Println("WithLock:", err)
	// Output:
	// holding the lock: true
	// inside the critical section
	// WithLock: <nil>
}

// Guard makes a write conditional on still holding the lock: a holder that lost it (paused
// past its TTL, cut off from etcd) has its write rejected instead of overwriting the next
// holder's.
func ExampleLock_Guard() {
	ctx := context.Background()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	cli := c.Client()

	l, err := lock.New(cli, "/locks/report", lock.Options{TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	if err := l.Lock(ctx); err != nil {
		panic(err)
	}

	write := func(v string) bool {
		resp, err := cli.Txn(ctx).If(l.Guard()).Then(clientv3.OpPut("/reports/today", v)).Commit()
		if err != nil {
			panic(err)
		}
		return resp.Succeeded
	}
	fmt.Println("write while holding:", write("v1"))

	// Someone removes the lock's key, as etcd does when the holder's lease expires.
	if _, err := cli.Delete(ctx, "/locks/report/", clientv3.WithPrefix()); err != nil {
		panic(err)
	}
	<-l.Lost()
	fmt.Println("write after losing it:", write("v2"))
	fmt.Println("Unlock:", errors.Is(l.Unlock(ctx), lock.ErrLost))
	// Output:
	// write while holding: true
	// write after losing it: false
	// Unlock: true
}

// TryLock does not wait for another holder.
func ExampleLock_TryLock() {
	ctx := context.Background()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	a, _ := lock.New(c.Client(), "/locks/job", lock.Options{})
	b, _ := lock.New(c.Client(), "/locks/job", lock.Options{})
	defer a.Close()
	defer b.Close()

	ok, _ := a.TryLock(ctx)
	fmt.Println("a:", ok)
	ok, _ = b.TryLock(ctx)
	fmt.Println("b while a holds it:", ok)
	_ = a.Unlock(ctx)
	ok, _ = b.TryLock(ctx)
	fmt.Println("b after a let go:", ok)
	_ = b.Unlock(ctx)
	// Output:
	// a: true
	// b while a holds it: false
	// b after a let go: true
}

// Readers share an RWLock, a writer has it alone.
func ExampleNewRW() {
	ctx := context.Background()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	reader, _ := lock.NewRW(c.Client(), "/locks/data", lock.Options{})
	other, _ := lock.NewRW(c.Client(), "/locks/data", lock.Options{})
	defer reader.Close()
	defer other.Close()

	_ = reader.RLock(ctx)
	ok, _ := other.TryRLock(ctx)
	fmt.Println("a second reader:", ok)
	ok, _ = other.TryLock(ctx)
	fmt.Println("a writer while two read:", ok)
	_ = other.RUnlock(ctx)
	_ = reader.RUnlock(ctx)

	_ = other.Lock(ctx)
	ok, _ = reader.TryRLock(ctx)
	fmt.Println("a reader while one writes:", ok)
	_ = other.Unlock(ctx)
	// Output:
	// a second reader: true
	// a writer while two read: false
	// a reader while one writes: false
}

// A Manager's locks share one session.
func ExampleNewManager() {
	ctx := context.Background()
	c, err := etcdtest.Start(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	m, err := lock.NewManager(c.Client(), "/locks/tenants", lock.Options{})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	acme, _ := m.Get("acme")
	globex, _ := m.Get("globex")
	_ = acme.Lock(ctx)
	ok, _ := globex.TryLock(ctx)
	fmt.Println("two names are two locks:", ok)
	fmt.Println("keys:", acme.Key(), globex.Key())
	// Output:
	// two names are two locks: true
	// keys: /locks/tenants/acme /locks/tenants/globex
}
