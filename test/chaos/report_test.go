//go:build unix

package chaos_test

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// result is what a campaign found.
type result struct {
	cfg                      config
	dir                      string
	started, faultsEnded     time.Time
	wall                     time.Duration
	faults                   []*fault
	violations               []violation
	ops                      map[string]int // by "<workload> <result>"
	writes, writeErrs        int            // the writer's puts
	outWrites                int            // /out/ writes etcd accepted
	counterWrites            int            // counter writes etcd accepted
	leaderWrites             int            // /leader/out/ writes etcd accepted
	linearOps, linearWindows int            // the counter's operations checked by Porcupine, in windows
	linearTime               time.Duration
	viewsConverged           bool
	viewsTime                time.Duration // from the registrar's quiet to the viewers' views equal to etcd's
	unlogged                 int           // accepted writes no process logged
	events, recorderRestarts int
	revision                 int64
	converged                bool
	convergence              time.Duration
	incarnations             int
	failover                 map[*fault]time.Duration // per fault, when measured
}

// tally counts the processes' operations by kind and result.
func (r *result) tally(hists map[string][]record, procs []*proc) {
	r.incarnations = len(procs)
	for _, rs := range hists {
		for _, rec := range rs {
			name := map[string]string{"out": "controller write", "inc": "counter write", "hold": "lock acquire",
				"lead": "leader write", "elected": "leadership", "register": "discovery register",
				"deregister": "discovery deregister", "set": "config set", "delete": "config delete", "view": "viewer view"}[rec.Op]
			if name == "" {
				continue
			}
			r.ops[name+" "+rec.Result]++
		}
	}
}

// analyze adds the evidence that only the recorded history holds (did a paused or
// partitioned process's lease expire?) and measures each fault's failover from it (a
// partition's as a pause's of the same role):
//   - a controller member: until every shard it owned when the fault began is owned again,
//     under a new owner key;
//   - a lock holder: until another holder's write of the counter is accepted;
//   - an etcd member: until both workloads have a write accepted again;
//   - a partial partition (one member cut off from the process): until etcd answers,
//     through another member, an operation of the process's begun after the cut.
func (r *result) analyze(evs []event, hists map[string][]record) {
	r.failover = map[*fault]time.Duration{}
	leases := map[string]map[int64]bool{} // a lock holder's session leases, from its holds
	tokens := map[int64]string{}
	for id, rs := range hists {
		for _, rec := range rs {
			if rec.Op == "hold" && rec.Result == "held" {
				tokens[rec.Token] = id
			}
		}
	}
	for _, e := range evs {
		if id, ok := tokens[e.rev]; ok && e.put && strings.HasPrefix(e.key, lockKey+"/") {
			if leases[id] == nil {
				leases[id] = map[int64]bool{}
			}
			leases[id][e.lease] = true
		}
	}
	for _, f := range r.faults {
		if f.err != nil || f.start.IsZero() {
			continue
		}
		switch {
		case procKind(f.kind):
			switch {
			case f.kind == partialProc:
				r.clientFailover(f, hists)
			case f.target.role == roleMember:
				r.memberFailover(f, evs)
			case f.target.role == roleLocker:
				r.holderFailover(f, evs)
			case f.target.role == roleLeader:
				r.leaderFailover(f, evs)
			}
			if stallKind(f.kind) && f.target.role == roleViewer {
				f.evidence += "; a viewer holds no lease"
			} else if stallKind(f.kind) {
				n := 0
				for _, e := range evs {
					if e.put || e.at.Before(f.start) || !e.at.Before(f.end) {
						continue
					}
					mine := e.prevValue == f.victim && (strings.HasPrefix(e.key, root) || strings.HasPrefix(e.key, electionPrefix)) ||
						f.target.role == roleRegistrar && strings.HasPrefix(e.key, servicesPrefix+"/") ||
						leases[f.victim][e.prevLea] && strings.HasPrefix(e.key, lockKey+"/")
					if mine {
						n++
					}
				}
				if n > 0 {
					f.evidence += fmt.Sprintf("; its lease expired: etcd deleted %d of its keys during the fault", n)
				} else {
					f.evidence += "; no key of its was deleted during the fault"
					for _, g := range r.faults {
						if (g.kind == killEtcd || g.kind == pauseEtcd) && g.start.Before(f.end) && g.end.After(f.start) {
							f.evidence += fmt.Sprintf(" (fault %d of etcd overlapped it: a new etcd leader renews every lease)", g.n)
							break
						}
					}
				}
			}
		case etcdKind(f.kind):
			var out, cnt time.Time
			for _, e := range evs {
				if !e.put || !e.at.After(f.start) {
					continue
				}
				if out.IsZero() && strings.HasPrefix(e.key, outPrefix) {
					out = e.at
				}
				if cnt.IsZero() && e.key == counterKey {
					cnt = e.at
				}
			}
			if !out.IsZero() && !cnt.IsZero() {
				last := out
				if cnt.After(out) {
					last = cnt
				}
				r.failover[f] = last.Sub(f.start)
			}
		}
	}
}

