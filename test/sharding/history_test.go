//go:build unix

package sharding_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/etcdkit/etcdkit/internal/shard"
)

// span is one reconcile as a member recorded it: its start and end records.
type span struct {
	member, key  string
	seq          int64
	shard        int
	token        int64
	start, end   int64 // wall time, ns; end is 0 when the end record is missing
	ctxDone      int64
	item, result string
	rev          int64
}

func (s span) String() string {
	return fmt.Sprintf("%s#%d %s shard %d token %d [%s, %s] %s", s.member, s.seq, s.key, s.shard, s.token,
		stamp(s.start), stamp(s.end), s.result)
}

func stamp(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).Format("15:04:05.000000")
}

// readSpans reads the members' history files and pairs every start record with its end.
// A last line without its newline (a process killed while writing it) is left out.
func readSpans(ms []*member) ([]span, error) {
	var out []span
	for _, m := range ms {
		data, err := os.ReadFile(m.history)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i+1]
		} else {
			data = nil
		}
		bySeq := map[int64]*span{}
		var order []int64
		sc := bufio.NewScanner(bytes.NewReader(data))
		for line := 1; sc.Scan(); line++ {
			var r record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", m.history, line, err)
			}
			if r.Member != m.id {
				return nil, fmt.Errorf("%s:%d: a record of %q", m.history, line, r.Member)
			}
			sp := bySeq[r.Seq]
			if sp == nil {
				sp = &span{member: r.Member, seq: r.Seq, key: r.Key, shard: r.Shard, token: r.Token}
				bySeq[r.Seq] = sp
				order = append(order, r.Seq)
			}
			switch r.Ev {
			case "start":
				sp.start = r.T
			case "end":
				sp.end, sp.ctxDone, sp.item, sp.result, sp.rev = r.T, r.CtxDone, r.Item, r.Result, r.Rev
			default:
				return nil, fmt.Errorf("%s:%d: unknown record %q", m.history, line, r.Ev)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", m.history, err)
		}
		for _, seq := range order {
			out = append(out, *bySeq[seq])
		}
	}
	return out, nil
}

// checkSpans finds records that contradict themselves: a start without its end in a member
// that was not killed, or a key reconciled under a shard that is not the key's.
func checkSpans(spans []span, ms []*member) []string {
	killed := map[string]bool{}
	for _, m := range ms {
		killed[m.id] = !m.killed.IsZero()
	}
	var problems []string
	for _, s := range spans {
		if want := shard.Of(s.key, shards); s.shard != want || s.token <= 0 {
			problems = append(problems, fmt.Sprintf("%s: reconciled as shard %d token %d; the key is in shard %d", s, s.shard, s.token, want))
		}
		if s.start == 0 || (s.end == 0 && !killed[s.member]) {
			problems = append(problems, fmt.Sprintf("%s: a start or end record is missing", s))
		}
	}
	return problems
}

// overlapRules say until when a reconcile counts as running, for the overlap checker.
type overlapRules struct {
	// untilCancelled: a reconcile whose context ended counts until then, not until it
	// returned. Off for graceful handoffs, where a shard is released only once its
	// reconciles have returned.
	untilCancelled bool
}

// until is the end of s as the rules count it. A member killed or paused stops running at
// that moment; a reconcile of a process that was killed before it ended ends there.
func (r overlapRules) until(s span, m *member) int64 {
	end := s.end
	if end == 0 {
		end = time.Now().UnixNano()
		if !m.killed.IsZero() {
			end = m.killed.UnixNano()
		}
	}
	if r.untilCancelled && s.ctxDone > 0 {
		end = min(end, s.ctxDone)
	}
	for _, at := range []time.Time{m.killed, m.paused} {
		if !at.IsZero() && s.start < at.UnixNano() {
			end = min(end, at.UnixNano())
		}
	}
	return end
}

