//go:build unix

package sharding_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// A member process is the test binary started again with memberEnv set: TestMain then runs
// runMember instead of the suite. The member runs the manager until SIGTERM (a graceful
// leave) and tells its story on stdout, one line each:
//
//	shards=<url of /debug/shards>   the manager serves
//	stopped err=<Start's error>     Start returned; the process exits
const (
	memberEnv    = "ETCDKIT_SHARDTEST_MEMBER" // the member's ID
	endpointsEnv = "ETCDKIT_SHARDTEST_ENDPOINTS"
	historyEnv   = "ETCDKIT_SHARDTEST_HISTORY" // the member's history file
	ttlEnv       = "ETCDKIT_SHARDTEST_TTL"     // the member's LeaseTTL, as time.ParseDuration reads it; ttl when unset
	rangesEnv    = "ETCDKIT_SHARDTEST_RANGES"  // "1": the range mode (manager.RangeShards)
)

// slowPrefix marks an item whose reconcile takes slowFor, whatever happens to its context:
// a spec pauses a member in the middle of one.
const (
	slowPrefix = "slow-"
	slowFor    = time.Second
)

// record is one line of a member's history.
type record struct {
	Ev     string `json:"ev"` // "start" or "end"
	Member string `json:"member"`
	Seq    int64  `json:"seq"` // numbers the reconciles of one process: pairs a start with its end
	Key    string `json:"key"`
	Shard  int    `json:"shard"`
	Token  int64  `json:"token"`
	T      int64  `json:"t"` // wall time, Unix ns
	// The end record's outcome: the item's value read, what became of the write (written,
	// unchanged, fenced, canceled, missing, or "error: ..."), the revision of an accepted
	// write, and when the reconcile's context ended if it did before the reconcile did.
	Item    string `json:"item,omitempty"`
	Result  string `json:"result,omitempty"`
	Rev     int64  `json:"rev,omitempty"`
	CtxDone int64  `json:"ctxDone,omitempty"`
}

// output is the value of /out/<item>: who wrote it, under which fence, from which value.
type output struct {
	Member string `json:"member"`
	Shard  int    `json:"shard"`
	Token  int64  `json:"token"`
	Item   string `json:"item"`
}

// historyFile appends records, one write(2) each on an O_APPEND file, so that a record is
// on disk as soon as it is written even if the process is killed right after.
type historyFile struct {
	mu  sync.Mutex
	f   *os.File
	seq atomic.Int64
}

func (h *historyFile) write(r record) {
	b, _ := json.Marshal(r) // strings and numbers: it always encodes
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.f.Write(append(b, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "member: writing the history:", err)
	}
}

func runMember() int {
	id := os.Getenv(memberEnv)
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "member %s: %v\n", id, err)
		return 1
	}
	f, err := os.OpenFile(os.Getenv(historyEnv), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	hist := &historyFile{f: f}
	leaseTTL := ttl
	if v := os.Getenv(ttlEnv); v != "" {
		if leaseTTL, err = time.ParseDuration(v); err != nil {
			return fail(fmt.Errorf("%s: %w", ttlEnv, err))
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(os.Getenv(endpointsEnv), ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, id, prefix, args)
	}, funcr.Options{Verbosity: 1, LogTimestamp: true})

	sharding := &manager.ShardingOptions{Shards: shards, DrainTimeout: 5 * time.Second}
	if os.Getenv(rangesEnv) == "1" {
		sharding = &manager.ShardingOptions{Mode: manager.RangeShards, ReportInterval: 300 * time.Millisecond, DrainTimeout: 5 * time.Second}
	}
	mgr, err := manager.New(manager.Options{
		Client: cli, Name: managerName, ID: id, LeaseTTL: leaseTTL,
		GracefulShutdownTimeout: 10 * time.Second,
		HealthProbeAddr:         "127.0.0.1:0",
		Sharding:                sharding,
		Logger:                  log,
	})
	if err != nil {
		return fail(err)
	}
	out, err := store.New[output](cli, outPrefix, store.Options[output]{Logger: log.WithName("out")})
	if err != nil {
		return fail(err)
	}
	err = manager.NewControllerManagedBy(mgr).Named("items").
		For(source.Prefix(itemsPrefix)).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			return reconcileItem(ctx, id, cli, out, hist, req)
		}))
	if err != nil {
		return fail(err)
	}

	ctx := manager.SetupSignalHandler()
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }() // ends when SIGTERM ends ctx and the member has left
	for mgr.HealthProbeAddr() == "" {
		select {
		case err := <-done:
			fmt.Printf("stopped err=%v\n", err)
			return 1
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Printf("shards=http://%s/debug/shards\n", mgr.HealthProbeAddr())
	err = <-done
	fmt.Printf("stopped err=%v\n", err)
	if err != nil {
		return 1
	}
	return 0
}

// reconcileItem is the workload: it reads the item, works for 20 to 50 ms, and writes
// /out/<item> through the store, fenced by the shard. The write ignores the end of the
// reconcile's context but keeps its fence: a member that lost its shard while the write
// was under way is stopped by the fence alone.
func reconcileItem(ctx context.Context, id string, cli *clientv3.Client, out *store.Store[output], hist *historyFile, req reconcile.Request) (_ reconcile.Result, err error) {
	sh, ok := manager.ShardFrom(ctx)
	if !ok {
		return reconcile.Result{}, reconcile.TerminalError(errors.New("no shard in the reconcile's context"))
	}
	var ctxDone atomic.Int64
	stop := context.AfterFunc(ctx, func() { ctxDone.Store(time.Now().UnixNano()) })
	rec := record{Member: id, Seq: hist.seq.Add(1), Key: req.Key, Shard: sh.ID, Token: sh.Token}
	start := rec
	start.Ev, start.T = "start", time.Now().UnixNano()
	hist.write(start)
	end := rec
	end.Ev = "end"
	defer func() {
		stop()
		end.T, end.CtxDone = time.Now().UnixNano(), ctxDone.Load()
		if end.Result == "" && err != nil {
			end.Result = "error: " + err.Error()
		}
		hist.write(end)
	}()

	// The read, like the write, ignores the end of the reconcile's context: a member paused
	// while its read was under way goes on to the write when it resumes, so that the specs
	// see its fence refuse the write, whether the pause came before or after the read.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	resp, err := cli.Get(rctx, req.Key)
	rcancel()
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(resp.Kvs) == 0 {
		end.Result = "missing" // the specs never delete items
		return reconcile.Result{}, nil
	}
	item := string(resp.Kvs[0].Value)
	end.Item = item
	if strings.HasPrefix(item, slowPrefix) {
		time.Sleep(slowFor)
	} else {
		t := time.NewTimer(20*time.Millisecond + rand.N(30*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			end.Result = "canceled"
			return reconcile.Result{}, ctx.Err()
		case <-t.C:
		}
	}

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	key := outPrefix + strings.TrimPrefix(req.Key, itemsPrefix)
	want := output{Member: id, Shard: sh.ID, Token: sh.Token, Item: item}
	var obj *store.Object[output]
	cur, err := out.Get(wctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		obj, err = out.Create(wctx, key, &want)
	case err != nil:
	case cur.Value == want:
		end.Result = "unchanged"
		return reconcile.Result{}, nil
	default:
		obj, err = out.Update(wctx, key, &want, cur.ModRevision)
	}
	switch {
	case errors.Is(err, fence.ErrFenced):
		end.Result = "fenced"
	case err == nil:
		end.Result, end.Rev = "written", obj.ModRevision
	}
	return reconcile.Result{}, err
}
