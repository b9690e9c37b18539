//go:build unix

package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
)

// output is the value of /out/<n>: who wrote it, under which fence, from which value.
type output struct {
	Member string `json:"member"`
	Shard  int    `json:"shard"`
	Token  int64  `json:"token"`
	Item   string `json:"item"`
}

func parseOutput(v string) (output, error) {
	var o output
	err := json.Unmarshal([]byte(v), &o)
	return o, err
}

func itemKey(i int) string { return fmt.Sprintf("%s%03d", itemsPrefix, i) }

func outKey(item string) string { return outPrefix + strings.TrimPrefix(item, itemsPrefix) }

func itemOf(out string) string { return itemsPrefix + strings.TrimPrefix(out, outPrefix) }

// procEnv is what every workload process reads from its environment.
type procEnv struct {
	id, history string
	endpoints   []string
	unsafe      bool
	ranges      bool
	rng         *rand.Rand
}

func readProcEnv() procEnv {
	id := os.Getenv(idEnv)
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	var seed uint64
	_, _ = fmt.Sscan(os.Getenv(seedEnv), &seed)
	return procEnv{
		id:        id,
		history:   os.Getenv(historyEnv),
		endpoints: strings.Split(os.Getenv(endpointsEnv), ","),
		unsafe:    os.Getenv(unsafeEnv) == "1",
		ranges:    os.Getenv(rangesEnv) == "1",
		rng:       rand.New(rand.NewPCG(seed, h.Sum64())),
	}
}

// newClient dials etcd as a workload does. Keep-alive pings let it leave a member that
// stopped answering (paused, or cut off by a partial partition) for another, though gRPC
// raises their interval to its least, 10 s: a stream on that member (a lease's
// keep-alives, a watch) stays stuck past the TTL meanwhile.
// startProc is what every workload process does first: it reads its environment, opens its
// history file and a client of etcd. fail reports an error on stderr, naming the process;
// closeAll closes what was opened.
func startProc(kind string) (env procEnv, hist *historyFile, cli *clientv3.Client, fail func(error) int, closeAll func(), err error) {
	env = readProcEnv()
	fail = func(err error) int {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", kind, env.id, err)
		return 1
	}
	closeAll = func() {}
	if hist, err = openHistory(env.history); err != nil {
		return env, nil, nil, fail, closeAll, err
	}
	if cli, err = newClient(env.endpoints); err != nil {
		hist.close()
		return env, nil, nil, fail, closeAll, err
	}
	return env, hist, cli, fail, func() { _ = cli.Close(); hist.close() }, nil
}

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
}

func newLogger(id string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, time.Now().Format("15:04:05.000"), id, prefix, args)
	}, funcr.Options{})
}

// runMember is a controller member: a manager with Sharding whose controller copies every
// item to its output, until SIGTERM (a graceful leave).
func runMember() int {
	env, hist, cli, fail, closeAll, err := startProc("member")
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	log := newLogger(env.id)
	sharding := &manager.ShardingOptions{Shards: shards, DrainTimeout: 5 * time.Second}
	if env.ranges {
		sharding = &manager.ShardingOptions{Mode: manager.RangeShards, ReportInterval: 500 * time.Millisecond, DrainTimeout: 5 * time.Second}
	}
	mgr, err := manager.New(manager.Options{
		Client: cli, Name: managerName, ID: env.id, LeaseTTL: ttl,
		GracefulShutdownTimeout: 10 * time.Second,
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
	c := copier{env: env, cli: cli, out: out, hist: hist}
	err = manager.NewControllerManagedBy(mgr).Named("items").
		For(source.Prefix(itemsPrefix)).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 2}).
		Complete(reconcile.Func(c.reconcile))
	if err != nil {
		return fail(err)
	}
	if err := mgr.Start(manager.SetupSignalHandler()); err != nil {
		return fail(err)
	}
	return 0
}

// copier is the controller: it reads the item, works a little, and writes the output.
type copier struct {
	env  procEnv
	cli  *clientv3.Client
	out  *store.Store[output]
	hist *historyFile
}

// reconcile copies one item. Its read, its work and its write ignore the end of the
// reconcile's context (the write keeps the fence, which the context carries): a member
// paused in the middle goes on to the write when it resumes, as a write already on the
// wire would, so that only the fence stands between a member that lost its shard and etcd.
//
// The negative control's variant (unsafe) works longer, so that a pause finds reconciles
// in flight, and writes with a context without the fence: guarded by the output's mod
// revision alone.
func (c *copier) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	sh, ok := manager.ShardFrom(ctx)
	if !ok {
		return reconcile.Result{}, reconcile.TerminalError(errors.New("no shard in the reconcile's context"))
	}
	rec := record{Op: "out", Proc: c.env.id, Key: outKey(req.Key), Shard: sh.ID, Token: sh.Token}
	bg := context.WithoutCancel(ctx)
	rctx, cancel := context.WithTimeout(bg, 5*time.Second)
	resp, err := c.cli.Get(rctx, req.Key)
	cancel()
	if err != nil {
		return reconcile.Result{}, err
	}
	if len(resp.Kvs) == 0 {
		return reconcile.Result{}, nil // the campaign never deletes items
	}
	rec.Value = string(resp.Kvs[0].Value)
	work := 10*time.Millisecond + rand.N(30*time.Millisecond)
	if c.env.unsafe {
		work = 200*time.Millisecond + rand.N(300*time.Millisecond)
		bg = context.Background() // no fence
	}
	time.Sleep(work)

	wctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	want := output{Member: c.env.id, Shard: sh.ID, Token: sh.Token, Item: rec.Value}
	var obj *store.Object[output]
	cur, err := c.out.Get(wctx, rec.Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		obj, err = c.out.Create(wctx, rec.Key, &want)
	case err != nil:
	case cur.Value == want:
		return reconcile.Result{}, nil
	default:
		obj, err = c.out.Update(wctx, rec.Key, &want, cur.ModRevision)
	}
	switch {
	case err == nil:
		rec.Result, rec.Rev = "written", obj.ModRevision
	case errors.Is(err, fence.ErrFenced):
		rec.Result = "fenced"
	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists):
		rec.Result = "conflict"
	default:
		rec.Result, rec.Err = "unknown", err.Error()
	}
	c.hist.write(rec)
	if rec.Result == "fenced" {
		return reconcile.Result{}, nil // no longer ours: the shard's new owner copies it
	}
	return reconcile.Result{}, err
}
