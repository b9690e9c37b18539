//go:build unix

package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// cut is what a network fault silences on a workload process's proxies (one per etcd
// member, see workloads): what still flows, and for a partial partition the one member
// whose proxy is silenced, both ways.
type cut struct {
	toEtcd, toClient bool // still forwarded: the process's requests, etcd's answers
	member           int  // a partial partition: the member cut off...
	leader           bool // ...or whichever member leads when the fault starts
}

// planCut draws what a network fault of kind k silences: a partition both ways; a one-way
// partition, half the time requests that reach etcd and answers that do not, half the time
// the reverse; a partial partition, the proxy to one member, half the time etcd's leader.
func planCut(rng *rand.Rand, k kind) cut {
	switch k {
	case oneWayProc:
		if rng.IntN(2) == 0 {
			return cut{toEtcd: true}
		}
		return cut{toClient: true}
	case partialProc:
		return cut{member: rng.IntN(3), leader: rng.IntN(2) == 0}
	}
	return cut{}
}

func (c cut) String() string {
	switch {
	case c.toEtcd && !c.toClient:
		return "requests reach etcd, answers held"
	case c.toClient && !c.toEtcd:
		return "requests held, answers flow"
	}
	return "both ways"
}

// planned describes the cut of a fault of kind k in the planned schedule.
func (c cut) planned(k kind) string {
	switch {
	case k == partialProc && c.leader:
		return " (from etcd's leader)"
	case k == partialProc:
		return fmt.Sprintf(" (from etcd m%d)", c.member)
	case netKind(k):
		return " (" + c.String() + ")"
	}
	return ""
}

// proxyCounts sums what the proxies forwarded from etcd and held back.
func proxyCounts(ps []*etcdtest.SilentProxy) (answers, held int) {
	for _, p := range ps {
		a, h := p.Counts()
		answers, held = answers+a, held+h
	}
	return answers, held
}

// partition carries out a network fault of a workload process: it silences the process's
// proxies (all of them, or for a partial partition the one to a member) for f.dur, then
// lets them forward again. The evidence gives how long, against the TTL, and what the
// proxies held back; the analysis adds whether etcd expired the process's lease meanwhile
// (result.analyze).
func (in *injector) partition(ctx context.Context, f *fault) {
	p := in.w.current(f.target.role, f.target.slot)
	f.victim = p.id
	ps := in.w.proxiesOf(f.target.role, f.target.slot)
	if len(ps) == 0 {
		f.err = fmt.Errorf("%s has no proxies", p.id)
		return
	}
	silenced, others := ps, []*etcdtest.SilentProxy(nil)
	what := "from every member, " + f.cut.String()
	if f.kind == partialProc {
		i, role, err := in.member(ctx, f.cut.member, f.cut.leader)
		if err != nil {
			f.err = err
			return
		}
		silenced = ps[i : i+1]
		others = append(append(others, ps[:i]...), ps[i+1:]...)
		what = fmt.Sprintf("from etcd m%d (%s) only, both ways", i, role)
	}
	answers0, _ := proxyCounts(others)
	_, heldAll0 := proxyCounts(ps)
	f.start = time.Now()
	for _, x := range silenced {
		x.Forward(f.cut.toEtcd, f.cut.toClient)
	}
	hold(ctx, f.dur)
	for _, x := range silenced {
		x.Forward(true, true)
	}
	d := time.Since(f.start)
	_, heldAll := proxyCounts(ps)
	if f.kind == partialProc {
		answers, _ := proxyCounts(others)
		f.evidence = fmt.Sprintf("cut off %.2fs %s: %d reads held back; %d answers through the other members meanwhile",
			d.Seconds(), what, heldAll-heldAll0, answers-answers0)
		return
	}
	verdict := "outlasted it"
	if d <= ttl {
		verdict = "did NOT outlast it"
	}
	f.evidence = fmt.Sprintf("cut off %.2fs %s, TTL %s: %s by %.2fs; %d reads held back",
		d.Seconds(), what, ttl, verdict, (d - ttl).Seconds(), heldAll-heldAll0)
}
