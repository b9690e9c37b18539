//go:build unix

package sharding_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/lock"
)

// Lock holders: goroutines of the suite's process, each with a client and a lock.Lock of its
// own (as separate processes would have), that take one lock in turn and, under it,
// increment a counter with a write fenced by the lock. Every call of a round (Lock, the
// increment, Unlock) runs under one context of lockRoundTimeout: a round that fails is
// recorded as an error.
//
// The counter's value is "<n> <token> <holder>": the history of its key in etcd tells every
// increment that was applied, with the hold it was made under.
const (
	lockKey          = "/locks/counter"
	counterKey       = "/counter"
	lockRoundTimeout = 15 * time.Second
	// lockAttempt bounds one attempt of a request of the increment, and lockHedge is how
	// long a request waits for an answer before it sends two more attempts (see hedged).
	lockAttempt = 2 * time.Second
	lockHedge   = 300 * time.Millisecond
	// lockPace spaces a holder's rounds, so that the holders do not take the cores the
	// members need.
	lockPace = 20 * time.Millisecond
)

// increment is one increment of the counter: the value it wrote and the revision of the
// write.
type increment struct {
	n      int
	token  int64
	holder string
	rev    int64
}

func (i increment) value() string { return fmt.Sprintf("%d %d %s", i.n, i.token, i.holder) }

func parseIncrement(v []byte, rev int64) (increment, error) {
	f := strings.Fields(string(v))
	if len(f) != 3 {
		return increment{}, fmt.Errorf("counter value %q", v)
	}
	n, err1 := strconv.Atoi(f[0])
	tok, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return increment{}, fmt.Errorf("counter value %q: %w", v, err)
	}
	return increment{n: n, token: tok, holder: f[2], rev: rev}, nil
}

// lockErr is a failed round.
type lockErr struct {
	at     time.Time
	holder string
	err    error
}

func (e lockErr) String() string {
	return fmt.Sprintf("%s %s: %v", e.at.Format("15:04:05.000"), e.holder, e.err)
}

// errLockLost: the increment's guard failed, the lock was no longer held.
var errLockLost = errors.New("the lock's guard failed: the lock was lost")

// lostLock reports whether a round failed because its lock or session was lost.
func lostLock(err error) bool {
	return errors.Is(err, lock.ErrLost) || errors.Is(err, lock.ErrSessionExpired) || errors.Is(err, errLockLost)
}

// lockers is the running set of lock holders.
type lockers struct {
	stopping atomic.Bool
	wg       sync.WaitGroup
	rounds   atomic.Int64 // rounds that succeeded
	// gate is held for reading by each round until it is recorded, and for writing by
	// check, which so compares etcd's history with the records between rounds.
	gate sync.RWMutex

	// unanswered counts the holders' sessions that ended because their keep-alives went
	// unanswered, as their logs tell.
	unanswered atomic.Int64

	mu      sync.Mutex
	errs    []lockErr   // every failed round
	checked int         // errs[:checked] were checked already
	incs    []increment // every increment a holder made (it knows it was applied)
}

// startLockers starts n lock holders with locks of the given session TTL.
func (h *harness) startLockers(ctx context.Context, n int, ttl time.Duration) *lockers {
	GinkgoHelper()
	_, err := h.cli.Put(ctx, counterKey, increment{holder: "init"}.value())
	Expect(err).NotTo(HaveOccurred())
	lk := &lockers{}
	log := funcr.New(func(prefix, args string) {
		if strings.Contains(args, unansweredMsg) {
			lk.unanswered.Add(1)
		}
		GinkgoWriter.Println(prefix, args)
	}, funcr.Options{Verbosity: 1, LogTimestamp: true})
	for i := range n {
		holder := fmt.Sprintf("holder%d", i+1)
		cli, err := h.c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		l, err := lock.New(cli, lockKey, lock.Options{TTL: ttl, Logger: log.WithName(holder)})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		lk.wg.Add(1)
		// The holder's goroutine ends when stop is called, after its round in progress (at
		// most lockRoundTimeout).
		go func() {
			defer lk.wg.Done()
			tick := time.NewTicker(lockPace)
			defer tick.Stop()
			for !lk.stopping.Load() {
				lk.gate.RLock()
				rctx, cancel := context.WithTimeout(context.Background(), lockRoundTimeout)
				inc, err := round(rctx, cli, l, holder)
				cancel()
				lk.mu.Lock()
				if inc.rev != 0 {
					lk.incs = append(lk.incs, inc)
				}
				if err != nil {
					lk.errs = append(lk.errs, lockErr{at: time.Now(), holder: holder, err: err})
				}
				lk.mu.Unlock()
				lk.gate.RUnlock()
				if err == nil {
					lk.rounds.Add(1)
				}
				<-tick.C
			}
		}()
	}
	DeferCleanup(lk.stop)
	return lk
}