// clientFailover, for a partial partition (one member cut off from the process): until
// etcd answers an operation of the victim's that began after the cut, through another
// member.
func (r *result) clientFailover(f *fault, hists map[string][]record) {
	for _, rec := range hists[f.victim] {
		if rec.T <= f.start.UnixNano() || rec.Call != 0 && rec.Call <= f.start.UnixNano() {
			continue
		}
		switch {
		case rec.Op == "read", rec.Op == "view" && rec.Result == "",
			slices.Contains([]string{"written", "unchanged", "fenced", "conflict", "held", "done"}, rec.Result):
			r.failover[f] = time.Unix(0, rec.T).Sub(f.start)
			return
		}
	}
}

func (r *result) memberFailover(f *fault, evs []event) {
	owned := map[string]bool{}
	p := newReplay()
	i := 0
	for ; i < len(evs) && !evs[i].at.After(f.start); i++ {
		p.apply(evs[i])
	}
	for k, s := range p.state {
		if strings.HasPrefix(k, root+"owners/") && s.value == f.victim {
			owned[k] = true
		}
	}
	if len(owned) == 0 {
		return
	}
	var last time.Time
	for ; i < len(evs) && len(owned) > 0; i++ {
		// A new owner key: another member's, or the victim's own once it is back with a
		// new session (a pause keeps its ID).
		if e := evs[i]; e.put && owned[e.key] && e.create == e.rev {
			delete(owned, e.key)
			last = e.at
		}
	}
	if len(owned) == 0 {
		r.failover[f] = last.Sub(f.start)
	}
}

func (r *result) holderFailover(f *fault, evs []event) {
	for _, e := range evs {
		if e.put && e.key == counterKey && e.at.After(f.start) {
			if v, err := parseCounter(e.value); err == nil && v.holder != f.victim {
				r.failover[f] = e.at.Sub(f.start)
				return
			}
		}
	}
}

// leaderFailover: until another candidate's write of /leader/out/ is accepted, when the
// victim led as the fault began (made the last leader write before it).
func (r *result) leaderFailover(f *fault, evs []event) {
	led := false
	for _, e := range evs {
		if !e.put || !strings.HasPrefix(e.key, leaderOutPrefix) {
			continue
		}
		o, err := parseLeaderOutput(e.value)
		if err != nil {
			continue
		}
		if !e.at.After(f.start) {
			led = o.Leader == f.victim
			continue
		}
		if !led {
			return
		}
		if o.Leader != f.victim {
			r.failover[f] = e.at.Sub(f.start)
			return
		}
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds)-1)*p + 0.5)
	return ds[i]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// report renders the result as text tables.
