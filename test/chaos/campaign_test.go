//go:build unix

package chaos_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// run runs one campaign: a cluster, the recorder, the workloads, the writer and the
// schedule of faults; then the convergence, the stop, and the checkers. It fails t only
// when the campaign itself cannot run; what the checkers find is in the result.
func run(t *testing.T, cfg config) *result {
	t.Helper()
	res := &result{cfg: cfg, started: time.Now(), ops: map[string]int{}}
	faults := plan(rand.New(rand.NewPCG(cfg.seed, 1)), cfg)
	res.faults = faults
	t.Logf("%s: SEED=%d, %d faults over %s planned, %d controller members, %d lock holders, %d candidates, %d viewers, unsafe=%v",
		cfg.name, cfg.seed, len(faults), planLength(faults).Round(time.Second), cfg.members, cfg.lockers, cfg.leaders, cfg.views, cfg.unsafe)
	for _, f := range faults {
		t.Logf("  planned %2d at %6.2fs for %5.2fs: %s %s%s", f.n, f.at.Seconds(), f.dur.Seconds(), f.kind, f.target, f.cut.planned(f.kind))
	}

	dir, err := os.MkdirTemp("", "etcdkit-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	res.dir = dir
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the workloads' histories and logs are kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	c := etcdtest.NewProcesses(t, etcdtest.WithMembers(3))
	cli, err := newClient(c.Endpoints()) // the driver's: the writer's and the checks'
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rec, err := startRecorder(c.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer rec.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	seed, scancel := context.WithTimeout(ctx, 30*time.Second)
	var ops []clientv3.Op
	for i := range items {
		ops = append(ops, clientv3.OpPut(itemKey(i), "v0"))
	}
	ops = append(ops, clientv3.OpPut(counterKey, counterValue{holder: "init"}.String()))
	_, err = cli.Txn(seed).Then(ops...).Commit()
	scancel()
	if err != nil {
		t.Fatal(err)
	}

	w := newWorkloads(dir, c.Endpoints(), cfg.seed, cfg.unsafe, cfg.ranges)
	t.Cleanup(func() { // after a t.Fatal
		w.stopAll(5 * time.Second)
		w.closeProxies()
	})
	for i := range cfg.members {
		if _, err := w.start(roleMember, i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cfg.lockers {
		if _, err := w.start(roleLocker, i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cfg.leaders {
		if _, err := w.start(roleLeader, i); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.views > 0 {
		if _, err := w.start(roleRegistrar, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cfg.views {
		if _, err := w.start(roleViewer, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitFor(ctx, 90*time.Second, func(ctx context.Context) error { return allOwned(ctx, cli, cfg.ranges) }); err != nil {
		t.Fatalf("the members did not come to own every shard: %v (logs in %s)", err, dir)
	}

	wr := startWriter(cli, rand.New(rand.NewPCG(cfg.seed, 2)))
	in := &injector{c: c, w: w, rec: rec, cli: cli}
	in.run(ctx, faults, t.Logf)
	res.writes, res.writeErrs = wr.stop()
	res.faultsEnded = time.Now()

	// The registrar stops changing anything; every viewer's view comes to equal etcd's.
	if cfg.views > 0 {
		quiet := time.Now()
		err := w.quiesce(ctx)
		if err == nil {
			bound := cmp.Or(cfg.viewsBound, cfg.converge)
			err = waitFor(ctx, bound, func(ctx context.Context) error { return viewsConverged(ctx, cli, w) })
		}
		res.viewsTime = time.Since(quiet)
		if err != nil {
			res.violations = append(res.violations, violation{checkViews,
				fmt.Sprintf("the viewers' views did not come to equal etcd's within %s of the registrar's last change", cmp.Or(cfg.viewsBound, cfg.converge)), []string{err.Error()}})
		} else {
			res.viewsConverged = true
		}
	}

	// Convergence: every item's latest value reaches its output.
	conv := time.Now()
	err = waitFor(ctx, cfg.converge, func(ctx context.Context) error { return converged(ctx, cli) })
	res.convergence = time.Since(conv)
	if err != nil {
		res.violations = append(res.violations, violation{checkConvergence,
			fmt.Sprintf("the outputs did not catch up with the items within %s of the last fault", cfg.converge), []string{err.Error()}})
	} else {
		res.converged = true
	}

	for _, p := range w.stopAll(30 * time.Second) {
		res.violations = append(res.violations, violation{checkProcesses, p, nil})
	}
	w.closeProxies()
	for _, p := range w.raceReports() {
		res.violations = append(res.violations, violation{checkProcesses, p, nil})
	}
	// Leases: every workload has stopped; those killed lose theirs after the TTL (and etcd
	// renews every lease when its leader changes, so allow a few TTLs).
	if err := waitFor(ctx, 4*ttl+10*time.Second, func(ctx context.Context) error { return noLeases(ctx, cli) }); err != nil {
		res.violations = append(res.violations, violation{checkLeases, "leases left behind after the workloads stopped", []string{err.Error()}})
	}

	// The recorder catches up with etcd's current revision, then the checkers read it all.
	var now int64
	if err := waitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		resp, err := cli.Get(ctx, counterKey, clientv3.WithCountOnly())
		if err == nil {
			now = resp.Header.Revision
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	err = rec.catchUp(rctx, now)
	rcancel()
	if err != nil {
		res.violations = append(res.violations, violation{checkRecorder, "the recorder's history is incomplete", []string{err.Error()}})
	}
	evs := rec.history()
	res.events, res.revision, res.recorderRestarts = len(evs), now, rec.restarts
	hists, err := w.histories()
	if err != nil {
		t.Fatal(err)
	}
	var vs []violation
	vs, res.outWrites = checkFencingHistory(evs, hists, cfg.ranges)
	res.violations = append(res.violations, vs...)
	vs, res.counterWrites = checkCounterHistory(evs, hists)
	res.violations = append(res.violations, vs...)
	lin := time.Now()
	vs, res.linearOps, res.linearWindows = checkLinearHistory(evs, hists)
	res.linearTime = time.Since(lin)
	res.violations = append(res.violations, vs...)
	vs, res.leaderWrites = checkLeaderHistory(evs, hists)
	res.violations = append(res.violations, vs...)
	vs, res.unlogged = checkRecordsHistory(evs, hists)
	res.violations = append(res.violations, vs...)
	res.tally(hists, w.procs())
	res.analyze(evs, hists)
	res.wall = time.Since(res.started)
	return res
}

func planLength(faults []*fault) time.Duration {
	var end time.Duration
	for _, f := range faults {
		end = max(end, f.at+f.dur)
	}
	return end
}

// waitFor calls cond until it returns nil, every 200 ms, each call bounded by 5 s; it
// returns cond's last error once bound has passed (the last one that the bound's end did
// not cut short, when there is one).
func waitFor(ctx context.Context, bound time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := cond(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", bound, last)
		case <-tick.C:
		}
	}
}

// allOwned holds when every shard has an owner, or in the range mode every slice of the
// map (and no retired one is left).
func allOwned(ctx context.Context, cli *clientv3.Client, ranges bool) error {
	if ranges {
		return slicesOwned(ctx, cli)
	}
	resp, err := cli.Get(ctx, root+"owners/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count != shards {
		return fmt.Errorf("%d of %d shards owned", resp.Count, shards)
	}
	return nil
}

// converged holds when every item's output holds the item's value.
func converged(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(itemsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(outPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return err
	}
	outs := map[string]string{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		outs[string(kv.Key)] = string(kv.Value)
	}
	var behind []string
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		o, err := parseOutput(outs[outKey(string(kv.Key))])
		if err != nil || o.Item != string(kv.Value) {
			behind = append(behind, fmt.Sprintf("%s=%s (output %q)", kv.Key, kv.Value, outs[outKey(string(kv.Key))]))
		}
	}
	if len(behind) > 0 {
		return fmt.Errorf("%d outputs behind at revision %d: %s", len(behind), resp.Header.Revision, strings.Join(behind[:min(3, len(behind))], ", "))
	}
	return nil
}

// noLeases holds when etcd has no lease left.
func noLeases(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Leases(ctx)
	if err != nil {
		return err
	}
	if len(resp.Leases) == 0 {
		return nil
	}
	var ls []string
	for _, l := range resp.Leases[:min(5, len(resp.Leases))] {
		s := fmt.Sprintf("lease %x", l.ID)
		if ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys()); err == nil {
			var keys []string
			for _, k := range ttl.Keys {
				keys = append(keys, string(k))
			}
			s += fmt.Sprintf(" (TTL %ds left, keys %s)", ttl.TTL, strings.Join(keys, " "))
		}
		ls = append(ls, s)
	}
	return fmt.Errorf("%d leases: %s", len(resp.Leases), strings.Join(ls, "; "))
}

// writer changes random items, one every 30 ms, until stopped.
type writer struct {
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	puts, errs atomic.Int64
}

func startWriter(cli *clientv3.Client, rng *rand.Rand) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel}
	w.wg.Add(1)
	go func() { // ends when stop cancels ctx
		defer w.wg.Done()
		tick := time.NewTicker(30 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cli.Put(pctx, itemKey(rng.IntN(items)), fmt.Sprintf("v%d", seq))
			pcancel()
			if err == nil {
				w.puts.Add(1)
			} else if ctx.Err() == nil {
				w.errs.Add(1)
			}
		}
	}()
	return w
}

// stop stops the writer and returns its accepted and failed puts.
func (w *writer) stop() (int, int) {
	w.cancel()
	w.wg.Wait()
	return int(w.puts.Load()), int(w.errs.Load())
}

// slicesOwned holds when every slice of the range mode's map has an owner and no retired
// slice is left.
func slicesOwned(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(root+"slices"),
		clientv3.OpGet(root+"owners/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return err
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return errors.New("no slice map yet")
	}
	var m struct {
		Map struct {
			Slices []struct {
				ID int64 `json:"id"`
			} `json:"slices"`
		} `json:"map"`
		Retired []json.RawMessage `json:"retired"`
	}
	if err := json.Unmarshal(kvs[0].Value, &m); err != nil {
		return fmt.Errorf("the slice map: %w", err)
	}
	owned := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		owned[strings.TrimPrefix(string(kv.Key), root+"owners/")] = true
	}
	for _, s := range m.Map.Slices {
		if !owned[strconv.FormatInt(s.ID, 10)] {
			return fmt.Errorf("slice %d of %d unowned", s.ID, len(m.Map.Slices))
		}
	}
	if len(m.Retired) > 0 {
		return fmt.Errorf("%d retired slices still owned", len(m.Retired))
	}
	return nil
}