// stop stops the holders after their rounds in progress; it may be called again.
func (lk *lockers) stop() {
	lk.stopping.Store(true)
	lk.wg.Wait()
}

// failed returns the failed rounds since the last call that tolerated does not accept.
func (lk *lockers) failed(tolerated func(lockErr) bool) []string {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	var out []string
	errs := lk.errs[lk.checked:]
	lk.checked = len(lk.errs)
	for _, e := range errs {
		if tolerated == nil || !tolerated(e) {
			out = append(out, e.String())
		}
	}
	return out
}

// more waits for n more successful rounds.
func (lk *lockers) more(n int64) {
	GinkgoHelper()
	from := lk.rounds.Load()
	Eventually(lk.rounds.Load).WithTimeout(30*time.Second).Should(BeNumerically(">=", from+n), "lock rounds")
}

// round locks, increments the counter under the lock and unlocks. inc is the increment
// when it was applied, even if the round failed after it.
func round(ctx context.Context, cli *clientv3.Client, l *lock.Lock, holder string) (inc increment, err error) {
	if err := l.Lock(ctx); err != nil {
		return inc, fmt.Errorf("Lock: %w", err)
	}
	inc, err = fencedIncrement(ctx, cli, l.Guard(), l.Token(), holder)
	if err != nil {
		err = fmt.Errorf("the fenced increment: %w", err)
	}
	if uerr := l.Unlock(ctx); uerr != nil {
		err = errors.Join(err, fmt.Errorf("Unlock: %w", uerr))
	}
	return inc, err
}

// fencedIncrement adds one to the counter in a transaction guarded by the lock and by the
// counter's mod revision as read. A write whose answer was lost, or sent twice, may have
// been applied: the counter then holds this increment's value (unique: it names the hold),
// and the write is not sent again.
func fencedIncrement(ctx context.Context, cli *clientv3.Client, guard clientv3.Cmp, token int64, holder string) (increment, error) {
	read := func() (*mvccpb.KeyValue, error) {
		resp, err := hedged(ctx, func(ctx context.Context) (*clientv3.GetResponse, error) { return cli.Get(ctx, counterKey) })
		if err == nil && len(resp.Kvs) == 0 {
			err = errors.New("the counter is gone")
		}
		if err != nil {
			return nil, err
		}
		return resp.Kvs[0], nil
	}
	seen, err := read()
	if err != nil {
		return increment{}, fmt.Errorf("reading the counter: %w", err)
	}
	cur, err := parseIncrement(seen.Value, seen.ModRevision)
	if err != nil {
		return increment{}, err
	}
	next := increment{n: cur.n + 1, token: token, holder: holder}
	for {
		tresp, err := hedged(ctx, func(ctx context.Context) (*clientv3.TxnResponse, error) {
			return cli.Txn(ctx).
				If(guard, clientv3.Compare(clientv3.ModRevision(counterKey), "=", seen.ModRevision)).
				Then(clientv3.OpPut(counterKey, next.value())).
				Commit()
		})
		if err == nil && tresp.Succeeded {
			next.rev = tresp.Header.Revision
			return next, nil
		}
		if err != nil && (ctx.Err() != nil || !etcderr.IsTransient(err)) {
			return increment{}, fmt.Errorf("writing %d, outcome unknown: %w", next.n, err)
		}
		// Refused, or not known: the counter tells whether an attempt was applied, and the
		// guard whether the lock is still held.
		now, rerr := read()
		if rerr != nil {
			return increment{}, fmt.Errorf("writing %d, outcome unknown: %w", next.n, errors.Join(err, rerr))
		}
		if string(now.Value) == next.value() {
			next.rev = now.ModRevision
			return next, nil
		}
		held, gerr := hedged(ctx, func(ctx context.Context) (bool, error) {
			resp, err := cli.Txn(ctx).If(guard).Commit()
			return err == nil && resp.Succeeded, err
		})
		switch {
		case gerr != nil:
			return increment{}, fmt.Errorf("writing %d: checking the lock: %w", next.n, gerr)
		case !held:
			return increment{}, errLockLost
		case now.ModRevision != seen.ModRevision:
			return increment{}, fmt.Errorf("the counter moved under the held lock to %q at revision %d", now.Value, now.ModRevision)
		case err == nil:
			return increment{}, fmt.Errorf("writing %d refused while the lock is held and the counter unchanged", next.n)
		}
	}
}