func (r *result) report() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	verdict := "PASS"
	if len(r.violations) > 0 {
		verdict = fmt.Sprintf("%d VIOLATIONS", len(r.violations))
	}
	p("== chaos %s: SEED=%d, %d faults, %s (%s)", r.cfg.name, r.cfg.seed, len(r.faults), secs(r.wall), verdict)
	p("workloads: %d controller members, %d lock holders, %d candidates, %d viewers (%d incarnations), writer on %d items; unsafe=%v",
		r.cfg.members, r.cfg.lockers, r.cfg.leaders, r.cfg.views, r.incarnations, items, r.cfg.unsafe)
	p("")
	p("faults:")
	p("  %-3s %-8s %-7s %-18s %-16s %-10s %s", "#", "start", "length", "kind", "victim", "failover", "evidence")
	for _, f := range r.faults {
		start, length, fo := "-", "-", "-"
		if !f.start.IsZero() {
			start = fmt.Sprintf("+%.1fs", f.start.Sub(r.started).Seconds())
			length = secs(f.end.Sub(f.start))
		}
		if d, ok := r.failover[f]; ok {
			fo = secs(d)
		}
		ev := f.evidence
		if f.err != nil {
			ev = "ERROR: " + f.err.Error()
		}
		p("  %-3d %-8s %-7s %-18s %-16s %-10s %s", f.n, start, length, f.kind, f.victim, fo, ev)
	}
	p("at most %d faults at once", maxOverlap(r.faults))
	p("")
	p("faults by kind:")
	p("  %-18s %5s %9s %9s %9s %9s", "kind", "count", "fo p50", "fo p99", "fo max", "measured")
	for _, k := range allKinds {
		var ds []time.Duration
		n := 0
		for _, f := range r.faults {
			if f.kind == k {
				n++
				if d, ok := r.failover[f]; ok {
					ds = append(ds, d)
				}
			}
		}
		if n == 0 {
			continue
		}
		slices.Sort(ds)
		if len(ds) == 0 {
			p("  %-18s %5d %9s %9s %9s %9d", k, n, "-", "-", "-", 0)
			continue
		}
		p("  %-18s %5d %9s %9s %9s %9d", k, n, secs(percentile(ds, .5)), secs(percentile(ds, .99)), secs(ds[len(ds)-1]), len(ds))
	}
	p("")
	p("operations:")
	var keys []string
	for k := range r.ops {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p("  %-32s %7d", k, r.ops[k])
	}
	p("  %-32s %7d", "writer puts accepted", r.writes)
	p("  %-32s %7d", "writer puts failed", r.writeErrs)
	p("  %-32s %7d", "etcd: /out/ writes accepted", r.outWrites)
	p("  %-32s %7d", "etcd: counter writes accepted", r.counterWrites)
	p("  %-32s %7d", "etcd: leader writes accepted", r.leaderWrites)
	p("  %-32s %7d", "etcd: accepted, not logged", r.unlogged)
	p("history: %d events up to revision %d, recorder watch restarted %d times", r.events, r.revision, r.recorderRestarts)
	p("linearizability: %d operations on the counter checked in %d windows in %s", r.linearOps, r.linearWindows, secs(r.linearTime))
	if r.cfg.views > 0 && r.viewsConverged {
		p("views: every viewer's discovery and config view equal to etcd's %s after the registrar stopped", secs(r.viewsTime))
	} else if r.cfg.views > 0 {
		p("views: NOT equal to etcd's within %s", secs(cmp.Or(r.cfg.viewsBound, r.cfg.converge)))
	}
	if r.converged {
		p("convergence: every output caught up %s after the last fault ended", secs(r.convergence))
	} else {
		p("convergence: NOT within %s", secs(r.cfg.converge))
	}
	p("")
	if len(r.violations) == 0 {
		p("violations: none")
	} else {
		p("violations (%d):", len(r.violations))
		b.WriteString(r.violationText())
	}
	return b.String()
}

// violationText lists the violations, the first ten of each checker in full.
func (r *result) violationText() string {
	var b strings.Builder
	shown := map[string]int{}
	for _, v := range r.violations {
		shown[v.checker]++
		if shown[v.checker] <= 10 {
			fmt.Fprintf(&b, "  %s\n", v)
		}
	}
	for c, n := range shown {
		if n > 10 {
			fmt.Fprintf(&b, "  [%s] ... and %d more\n", c, n-10)
		}
	}
	fmt.Fprintf(&b, "  replay with SEED=%d\n", r.cfg.seed)
	return b.String()
}

// maxOverlap is the most faults that were in effect at once.
func maxOverlap(faults []*fault) int {
	most := 0
	for _, f := range faults {
		n := 0
		for _, g := range faults {
			if !g.start.After(f.start) && g.end.After(f.start) {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}
