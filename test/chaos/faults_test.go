//go:build unix

package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

type kind string

const (
	killProc  kind = "kill -9 workload"
	pauseProc kind = "pause workload"
	killEtcd  kind = "kill -9 etcd"
	pauseEtcd kind = "pause etcd"
	compact   kind = "compact"
	defrag    kind = "defrag etcd"
	// The network faults, between a workload process and etcd (netfaults_test.go).
	partitionProc kind = "partition workload"
	oneWayProc    kind = "one-way partition"
	partialProc   kind = "partial partition"
)

var allKinds = []kind{killProc, pauseProc, partitionProc, oneWayProc, partialProc, killEtcd, pauseEtcd, compact, defrag}

// weights of the kinds in a draw.
var weights = map[kind]int{killProc: 3, pauseProc: 3, partitionProc: 2, oneWayProc: 2, partialProc: 1, killEtcd: 2, pauseEtcd: 2, compact: 1, defrag: 1}

// procKind tells the kinds that hit one workload process.
func procKind(k kind) bool {
	return k == killProc || k == pauseProc || netKind(k)
}

// netKind tells the kinds that silence a workload process's proxies.
func netKind(k kind) bool { return k == partitionProc || k == oneWayProc || k == partialProc }

// stallKind tells the kinds that keep a workload process alive but cut off from etcd, in
// part or in whole: a pause, a partition.
func stallKind(k kind) bool { return k == pauseProc || netKind(k) }

// etcdKind tells the kinds that hit one etcd member: at most one at a time.
func etcdKind(k kind) bool { return k == killEtcd || k == pauseEtcd || k == defrag }

// target is what a fault hits: a workload slot, or an etcd member. leader, for etcd: whichever
// member leads when the fault starts; for the lock holders: whichever holds the lock then;
// for the candidates: whichever leads then.
type target struct {
	role   string // a workload's role, "etcd", or "" (compaction)
	slot   int
	leader bool
}

func (t target) String() string {
	switch {
	case t.role == "etcd" && t.leader:
		return "etcd leader"
	case t.role == "etcd":
		return fmt.Sprintf("etcd m%d", t.slot)
	case t.role == roleLocker && t.leader:
		return "lock holder"
	case t.role == roleLeader && t.leader:
		return "elected leader"
	case t.role == "":
		return "-"
	}
	return slotName(t.role, t.slot)
}

// fault is one fault of the schedule: what was planned, and what happened.
type fault struct {
	n        int
	kind     kind
	target   target
	at, dur  time.Duration // planned start, from the schedule's start, and length
	start    time.Time     // when it began and ended (its effect was undone)
	end      time.Time
	victim   string // the process or etcd member it hit
	evidence string
	err      error
	cut      cut // what a network fault silences
}

// cooldown is the least time between the end of a fault of a workload process and the next
// fault of the same process.
const cooldown = 4 * time.Second