// hedged sends a request until etcd answers it, an attempt fails with an error that is not
// transient, or ctx ends, as a careful caller does: each attempt has a deadline of its own
// (lockAttempt), and while none is answered two more are sent every lockHedge, so that
// the client's turn-taking over etcd's members carries one to a member that answers. Only
// requests that are safe to send twice at once may use it.
func hedged[T any](ctx context.Context, op func(context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	actx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait: the attempts in flight end with it
	results := make(chan result)
	inFlight := 0
	send := func(n int) {
		for range n {
			inFlight++
			wg.Add(1)
			// The attempt ends by its deadline, or when hedged returns and cancels actx.
			go func() {
				defer wg.Done()
				c, cancel := context.WithTimeout(actx, lockAttempt)
				defer cancel()
				v, err := op(c)
				select {
				case results <- result{v, err}:
				case <-actx.Done():
				}
			}()
		}
	}
	hedge := time.NewTicker(lockHedge)
	defer hedge.Stop()
	send(1)
	var last error = context.Canceled
	for {
		select {
		case <-ctx.Done():
			var zero T
			return zero, errors.Join(ctx.Err(), last)
		case <-hedge.C:
			if inFlight < 6 {
				send(2)
			}
		case r := <-results:
			inFlight--
			if r.err == nil || ctx.Err() != nil || !etcderr.IsTransient(r.err) {
				return r.v, r.err
			}
			last = r.err
			if inFlight == 0 {
				send(1)
			}
		}
	}
}

// check matches the holders' records with etcd's history from revision 1: the counter went
// up by one at every write, each increment once (a retried write applied at most once);
// every write was made while its hold was the head of the lock's queue; every increment a
// holder made is in etcd and every one in etcd was made by a holder; no queue entry was
// written twice; no round failed since the last check, but those tolerated accepts. It
// checks the queue's head only for the writes after revision from. It returns the number
// of increments in etcd. The holders wait while it runs.
func (lk *lockers) check(ctx context.Context, h *harness, from int64, tolerated func(lockErr) bool) int {
	GinkgoHelper()
	lk.gate.Lock()
	defer lk.gate.Unlock()
	Expect(lk.failed(tolerated)).To(BeEmpty(), "failed lock rounds")
	evs, err := h.events(ctx, counterKey)
	Expect(err).NotTo(HaveOccurred())
	lk.mu.Lock()
	recorded := map[int64]increment{}
	for _, inc := range lk.incs {
		recorded[inc.rev] = inc
	}
	lk.mu.Unlock()
	var problems []string
	var writes []increment
	for i, ev := range evs {
		Expect(ev.Type).To(Equal(clientv3.EventTypePut), "the counter deleted at revision %d", ev.Kv.ModRevision)
		inc, err := parseIncrement(ev.Kv.Value, ev.Kv.ModRevision)
		Expect(err).NotTo(HaveOccurred())
		if inc.n != i {
			problems = append(problems, fmt.Sprintf("revision %d wrote %d after %d: an increment lost or applied twice", inc.rev, inc.n, i-1))
		}
		if i == 0 {
			continue
		}
		writes = append(writes, inc)
		if r, ok := recorded[inc.rev]; !ok || r != inc {
			problems = append(problems, fmt.Sprintf("revision %d wrote %+v; the holder recorded %+v", inc.rev, inc, r))
		}
		delete(recorded, inc.rev)
	}
	for _, r := range recorded {
		problems = append(problems, fmt.Sprintf("%+v recorded as applied, but not in etcd's history", r))
	}
	for _, w := range writes {
		if w.rev <= from {
			continue
		}
		resp, err := h.cli.Get(ctx, lockKey+"/", append(clientv3.WithFirstCreate(), clientv3.WithRev(w.rev))...)
		Expect(err).NotTo(HaveOccurred())
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != w.token {
			problems = append(problems, fmt.Sprintf("revision %d wrote %+v while the head of the lock's queue was %v", w.rev, w, resp.Kvs))
		}
	}
	entries, err := h.events(ctx, lockKey+"/")
	Expect(err).NotTo(HaveOccurred())
	for _, ev := range entries {
		if ev.Type == clientv3.EventTypePut && ev.Kv.Version != 1 {
			problems = append(problems, fmt.Sprintf("queue entry %s written again at revision %d (version %d)", ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.Version))
		}
	}
	Expect(problems).To(BeEmpty(), "the lock holders' increments against etcd's history")
	return len(writes)
}
