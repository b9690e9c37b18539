//go:build unix

package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/lock"
)

// counterValue is the counter's value: "<n> <token> <holder>", so that etcd's history of
// the key tells every increment with the hold it was made under, and no two increments
// write the same value.
type counterValue struct {
	n      int
	token  int64
	holder string
}

func (c counterValue) String() string { return fmt.Sprintf("%d %d %s", c.n, c.token, c.holder) }

func parseCounter(v string) (counterValue, error) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return counterValue{}, fmt.Errorf("counter value %q", v)
	}
	n, err1 := strconv.Atoi(f[0])
	tok, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return counterValue{}, fmt.Errorf("counter value %q: %w", v, err)
	}
	return counterValue{n: n, token: tok, holder: f[2]}, nil
}

// Rounds of a lock holder: a hold makes a few increments, spaced so that a pause of the
// lock's holder lands in the hold; the negative control's holds are longer.
const (
	roundTimeout = 20 * time.Second
	incsPerHold  = 3
	incGap       = 50 * time.Millisecond
	unsafeIncs   = 12
	unsafeGap    = 150 * time.Millisecond
)

// runLocker is a lock holder: until SIGTERM it takes the lock, increments the counter a
// few times under it, and unlocks.
func runLocker() int {
	env, hist, cli, fail, closeAll, err := startProc("locker")
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	l, err := lock.New(cli, lockKey, lock.Options{TTL: ttl, Logger: newLogger(env.id)})
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	h := holder{env: env, cli: cli, l: l, hist: hist}
	for ctx.Err() == nil {
		h.round(ctx)
		pause := time.NewTimer(time.Duration(10+env.rng.IntN(40)) * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
	}
	if err := l.Close(); err != nil {
		return fail(fmt.Errorf("closing the lock: %w", err))
	}
	return 0
}

type holder struct {
	env  procEnv
	cli  *clientv3.Client
	l    *lock.Lock
	hist *historyFile
}

// round locks, increments the counter a few times and unlocks. A holder stops its
// increments when the lock is lost (Lost closes, or the guard fails). The unsafe variant
// reads neither: it writes without Guard, as a holder that trusts its hold would.
func (h *holder) round(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	if err := h.l.Lock(rctx); err != nil {
		if ctx.Err() == nil {
			h.hist.write(record{Op: "hold", Proc: h.env.id, Result: "error", Err: err.Error()})
		}
		return
	}
	token, lost := h.l.Token(), h.l.Lost()
	guard := []clientv3.Cmp{h.l.Guard()}
	h.hist.write(record{Op: "hold", Proc: h.env.id, Token: token, Result: "held"})
	n, gap := incsPerHold, incGap
	if h.env.unsafe {
		n, gap, guard, lost = unsafeIncs, unsafeGap, nil, nil
	}
incs:
	for i := 0; i < n && rctx.Err() == nil; i++ {
		if i > 0 {
			time.Sleep(gap)
		}
		select {
		case <-lost: // nil, never ready, for the unsafe variant
			h.hist.write(record{Op: "inc", Proc: h.env.id, Token: token, Result: "lost", Err: "Lost closed"})
			break incs
		default:
		}
		rec := h.increment(rctx, guard, token)
		h.hist.write(rec)
		if rec.Result != "written" && rec.Result != "conflict" {
			break
		}
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer ucancel()
	_ = h.l.Unlock(uctx) // a lost hold is over either way
}

// increment reads the counter and writes the next value in a transaction guarded by the
// counter's mod revision as read, and by the lock (guard). A write whose answer was lost
// may have been applied: the counter then holds this increment's value (unique: it names
// the hold and the number), which a read tells.
func (h *holder) increment(ctx context.Context, guard []clientv3.Cmp, token int64) record {
	rec := record{Op: "inc", Proc: h.env.id, Key: counterKey, Token: token}
	get := func() (*clientv3.GetResponse, error) {
		for {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := h.cli.Get(actx, counterKey)
			cancel()
			if err == nil || ctx.Err() != nil || !etcderr.IsTransient(err) {
				return resp, err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	call := time.Now().UnixNano()
	resp, err := get()
	if err == nil && len(resp.Kvs) == 1 {
		h.hist.write(record{Op: "read", Proc: h.env.id, Key: counterKey, Token: token, Value: string(resp.Kvs[0].Value), Call: call})
	}
	if err == nil && len(resp.Kvs) == 0 {
		err = errors.New("the counter is gone")
	}
	if err != nil {
		rec.Result, rec.Err = "error", "reading the counter: "+err.Error()
		return rec
	}
	seen := resp.Kvs[0]
	cur, err := parseCounter(string(seen.Value))
	if err != nil {
		rec.Result, rec.Err = "error", err.Error()
		return rec
	}
	next := counterValue{n: cur.n + 1, token: token, holder: h.env.id}
	rec.Value = next.String()
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(counterKey), "=", seen.ModRevision)}, guard...)
	rec.Call = time.Now().UnixNano()
	h.hist.write(record{Op: "cas", Proc: h.env.id, Key: counterKey, Token: token, Value: rec.Value, Call: rec.Call})
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	tresp, err := h.cli.Txn(actx).If(cmps...).Then(clientv3.OpPut(counterKey, rec.Value)).Commit()
	cancel()
	switch {
	case err == nil && tresp.Succeeded:
		rec.Result, rec.Rev = "written", tresp.Header.Revision
		return rec
	case err != nil:
		// Not answered: the counter tells whether it was applied.
		now, rerr := get()
		if rerr == nil && len(now.Kvs) == 1 && string(now.Kvs[0].Value) == rec.Value {
			rec.Result, rec.Rev = "written", now.Kvs[0].ModRevision
			return rec
		}
		rec.Result, rec.Err = "unknown", err.Error()
		if rerr == nil && (len(now.Kvs) == 0 || now.Kvs[0].ModRevision != seen.ModRevision) {
			// The counter moved past the value read: this write can no longer apply.
			rec.Result = "error"
		}
		return rec
	}
	// Refused: by the mod revision, or by the guard when the lock is gone.
	rec.Result = "conflict"
	if len(guard) > 0 {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		g, gerr := h.cli.Txn(actx).If(guard...).Commit()
		cancel()
		if gerr == nil && !g.Succeeded {
			rec.Result = "lost"
		}
	}
	return rec
}