// plan draws a schedule from rng: faults start 0.3-2.5 s apart, at most two run at once
// and at most one of those hits etcd (so that etcd keeps its quorum), never two the same
// target, and a workload process gets cooldown after a fault; every three or four faults
// a quiet window of 4-7 s follows the end of all.
func plan(rng *rand.Rand, cfg config) []*fault {
	kinds := cfg.kinds
	if len(kinds) == 0 {
		kinds = allKinds
	}
	var faults []*fault
	t := 3 * time.Second // the workloads settle first
	nextQuiet, sinceQuiet := 3+rng.IntN(2), 0
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	for n := 1; ; n++ {
		if cfg.duration > 0 && t >= cfg.duration || cfg.duration == 0 && n > cfg.faults {
			break
		}
		var active []*fault
		for _, f := range faults {
			if f.at+f.dur > t {
				active = append(active, f)
			}
		}
		if sinceQuiet == nextQuiet {
			for _, f := range active {
				t = max(t, f.at+f.dur)
			}
			t += between(4*time.Second, 7*time.Second)
			nextQuiet, sinceQuiet = 3+rng.IntN(2), 0
			active = nil
		} else {
			t += between(300*time.Millisecond, 2500*time.Millisecond)
		}
		for len(active) >= 2 {
			first := slices.MinFunc(active, func(a, b *fault) int { return int(a.at + a.dur - b.at - b.dur) })
			t = max(t, first.at+first.dur)
			active = slices.DeleteFunc(active, func(f *fault) bool { return f.at+f.dur <= t })
		}
		sinceQuiet++
		f := &fault{n: n, at: t}
		etcdBusy := slices.ContainsFunc(active, func(a *fault) bool { return a.target.role == "etcd" })
		// busy: a fault of the same group is in effect at f.at, or ended less than cooldown
		// before (a process just resumed has not taken its work back yet).
		busy := func(tg target) bool {
			return slices.ContainsFunc(faults, func(g *fault) bool {
				return g.target.group() == tg.group() && g.at+g.dur+cooldown > f.at
			})
		}
		for {
			f.kind = draw(rng, kinds)
			if !(etcdBusy && etcdKind(f.kind)) {
				break
			}
		}
		switch f.kind {
		case killProc, pauseProc, partitionProc, oneWayProc, partialProc:
			// A workload drawn evenly. A lock holder's or a candidate's fault hits, half the
			// time, whichever holds the lock or leads (always in the negative control, whose
			// faults go round the workloads in turn).
			roles := cfg.procRoles()
			for try := 0; ; try++ {
				if try > 0 && try%16 == 0 { // every target busy: a little later
					f.at += time.Second
					t = f.at
				}
				role := roles[rng.IntN(len(roles))]
				if cfg.unsafe {
					role = roles[(n+try)%len(roles)]
				}
				switch role {
				case roleMember:
					f.target = target{role: roleMember, slot: rng.IntN(cfg.members)}
				case roleLocker:
					f.target = target{role: roleLocker, slot: rng.IntN(cfg.lockers), leader: cfg.unsafe || rng.IntN(2) == 0}
				case roleLeader:
					f.target = target{role: roleLeader, slot: rng.IntN(cfg.leaders), leader: cfg.unsafe || rng.IntN(2) == 0}
				case roleRegistrar:
					f.target = target{role: roleRegistrar}
				case roleViewer:
					f.target = target{role: roleViewer, slot: rng.IntN(cfg.views)}
				}
				if !busy(f.target) {
					break
				}
			}
			switch f.kind {
			case killProc:
				f.dur = between(500*time.Millisecond, 3*time.Second) // down before the restart
			case partialProc:
				f.dur = between(2*time.Second, 5*time.Second)
				f.cut = planCut(rng, f.kind)
			default:
				f.dur = ttl + between(500*time.Millisecond, 2500*time.Millisecond)
				f.cut = planCut(rng, f.kind)
			}
		case killEtcd, pauseEtcd:
			f.target = target{role: "etcd", slot: rng.IntN(3), leader: rng.IntN(5) < 2}
			f.dur = between(time.Second, 4*time.Second)
		case defrag:
			f.target = target{role: "etcd", slot: rng.IntN(3), leader: rng.IntN(5) < 2}
			f.dur = time.Second // as long as the defragmentation takes; a second is planned
		case compact:
			f.target = target{}
		}
		faults = append(faults, f)
	}
	return faults
}

// procRoles are the workloads that have processes in cfg.
func (cfg config) procRoles() []string {
	var roles []string
	for _, r := range []struct {
		role string
		n    int
	}{{roleMember, cfg.members}, {roleLocker, cfg.lockers}, {roleLeader, cfg.leaders}, {roleRegistrar, min(cfg.views, 1)}, {roleViewer, cfg.views}} {
		// The negative control's faults go to the workloads that must be fenced.
		if r.n > 0 && !(cfg.unsafe && (r.role == roleRegistrar || r.role == roleViewer)) {
			roles = append(roles, r.role)
		}
	}
	return roles
}

func draw(rng *rand.Rand, kinds []kind) kind {
	total := 0
	for _, k := range kinds {
		total += weights[k]
	}
	x := rng.IntN(total)
	for _, k := range kinds {
		if x -= weights[k]; x < 0 {
			return k
		}
	}
	return kinds[len(kinds)-1]
}

// injector carries out a schedule.
type injector struct {
	c         *etcdtest.Cluster
	w         *workloads
	rec       *recorder
	cli       *clientv3.Client // the driver's client, for compaction
	mu        sync.Mutex       // held through a compaction
	compacted int64            // the last compaction's revision
}

