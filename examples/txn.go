package main

import (
	"context"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// runTxn shows the guide's section 5: compare-and-swap, a multi-key transfer with its Else
// branch, and the four things a comparison can look at.
func runTxn(ctx context.Context, e *env) error {
	kv := e.client

	// Compare-and-swap: only the writer that saw "0" moves the counter to "1".
	counter := e.key("counter")
	if _, err := kv.Put(ctx, counter, "0"); err != nil {
		return err
	}
	cas := func() (*clientv3.TxnResponse, error) {
		return kv.Txn(ctx).
			If(clientv3.Compare(clientv3.Value(counter), "=", "0")).
			Then(clientv3.OpPut(counter, "1")).
			Else(clientv3.OpGet(counter)).
			Commit()
	}
	first, err := cas()
	if err != nil {
		return err
	}
	e.say("compare-and-swap %s: 0 -> 1 succeeded=%v", e.rel(counter), first.Succeeded)
	if err := expect(first.Succeeded, "the first compare-and-swap on %s=0 to succeed", counter); err != nil {
		return err
	}
	second, err := cas()
	if err != nil {
		return err
	}
	seen := string(second.Responses[0].GetResponseRange().Kvs[0].Value)
	e.say("the same compare-and-swap again: succeeded=%v, Else branch read %s=%q", second.Succeeded, e.rel(counter), seen)
	if err := expect(!second.Succeeded && seen == "1", "the second compare-and-swap to fail and read 1, got succeeded=%v value=%q", second.Succeeded, seen); err != nil {
		return err
	}

	if err := transfer(ctx, e); err != nil {
		return err
	}
	return compareTargets(ctx, e)
}

// transfer moves money between two accounts in one transaction. A value comparison in etcd
// compares bytes, not numbers ("50" >= "100" holds), so the safe transfer reads both
// balances, computes in Go, and commits only if neither key changed since the read.
func transfer(ctx context.Context, e *env) error {
	a, b, logKey := e.key("account/a/balance"), e.key("account/b/balance"), e.key("transfer/log")
	if _, err := e.client.Txn(ctx).Then(clientv3.OpPut(a, "100"), clientv3.OpPut(b, "100")).Commit(); err != nil {
		return err
	}

	move := func(amount int) (bool, error) {
		read, err := e.client.Txn(ctx).Then(clientv3.OpGet(a), clientv3.OpGet(b)).Commit()
		if err != nil {
			return false, err
		}
		ka, kb := read.Responses[0].GetResponseRange().Kvs[0], read.Responses[1].GetResponseRange().Kvs[0]
		balA, _ := strconv.Atoi(string(ka.Value))
		balB, _ := strconv.Atoi(string(kb.Value))
		if balA < amount {
			e.say("transfer of %d refused before any write: a holds only %d", amount, balA)
			return false, nil
		}
		resp, err := e.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(a), "=", ka.ModRevision),
				clientv3.Compare(clientv3.ModRevision(b), "=", kb.ModRevision)).
			Then(clientv3.OpPut(a, strconv.Itoa(balA-amount)),
				clientv3.OpPut(b, strconv.Itoa(balB+amount)),
				clientv3.OpPut(logKey, fmt.Sprintf("A->B: %d", amount))).
			Else(clientv3.OpGet(a), clientv3.OpGet(b)).
			Commit()
		if err != nil {
			return false, err
		}
		return resp.Succeeded, nil
	}
	ok, err := move(50)
	if err != nil {
		return err
	}
	e.say("transfer A->B of 50 guarded by both balances' mod revisions: succeeded=%v", ok)
	if err := expect(ok, "the transfer of 50 from a balance of 100 to succeed"); err != nil {
		return err
	}
	if err := expectValues(ctx, e, map[string]string{a: "50", b: "150", logKey: "A->B: 50"}); err != nil {
		return err
	}

	// The guide guards with Value(a) >= "100". clientv3.Compare knows only =, !=, < and >
	// (">=" panics), and it compares values as bytes: a guard of Value(a) > "100" holds for a
	// balance of "50" and would let a transfer of 100 through.
	resp, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(a), ">", "100")).
		Commit()
	if err != nil {
		return err
	}
	e.say("beware: Value(a) > \"100\" with a = \"50\" holds=%v in etcd (bytes compare: \"5\" > \"1\")", resp.Succeeded)
	if err := expect(resp.Succeeded, "etcd to compare values as bytes"); err != nil {
		return err
	}

	// A concurrent writer between read and commit sends the transfer down its Else branch.
	read, err := e.client.Get(ctx, a)
	if err != nil {
		return err
	}
	seenRev := read.Kvs[0].ModRevision
	if _, err := e.client.Put(ctx, a, "40"); err != nil { // someone else spends 10
		return err
	}
	stale, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(a), "=", seenRev)).
		Then(clientv3.OpPut(a, "0"), clientv3.OpPut(b, "200")).
		Else(clientv3.OpGet(a)).
		Commit()
	if err != nil {
		return err
	}
	now := string(stale.Responses[0].GetResponseRange().Kvs[0].Value)
	e.say("a transfer based on a stale read: succeeded=%v, Else branch read a=%q, nothing written", stale.Succeeded, now)
	if err := expect(!stale.Succeeded && now == "40", "the stale transfer to take the Else branch and read 40, got succeeded=%v a=%q", stale.Succeeded, now); err != nil {
		return err
	}
	if ok, err := move(100); err != nil || ok {
		return expectErr(err, "a transfer of 100 from a balance of 40 to be refused")
	}
	return expectValues(ctx, e, map[string]string{a: "40", b: "150"})
}

