//go:build unix

package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/store"
)

// The leader-only workload: candidates of one election, whose leader writes the keys
// /leader/out/0 to /leader/out/<leaderKeys-1> in turn.
const (
	electionPrefix  = "/leader/election/"
	leaderOutPrefix = "/leader/out/"
	leaderKeys      = 4
	leaderGap       = 40 * time.Millisecond  // between two writes of a leader
	unsafeLeaderGap = 100 * time.Millisecond // the negative control's
)

// leaderOutput is the value of /leader/out/<n>: who wrote it, under which leadership, the
// how-manyth write of that leadership.
type leaderOutput struct {
	Leader string `json:"leader"`
	Token  int64  `json:"token"`
	Seq    int    `json:"seq"`
}

func parseLeaderOutput(v string) (leaderOutput, error) {
	var o leaderOutput
	err := json.Unmarshal([]byte(v), &o)
	return o, err
}

// runLeader is a candidate: election.New and a LeaderTask that, at the start of each
// leadership, writes one key after another through store writes fenced by the
// leadership (fence.With and the term's Guard) until the leadership ends, then SIGTERM.
func runLeader() int {
	env, hist, cli, fail, closeAll, err := startProc("leader")
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	log := newLogger(env.id)
	e, err := election.New(cli, electionPrefix, election.Options{ID: env.id, TTL: ttl, Logger: log})
	if err != nil {
		return fail(err)
	}
	out, err := store.New[leaderOutput](cli, leaderOutPrefix, store.Options[leaderOutput]{Logger: log.WithName("out")})
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l := &leader{env: env, e: e, out: out, hist: hist, stop: ctx}
	task, err := election.NewLeaderTask(e, l.lead, election.TaskOptions{Logger: log})
	if err != nil {
		return fail(err)
	}
	err = task.Start(ctx)
	if cerr := e.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

type leader struct {
	env  procEnv
	e    *election.Election
	out  *store.Store[leaderOutput]
	hist *historyFile
	stop context.Context // ends at SIGTERM
}

// lead is the leader-only function: it runs in the leadership's context. Each write is
// fenced by the term it was made in, and its context is not the leadership's (a leader
// paused in the middle goes on to the write when it resumes, as a write already on the
// wire would): only the fence stands between a former leader and etcd.
//
// The negative control's variant (unsafe) ignores the end of its leadership: it writes
// without the fence, guarded by the key's mod revision alone, until SIGTERM.
func (l *leader) lead(ctx context.Context) error {
	term, ok := l.e.Term()
	if !ok || ctx.Err() != nil {
		return nil // a leadership already over (ctx alive means term is its own)
	}
	l.hist.write(record{Op: "elected", Proc: l.env.id, Token: term.Token, Result: "held"})
	f := fence.Fence{Cmps: []clientv3.Cmp{term.Guard}, Holder: fmt.Sprintf("leadership of %s (token %d)", l.env.id, term.Token)}
	live, gap := ctx, leaderGap
	if l.env.unsafe {
		live, gap = l.stop, unsafeLeaderGap
	}
	for seq := 1; live.Err() == nil; seq++ {
		time.Sleep(gap)
		wctx := fence.With(context.WithoutCancel(ctx), f)
		if l.env.unsafe {
			wctx = context.Background()
		}
		rec := l.write(wctx, term.Token, seq)
		l.hist.write(rec)
		if rec.Result == "fenced" {
			return nil // no longer the leader: the next one writes
		}
	}
	return nil
}

// write writes /leader/out/<seq mod leaderKeys>: created when missing, else updated under
// the mod revision read.
func (l *leader) write(ctx context.Context, token int64, seq int) record {
	key := leaderOutPrefix + strconv.Itoa(seq%leaderKeys)
	rec := record{Op: "lead", Proc: l.env.id, Key: key, Token: token, Value: strconv.Itoa(seq)}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	want := leaderOutput{Leader: l.env.id, Token: token, Seq: seq}
	var obj *store.Object[leaderOutput]
	cur, err := l.out.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		obj, err = l.out.Create(ctx, key, &want)
	case err != nil:
	default:
		obj, err = l.out.Update(ctx, key, &want, cur.ModRevision)
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
	return rec
}