// run carries out the faults at their planned times and returns once all have ended. The
// plan's rules hold at run time too, where a fault may last longer than planned (an etcd
// member slow to serve again): a fault waits for its target to be free (etcd counts as one
// target), then for one of two slots.
func (in *injector) run(ctx context.Context, faults []*fault, logf func(string, ...any)) {
	t0 := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, 2)
	targets := map[target]chan struct{}{}
	acquire := func(c chan struct{}) bool {
		select {
		case c <- struct{}{}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for _, f := range faults {
		wait := time.NewTimer(time.Until(t0.Add(f.at)))
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		}
		tg := f.target.group()
		if targets[tg] == nil {
			targets[tg] = make(chan struct{}, 1)
		}
		held := []chan struct{}{targets[tg], slots}
		for i, c := range held {
			if !acquire(c) {
				for _, c := range held[:i] {
					<-c
				}
				return
			}
		}
		wg.Add(1)
		go func() { // ends when the fault has been undone
			defer wg.Done()
			defer func() {
				for _, c := range held {
					<-c
				}
			}()
			in.apply(ctx, f)
			if f.err != nil {
				logf("fault %d %s %s: %v", f.n, f.kind, f.target, f.err)
			} else {
				logf("fault %d %s %s: %s", f.n, f.kind, f.victim, f.evidence)
			}
		}()
	}
}

// group is what two faults at once must not share: a controller member, a viewer, the
// lock holders (a fault of the lock's holder may hit any), the candidates (likewise for
// the leader), the registrar, etcd (one member down at a time keeps the quorum; a
// defragmentation counts as one), compaction.
func (t target) group() target {
	switch t.role {
	case roleMember, roleViewer:
		return target{role: t.role, slot: t.slot}
	default:
		return target{role: t.role}
	}
}

// lockHolder returns the slot of the lock holder that holds the lock: the one whose history
// has a hold with the token that heads the lock's queue.
func (in *injector) lockHolder(ctx context.Context) (int, error) {
	slot := -1
	err := waitFor(ctx, 5*time.Second, func(ctx context.Context) error {
		resp, err := in.cli.Get(ctx, lockKey+"/", clientv3.WithFirstCreate()...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return errors.New("no one holds the lock")
		}
		token := resp.Kvs[0].CreateRevision
		for _, p := range in.w.procs() {
			if p.role != roleLocker || p.exited() {
				continue
			}
			rs, err := readHistory(p.history)
			if err != nil {
				return err
			}
			for i := len(rs) - 1; i >= 0; i-- {
				if rs[i].Op == "hold" && rs[i].Token == token {
					slot = p.slot
					return nil
				}
			}
		}
		return fmt.Errorf("no holder has logged the hold of token %d", token)
	})
	return slot, err
}

// electedLeader returns the slot of the candidate that leads: the one whose ID is the value
// of the oldest key under the election's prefix.
func (in *injector) electedLeader(ctx context.Context) (int, error) {
	slot := -1
	err := waitFor(ctx, 5*time.Second, func(ctx context.Context) error {
		resp, err := in.cli.Get(ctx, electionPrefix, clientv3.WithFirstCreate()...)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return errors.New("no candidate leads")
		}
		id := string(resp.Kvs[0].Value)
		for _, p := range in.w.procs() {
			if p.role == roleLeader && p.id == id && !p.exited() {
				slot = p.slot
				return nil
			}
		}
		return fmt.Errorf("the leader %s is no running candidate", id)
	})
	return slot, err
}