// checkOverlaps finds two members reconciling the same key at the same time.
func checkOverlaps(spans []span, ms []*member, rules overlapRules) []string {
	byID := map[string]*member{}
	for _, m := range ms {
		byID[m.id] = m
	}
	byKey := map[string][]span{}
	for _, s := range spans {
		byKey[s.key] = append(byKey[s.key], s)
	}
	var problems []string
	for key, ss := range byKey {
		sort.Slice(ss, func(i, j int) bool { return ss[i].start < ss[j].start })
		for i := range ss {
			a := ss[i]
			aEnd := rules.until(a, byID[a.member])
			for _, b := range ss[i+1:] {
				if b.start >= aEnd {
					break
				}
				if b.member != a.member {
					problems = append(problems, fmt.Sprintf("%s reconciled by two members at once: %s (counted until %s) and %s", key, a, stamp(aEnd), b))
				}
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// write is a write of /out/ that etcd accepted, at revision rev.
type write struct {
	rev int64
	key string
	out output
}

// acceptedWrites reads etcd's history of /out/: every put from revision 1 to now (the
// cluster is never compacted in this suite).
func (h *harness) acceptedWrites(ctx context.Context) ([]write, error) {
	evs, err := h.events(ctx, outPrefix)
	if err != nil {
		return nil, err
	}
	var out []write
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypePut {
			continue
		}
		w := write{rev: ev.Kv.ModRevision, key: string(ev.Kv.Key)}
		if err := json.Unmarshal(ev.Kv.Value, &w.out); err != nil {
			return nil, fmt.Errorf("%s at revision %d: %w", w.key, w.rev, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// events returns every event under prefix from revision 1 to the current revision, read
// with a watch (on a client of its own) that ends once etcd reports, with a progress
// notification, that it has sent everything up to that revision.
func (h *harness) events(ctx context.Context, prefix string) ([]*clientv3.Event, error) {
	cli, err := h.c.NewClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	now, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	to := now.Header.Revision
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var evs []*clientv3.Event
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("reading the history of %s up to revision %d: %w", prefix, to, ctx.Err())
		case <-tick.C:
			_ = cli.RequestProgress(wctx) // answered once the watch has caught up
		case wr, ok := <-wch:
			if !ok {
				return nil, fmt.Errorf("the watch of %s ended", prefix)
			}
			if err := wr.Err(); err != nil {
				return nil, err
			}
			done := wr.IsProgressNotify() && wr.Header.Revision >= to
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision <= to {
					evs = append(evs, ev)
				}
				done = done || ev.Kv.ModRevision >= to
			}
			if done {
				return evs, nil
			}
		}
	}
}

// checkFencing asks etcd, for every accepted write (revision R, shard s, token T), whether
// owners/<s> had T as its create revision, and the writer as its value, at revision R: a
// write of a member that no longer owned the shard must have been refused (I3). It also
// checks that each shard's tokens never go back as the revisions grow, and that a write's
// shard is its key's.
func (h *harness) checkFencing(ctx context.Context, ws []write) ([]string, error) {
	problems := make([]string, len(ws))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, w := range ws {
		g.Go(func() error {
			resp, err := h.cli.Get(gctx, root+"owners/"+strconv.Itoa(w.out.Shard), clientv3.WithRev(w.rev))
			if err != nil {
				return err
			}
			switch {
			case len(resp.Kvs) == 0:
				problems[i] = fmt.Sprintf("%s written at revision %d by %s with token %d, but owners/%d did not exist then",
					w.key, w.rev, w.out.Member, w.out.Token, w.out.Shard)
			case resp.Kvs[0].CreateRevision != w.out.Token || string(resp.Kvs[0].Value) != w.out.Member:
				problems[i] = fmt.Sprintf("%s written at revision %d by %s with token %d, but owners/%d was %s's with token %d then",
					w.key, w.rev, w.out.Member, w.out.Token, w.out.Shard, resp.Kvs[0].Value, resp.Kvs[0].CreateRevision)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range problems {
		if p != "" {
			out = append(out, p)
		}
	}
	last := map[int]write{}
	for _, w := range ws {
		if s := shard.Of(itemsPrefix+strings.TrimPrefix(w.key, outPrefix), shards); s != w.out.Shard {
			out = append(out, fmt.Sprintf("%s written at revision %d as shard %d; its item is in shard %d", w.key, w.rev, w.out.Shard, s))
		}
		if prev, ok := last[w.out.Shard]; ok && w.out.Token < prev.out.Token {
			out = append(out, fmt.Sprintf("shard %d: token %d accepted at revision %d after token %d at revision %d",
				w.out.Shard, w.out.Token, w.rev, prev.out.Token, prev.rev))
		}
		last[w.out.Shard] = w
	}
	return out, nil
}

// checkWrites matches the members' records with etcd's history: every write a member
// recorded as accepted is in etcd at that revision, and every write etcd accepted was
// recorded by its member. A member killed with -9 may have died before it could record
// it, and a write whose answer did not come (an error such as a timeout while etcd elects
// a leader) may have been applied all the same: its reconcile recorded the error.
func checkWrites(spans []span, ws []write, ms []*member) []string {
	killed := map[string]bool{}
	for _, m := range ms {
		killed[m.id] = !m.killed.IsZero()
	}
	byRev := map[int64]write{}
	for _, w := range ws {
		byRev[w.rev] = w
	}
	recorded := map[int64]bool{}
	unanswered := map[write]bool{} // writes whose outcome their reconcile did not learn, by key and value
	var problems []string
	for _, s := range spans {
		if strings.HasPrefix(s.result, "error: ") {
			unanswered[write{key: outKey(s.key), out: output{Member: s.member, Shard: s.shard, Token: s.token, Item: s.item}}] = true
		}
		if s.result != "written" {
			continue
		}
		recorded[s.rev] = true
		w, ok := byRev[s.rev]
		if !ok || w.key != outKey(s.key) || w.out != (output{Member: s.member, Shard: s.shard, Token: s.token, Item: s.item}) {
			problems = append(problems, fmt.Sprintf("%s: recorded as written at revision %d, which etcd has as %+v", s, s.rev, w))
		}
	}
	for _, w := range ws {
		if !recorded[w.rev] && !killed[w.out.Member] && !unanswered[write{key: w.key, out: w.out}] {
			problems = append(problems, fmt.Sprintf("%s written at revision %d by %s (token %d), who did not record it", w.key, w.rev, w.out.Member, w.out.Token))
		}
	}
	return problems
}

// unchangedAssignments counts, in etcd's history, the writes of assignments/<shard> that
// left its member as it was: the leader means to write only the shards that move, so
// such a write shows a leader that decided from a view missing part of the assignment.
func (h *harness) unchangedAssignments(ctx context.Context) (int, error) {
	evs, err := h.events(ctx, root+"assignments/")
	if err != nil {
		return 0, err
	}
	last, n := map[string]string{}, 0
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypePut {
			if v, ok := last[k]; ok && v == string(ev.Kv.Value) {
				n++
			}
			last[k] = string(ev.Kv.Value)
		} else {
			delete(last, k)
		}
	}
	return n, nil
}

// tally counts what the histories hold, for the report.
type tally struct {
	reconciles, written, fenced, cancelled int
	writes                                 int // accepted by etcd
	handedOver                             int // keys reconciled by more than one member
	unchangedAssignments                   int
}

func (t tally) String() string {
	return fmt.Sprintf("%d reconciles (%d written, %d fenced, %d cancelled), %d writes accepted by etcd, "+
		"%d keys reconciled by more than one member, %d assignment writes that changed nothing",
		t.reconciles, t.written, t.fenced, t.cancelled, t.writes, t.handedOver, t.unchangedAssignments)
}

// check runs every checker over the spec's histories, fails the spec on any problem, and
// returns the members' spans, etcd's accepted writes and a tally.
func (h *harness) check(ctx context.Context, rules overlapRules) ([]span, []write, tally) {
	GinkgoHelper()
	// A reconcile may still run, retried after an error; a member that runs is waited for.
	var spans []span
	Eventually(func(g Gomega) {
		var err error
		spans, err = readSpans(h.members)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(checkSpans(spans, h.members)).To(BeEmpty(), "the members' records")
	}).Should(Succeed())
	ws, err := h.acceptedWrites(ctx)
	Expect(err).NotTo(HaveOccurred())
	fencing, err := h.checkFencing(ctx, ws)
	Expect(err).NotTo(HaveOccurred())
	Expect(fencing).To(BeEmpty(), "writes etcd accepted without the fence holding (I3)")
	Expect(checkWrites(spans, ws, h.members)).To(BeEmpty(), "the members' records against etcd's history")
	Expect(checkOverlaps(spans, h.members, rules)).To(BeEmpty(), "one key reconciled by two members at once")
	for _, m := range h.members {
		// Members run the test binary, built with -race when the suite is.
		Expect(string(m.Err.Contents())).NotTo(ContainSubstring("DATA RACE"), "the race detector in %s", m.id)
	}

	t := tally{reconciles: len(spans), writes: len(ws)}
	t.unchangedAssignments, err = h.unchangedAssignments(ctx)
	Expect(err).NotTo(HaveOccurred())
	who := map[string]map[string]bool{}
	for _, s := range spans {
		switch s.result {
		case "written":
			t.written++
		case "fenced":
			t.fenced++
		case "canceled":
			t.cancelled++
		}
		if who[s.key] == nil {
			who[s.key] = map[string]bool{}
		}
		who[s.key][s.member] = true
	}
	for _, ms := range who {
		if len(ms) > 1 {
			t.handedOver++
		}
	}
	Expect(t.written).To(BeNumerically(">", 0), "the members wrote nothing: the checkers had nothing to check")
	return spans, ws, t
}