// compareTargets shows the four compare targets: value, version, create and mod revision.
func compareTargets(ctx context.Context, e *env) error {
	k := e.key("compare/target")
	created, err := e.client.Put(ctx, k, "v1")
	if err != nil {
		return err
	}
	updated, err := e.client.Put(ctx, k, "v2")
	if err != nil {
		return err
	}
	createRev, modRev := created.Header.Revision, updated.Header.Revision
	cases := []struct {
		name  string
		right clientv3.Cmp
		wrong clientv3.Cmp
	}{
		{"Value", clientv3.Compare(clientv3.Value(k), "=", "v2"), clientv3.Compare(clientv3.Value(k), "=", "v1")},
		{"Version", clientv3.Compare(clientv3.Version(k), "=", 2), clientv3.Compare(clientv3.Version(k), "=", 1)},
		{"CreateRevision", clientv3.Compare(clientv3.CreateRevision(k), "=", createRev), clientv3.Compare(clientv3.CreateRevision(k), "=", modRev)},
		{"ModRevision", clientv3.Compare(clientv3.ModRevision(k), "=", modRev), clientv3.Compare(clientv3.ModRevision(k), "=", createRev)},
	}
	for _, c := range cases {
		right, err := e.client.Txn(ctx).If(c.right).Commit()
		if err != nil {
			return err
		}
		wrong, err := e.client.Txn(ctx).If(c.wrong).Commit()
		if err != nil {
			return err
		}
		e.say("%-14s compare: right value holds=%v, wrong value holds=%v", c.name, right.Succeeded, wrong.Succeeded)
		if err := expect(right.Succeeded && !wrong.Succeeded, "%s comparison to hold for the right value only", c.name); err != nil {
			return err
		}
	}
	// CreateRevision(k) == 0 is the test for "k does not exist": the basis of create-if-absent.
	absent, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.key("compare/absent")), "=", 0)).
		Then(clientv3.OpPut(e.key("compare/absent"), "created")).
		Commit()
	if err != nil {
		return err
	}
	e.say("create-if-absent with CreateRevision == 0: succeeded=%v", absent.Succeeded)
	return expect(absent.Succeeded, "create-if-absent on a missing key to succeed")
}

// expectValues checks that every key holds its value.
func expectValues(ctx context.Context, e *env, want map[string]string) error {
	for k, v := range want {
		resp, err := e.client.Get(ctx, k)
		if err != nil {
			return err
		}
		got := ""
		if len(resp.Kvs) == 1 {
			got = string(resp.Kvs[0].Value)
		}
		if err := expect(got == v, "%s = %q, got %q", k, v, got); err != nil {
			return err
		}
	}
	return nil
}

// expectErr returns err when set, or an unexpected-outcome error for what was expected.
func expectErr(err error, what string) error {
	if err != nil {
		return err
	}
	return expect(false, "%s", what)
}