// hold waits d, or until ctx ends.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (in *injector) apply(ctx context.Context, f *fault) {
	f.start = time.Now()
	defer func() { f.end = time.Now() }()
	if f.target.role == roleLocker && f.target.leader {
		slot, err := in.lockHolder(ctx)
		if err != nil {
			f.err = fmt.Errorf("finding the lock's holder: %w", err)
			return
		}
		f.target.slot = slot
		f.start = time.Now()
	}
	if f.target.role == roleLeader && f.target.leader {
		slot, err := in.electedLeader(ctx)
		if err != nil {
			f.err = fmt.Errorf("finding the elected leader: %w", err)
			return
		}
		f.target.slot = slot
		f.start = time.Now()
	}
	switch f.kind {
	case killProc:
		p := in.w.current(f.target.role, f.target.slot)
		f.victim = p.id
		if err := p.kill(); err != nil {
			f.err = err
			return
		}
		down := time.Now()
		hold(ctx, f.dur)
		np, err := in.w.start(f.target.role, f.target.slot)
		if err != nil {
			f.err = err
			return
		}
		f.evidence = fmt.Sprintf("pid %d killed (%v); restarted %.1fs later as %s", p.cmd.Process.Pid, p.exit, time.Since(down).Seconds(), np.id)
	case pauseProc:
		p := in.w.current(f.target.role, f.target.slot)
		f.victim = p.id
		if err := p.signal(syscall.SIGSTOP); err != nil {
			f.err = err
			return
		}
		stopped := time.Now()
		hold(ctx, f.dur)
		err := p.signal(syscall.SIGCONT)
		paused := time.Since(stopped)
		if err != nil {
			f.err = err
			return
		}
		verdict := "outlasted it"
		if paused <= ttl {
			verdict = "did NOT outlast it"
		}
		f.evidence = fmt.Sprintf("stopped %.2fs, TTL %s: %s by %.2fs", paused.Seconds(), ttl, verdict, (paused - ttl).Seconds())
	case killEtcd, pauseEtcd, defrag:
		i, role, err := in.member(ctx, f.target.slot, f.target.leader)
		if err != nil {
			f.err = err
			return
		}
		f.victim = fmt.Sprintf("etcd m%d (%s)", i, role)
		f.start = time.Now()
		if f.kind == defrag {
			f.err = in.defrag(ctx, f, i)
			return
		}
		if f.kind == killEtcd {
			if err := in.c.Kill(i); err != nil {
				f.err = err
				return
			}
			down := time.Now()
			hold(ctx, f.dur)
			restarting := time.Now()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			err := in.c.Restart(rctx, i)
			cancel()
			if err != nil {
				f.err = err
				return
			}
			f.evidence = fmt.Sprintf("down %.2fs; serving again %.2fs after the restart", restarting.Sub(down).Seconds(), time.Since(restarting).Seconds())
		} else {
			if err := in.c.Pause(i); err != nil {
				f.err = err
				return
			}
			stopped := time.Now()
			hold(ctx, f.dur)
			if err := in.c.Resume(i); err != nil {
				f.err = err
				return
			}
			f.evidence = fmt.Sprintf("stopped %.2fs (election timeout 1s)", time.Since(stopped).Seconds())
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if l, err := in.c.Leader(lctx); err == nil {
				f.evidence += fmt.Sprintf("; leader after: m%d", l)
			}
			cancel()
		}
	case partitionProc, oneWayProc, partialProc:
		in.partition(ctx, f)
	case compact:
		f.victim = "etcd"
		in.mu.Lock()
		defer in.mu.Unlock()
		confirmed := in.rec.Confirmed()
		if confirmed <= in.compacted {
			f.evidence = fmt.Sprintf("skipped: the recorder confirmed %d, compacted at %d already", confirmed, in.compacted)
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cur, err := in.cli.Get(cctx, counterKey, clientv3.WithCountOnly())
		if err != nil {
			f.err = err
			return
		}
		if _, err := in.cli.Compact(cctx, confirmed, clientv3.WithCompactPhysical()); err != nil {
			f.err = fmt.Errorf("compacting at %d: %w", confirmed, err)
			return
		}
		in.compacted = confirmed
		f.evidence = fmt.Sprintf("compacted at revision %d (recorder confirmed %d, etcd at %d)", confirmed, confirmed, cur.Header.Revision)
	}
}

// defrag defragments etcd member i (Maintenance.Defragment on its endpoint) and records its
// database's size before and after, and how long the member was busy with it.
func (in *injector) defrag(ctx context.Context, f *fault, i int) error {
	ep := in.c.Endpoint(i)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	before, err := in.cli.Status(sctx, ep)
	cancel()
	if err != nil {
		return fmt.Errorf("status of m%d before: %w", i, err)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	began := time.Now()
	_, err = in.cli.Defragment(dctx, ep)
	took := time.Since(began)
	cancel()
	if err != nil {
		return fmt.Errorf("defragmenting m%d: %w", i, err)
	}
	f.evidence = fmt.Sprintf("defragmented in %.2fs: db %s (%s in use) at revision %d",
		took.Seconds(), mib(before.DbSize), mib(before.DbSizeInUse), before.Header.Revision)
	sctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	after, err := in.cli.Status(sctx, ep)
	cancel()
	if err == nil {
		f.evidence += fmt.Sprintf(" -> %s (%s in use) at revision %d", mib(after.DbSize), mib(after.DbSizeInUse), after.Header.Revision)
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

// member resolves the etcd member a fault hits: slot, or whichever member leads when
// leader is set; role says whether it led when the fault began.
func (in *injector) member(ctx context.Context, slot int, leader bool) (i int, role string, err error) {
	i, role = slot, "follower"
	if leader {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		i, err = in.c.Leader(lctx)
		cancel()
		if err != nil {
			return 0, "", err
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if l, err := in.c.Leader(lctx); err == nil && l == i {
		role = "leader"
	}
	cancel()
	return i, role, nil
}
