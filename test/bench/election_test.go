package bench_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdkit/etcdkit/election"
)

// electionTTL is the session TTL of the election benchmarks.
const electionTTL = 2 * time.Second

// candidate is one side of an election benchmark: etcdkit's election or etcd's
// concurrency.Election, behind the same three calls.
type candidate interface {
	campaign(ctx context.Context) error
	resign(ctx context.Context) error
	close()
}

type ours struct{ e *election.Election }

func (c ours) campaign(ctx context.Context) error { return c.e.Campaign(ctx) }
func (c ours) resign(ctx context.Context) error   { return c.e.Resign(ctx) }
func (c ours) close()                             { _ = c.e.Close() }

type raw struct {
	s *concurrency.Session
	e *concurrency.Election
}

func (c raw) campaign(ctx context.Context) error { return c.e.Campaign(ctx, "candidate") }
func (c raw) resign(ctx context.Context) error   { return c.e.Resign(ctx) }
func (c raw) close()                             { _ = c.s.Close() }

// newCandidate makes a candidate of the given kind on cli under prefix.
func newCandidate(b *testing.B, kind string, cli *clientv3.Client, prefix, id string) candidate {
	b.Helper()
	if kind == "ours" {
		e, err := election.New(cli, prefix, election.Options{ID: id, TTL: electionTTL})
		if err != nil {
			b.Fatal(err)
		}
		return ours{e}
	}
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(electionTTL/time.Second)))
	if err != nil {
		b.Fatal(err)
	}
	// concurrency.NewElection adds the "/" itself.
	return raw{s: s, e: concurrency.NewElection(s, prefix[:len(prefix)-1])}
}

// waitCandidates polls until n keys are under prefix.
func waitCandidates(b *testing.B, ctx context.Context, cli *clientv3.Client, prefix string, n int64) {
	b.Helper()
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if resp.Count == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// failover measures, for one kind, the time from the leader's client dying (its keep-alives
// stop; the lease is not revoked) to the next candidate's Campaign returning.
func failover(b *testing.B, ctx context.Context, kind, prefix string) time.Duration {
	b.Helper()
	dying, err := cluster.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	next := newClient(b)
	leader := newCandidate(b, kind, dying, prefix, "leader")
	if err := leader.campaign(ctx); err != nil {
		b.Fatal(err)
	}
	follower := newCandidate(b, kind, next, prefix, "follower")
	defer follower.close()
	won := make(chan error, 1)
	go func() { won <- follower.campaign(ctx) }()
	waitCandidates(b, ctx, next, prefix, 2)
	// Crash at a random moment: the lease's remaining time (it is renewed every TTL/5) and
	// the phase of etcd's expiry check (every 500 ms) would otherwise repeat from one
	// iteration to the next and bias the figures.
	time.Sleep(rand.N(time.Second))

	start := time.Now()
	_ = dying.Close() // as a crash would: no revoke, keep-alives stop
	if err := <-won; err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	leader.close()
	return d
}

// BenchmarkElectionFailover reports how long a leader that dies (its client closed, so its
// lease runs out) takes to be replaced: "x-TTL" is the mean failover over the TTL, "ms" the
// mean in milliseconds, "ms-worst" the longest, and "x-baseline" ours over etcd's
// concurrency.Election on the same etcd, measured alternately. The lease runs out between
// TTL - TTL/5 and TTL after the crash (it is renewed every TTL/5), and etcd checks for
// expired leases every 500 ms: that, not the election, makes the figure.
func BenchmarkElectionFailover(b *testing.B) {
	ctx := context.Background()
	var oursTotal, baseTotal, worst time.Duration
	for i := 0; i < b.N; i++ {
		d := failover(b, ctx, "ours", fmt.Sprintf("/bench/failover/ours/%d/", i))
		oursTotal += d
		worst = max(worst, d)
		baseTotal += failover(b, ctx, "raw", fmt.Sprintf("/bench/failover/raw/%d/", i))
	}
	mean := oursTotal / time.Duration(b.N)
	b.ReportMetric(float64(mean), "ns/op") // the failover, not the set-up around it
	b.ReportMetric(float64(mean)/float64(electionTTL), "x-TTL")
	b.ReportMetric(float64(mean)/float64(time.Millisecond), "ms")
	b.ReportMetric(float64(worst)/float64(time.Millisecond), "ms-worst")
	b.ReportMetric(float64(baseTotal/time.Duration(b.N))/float64(time.Millisecond), "ms-baseline")
	b.ReportMetric(float64(oursTotal)/float64(baseTotal), "x-baseline")
}

// resigns measures n handovers by Resign for one kind: two candidates take turns, the
// leader resigns while the other waits in line, and the time runs from the Resign call to
// the waiting Campaign's return.
func resigns(b *testing.B, ctx context.Context, kind, prefix string, n int) []time.Duration {
	b.Helper()
	cli := []*clientv3.Client{newClient(b), newClient(b)}
	cands := []candidate{newCandidate(b, kind, cli[0], prefix, "a"), newCandidate(b, kind, cli[1], prefix, "b")}
	defer cands[0].close()
	defer cands[1].close()
	if err := cands[0].campaign(ctx); err != nil {
		b.Fatal(err)
	}
	var ds []time.Duration
	lead := 0
	for i := 0; i < n; i++ {
		wait := 1 - lead
		won := make(chan error, 1)
		go func() { won <- cands[wait].campaign(ctx) }()
		waitCandidates(b, ctx, cli[0], prefix, 2)
		// The candidate in line has put its key; let it settle, as one that waited in line
		// for a while has. (etcd moves a watch that starts at a past revision, as
		// concurrency.Election's does, to the synced watchers only every 100 ms; until then
		// its events wait. etcdkit's watches start at the next revision and are synced at
		// once, so a candidate fresh in line is as quick, but the baseline would not be.)
		time.Sleep(150 * time.Millisecond)
		start := time.Now()
		if err := cands[lead].resign(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-won; err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
		lead = wait
	}
	return ds
}

// BenchmarkElectionResign reports the handover time of Resign: "ms" (mean), "ms-p99",
// and "x-baseline", ours over etcd's concurrency.Election Resign→Campaign on the same etcd,
// measured in alternating blocks.
func BenchmarkElectionResign(b *testing.B) {
	ctx := context.Background()
	var mine, base []time.Duration
	const block = 10
	for done := 0; done < b.N; done += block {
		k := min(block, b.N-done)
		base = append(base, resigns(b, ctx, "raw", fmt.Sprintf("/bench/resign/raw/%d/", done), k)...)
		mine = append(mine, resigns(b, ctx, "ours", fmt.Sprintf("/bench/resign/ours/%d/", done), k)...)
	}
	sum := func(ds []time.Duration) (t time.Duration) {
		for _, d := range ds {
			t += d
		}
		return t
	}
	mean := sum(mine) / time.Duration(len(mine))
	b.ReportMetric(float64(mean), "ns/op") // the handover, not the set-up around it
	b.ReportMetric(float64(mean)/float64(time.Millisecond), "ms")
	b.ReportMetric(float64(percentile(mine, 99))/float64(time.Millisecond), "ms-p99")
	b.ReportMetric(float64(sum(base)/time.Duration(len(base)))/float64(time.Millisecond), "ms-baseline")
	b.ReportMetric(float64(sum(mine))/float64(sum(base)), "x-baseline")
}
