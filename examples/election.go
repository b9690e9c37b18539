package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
)

// electionPrefix is where the interactive election example campaigns: a fixed prefix, so
// that the examples of several terminals meet.
const electionPrefix = "/etcdkit-examples/election/"

// runElection shows the guide's section 4. Alone (--example=election) it campaigns as
// --node-id until Ctrl-C, printing every change of leader: run it in several terminals.
// Under --example=all it runs three nodes in this process: one wins, hands over by
// resigning, loses its session, leaves, and every takeover is checked.
func runElection(ctx context.Context, e *env) error {
	if !e.all {
		return electionInteractive(ctx, e)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return electionDemo(ctx, e)
}

// electionInteractive campaigns as e.nodeID until ctx ends, then resigns.
func electionInteractive(ctx context.Context, e *env) error {
	el, err := election.New(e.client, electionPrefix, election.Options{ID: e.nodeID, TTL: 5 * time.Second, Logger: e.log.V(1)}) // the story tells the transitions; -v shows the log
	if err != nil {
		return err
	}
	defer el.Close()
	el.OnElected(func() { e.say("%s: elected, I am the leader (fencing token %d)", e.nodeID, el.Token()) })
	el.OnDefeat(func() { e.say("%s: no longer the leader", e.nodeID) })

	octx, stop := context.WithCancel(ctx)
	defer stop()
	observed := make(chan struct{})
	// The observer belongs to this example: it ends with octx, when the example returns.
	go func() {
		defer close(observed)
		for id := range el.Observe(octx) {
			if id == "" {
				id = "none"
			}
			e.say("leader: %s", id)
		}
	}()
	e.say("campaigning as %s under %s (TTL 5s); start more nodes with --example=election --node-id=<id> in other terminals; Ctrl-C to leave", e.nodeID, electionPrefix)
	err = el.Run(ctx)
	stop()
	<-observed
	if err != nil {
		return err
	}
	e.say("%s: left the election", e.nodeID)
	return nil
}

// electionNode is one node of the demo: its own client and candidate, and its callbacks.
type electionNode struct {
	*candidate
	elected  atomic.Int32
	defeated atomic.Int32
	stopRun  func()
}

// candidate is one node of a multi-node demo: its own client, so its own session, and its
// election.
type candidate struct {
	id  string
	cli *clientv3.Client
	el  *election.Election
}

// newCandidate makes node i of a demo under prefix, with TTL 2 s.
func newCandidate(e *env, prefix string, i int) (*candidate, error) {
	cli, err := e.newClient()
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("node-%d", i)
	// The nodes log at debug level (-v), so that the story stays readable.
	el, err := election.New(cli, prefix, election.Options{ID: id, TTL: 2 * time.Second, Logger: e.log.WithName(id).V(1)})
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	return &candidate{id: id, cli: cli, el: el}, nil
}

// start keeps the node campaigning until ctx ends or the node is closed.
func (n *electionNode) start(ctx context.Context) { n.stopRun = electionRun(ctx, n.el) }

func (n *electionNode) close() {
	if n.stopRun != nil {
		n.stopRun()
	}
	_ = n.el.Close()
	_ = n.cli.Close()
}

// electionRun keeps el campaigning (Run) until ctx ends or the returned stop is called;
// stop waits for Run to return.
func electionRun(ctx context.Context, el *election.Election) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// The campaign belongs to the caller: it ends with stop (or with el.Close).
	go func() {
		defer close(done)
		_ = el.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func electionDemo(ctx context.Context, e *env) error {
	prefix := e.key("election/")
	var nodes []*electionNode
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	for i := 1; i <= 3; i++ {
		c, err := newCandidate(e, prefix, i)
		if err != nil {
			return err
		}
		n := &electionNode{candidate: c}
		n.el.OnElected(func() { n.elected.Add(1) })
		n.el.OnDefeat(func() { n.defeated.Add(1) })
		nodes = append(nodes, n)
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	leader := func() []string {
		var ids []string
		for _, n := range nodes {
			if n.el.IsLeader() {
				ids = append(ids, n.id)
			}
		}
		return ids
	}

	// An observer on node-3 records every change of leader, "" for none.
	octx, stopObserving := context.WithCancel(ctx)
	defer stopObserving()
	var mu sync.Mutex
	var seen []string
	observed := make(chan struct{})
	// The observer belongs to the demo: it ends with octx.
	go func() {
		defer close(observed)
		for id := range n3.el.Observe(octx) {
			mu.Lock()
			seen = append(seen, id)
			mu.Unlock()
		}
	}()

	observedSoFar := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
	// The observer's first value is the leader when it has first listed the candidates.
	if err := electionWait(ctx, "the observer to start", func() bool { return len(observedSoFar()) == 1 }); err != nil {
		return err
	}

	n1.start(ctx)
	if err := electionWait(ctx, "node-1 to lead", func() bool { return n1.el.IsLeader() }); err != nil {
		return err
	}
	n2.start(ctx)
	if err := electionWait(ctx, "node-2 in line", func() bool { return electionCandidates(ctx, e, prefix) == 2 }); err != nil {
		return err
	}
	n3.start(ctx)
	if err := electionWait(ctx, "node-3 in line", func() bool { return electionCandidates(ctx, e, prefix) == 3 }); err != nil {
		return err
	}
	current, err := n2.el.GetLeader(ctx)
	if err != nil {
		return err
	}
	e.say("three nodes campaign under %s with a TTL of 2s: %v leads (etcd says %s, fencing token %d); node-2 and node-3 wait in line",
		e.rel(prefix), leader(), current, n1.el.Token())
	if err := expect(slices.Equal(leader(), []string{"node-1"}) && current == "node-1", "node-1 alone to lead, got %v (etcd: %s)", leader(), current); err != nil {
		return err
	}

	// Fencing: a write made under the guard lands only while the leadership holds.
	state := e.key("state")
	put := func(n *electionNode) (bool, error) {
		resp, err := n.cli.Txn(ctx).If(n.el.Guard()).Then(clientv3.OpPut(state, n.id)).Commit()
		if err != nil {
			return false, err
		}
		return resp.Succeeded, nil
	}
	ok1, err := put(n1)
	if err != nil {
		return err
	}
	ok2, err := put(n2)
	if err != nil {
		return err
	}
	e.say("fenced writes to %s: node-1's accepted=%t, node-2's accepted=%t", e.rel(state), ok1, ok2)
	if err := expect(ok1 && !ok2, "only the leader's fenced write to land"); err != nil {
		return err
	}

	// Resign: the next in line takes over at once, not after a TTL.
	start := time.Now()
	if err := n1.el.Resign(ctx); err != nil {
		return err
	}
	if err := electionWait(ctx, "node-2 to lead after node-1 resigned", func() bool { return n2.el.IsLeader() }); err != nil {
		return err
	}
	e.say("node-1 resigned: node-2 leads %s later; node-1 campaigns again, at the end of the line", electionMs(time.Since(start)))
	if err := electionWait(ctx, "node-1 back in line", func() bool { return electionCandidates(ctx, e, prefix) == 3 }); err != nil {
		return err
	}

	// A lost session, as when a node crashes and its lease runs out: here it is revoked.
	resp, err := e.client.Get(ctx, prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return err
	}
	if err := expect(len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "node-2", "node-2's key to be the oldest"); err != nil {
		return err
	}
	work := n2.el.LeaderContext()
	start = time.Now()
	if _, err := e.client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		return err
	}
	if err := electionWait(ctx, "node-3 to lead after node-2's session was lost", func() bool { return n3.el.IsLeader() }); err != nil {
		return err
	}
	e.say("node-2's session was revoked: node-3 leads %s later", electionMs(time.Since(start)))
	if err := electionWait(ctx, "node-2's leader context to end", func() bool { return work.Err() != nil }); err != nil {
		return err
	}
	e.say("node-2's leader context ended: %v; node-2 campaigns again with a new session", context.Cause(work))
	if err := expect(errors.Is(context.Cause(work), election.ErrSessionLost), "the cause to be a lost session"); err != nil {
		return err
	}
	if err := electionWait(ctx, "node-2 back in line", func() bool { return electionCandidates(ctx, e, prefix) == 3 }); err != nil {
		return err
	}

	// The observer reports what its watch delivers; wait until it has seen node-3 lead.
	if err := electionWait(ctx, "the observer to see node-3 lead", func() bool {
		got := observedSoFar()
		return len(got) > 0 && got[len(got)-1] == "node-3"
	}); err != nil {
		return fmt.Errorf("%w: it saw %q", err, observedSoFar())
	}

	// Close: node-3 leaves; node-1, next in line, takes over.
	start = time.Now()
	if err := n3.el.Close(); err != nil {
		return err
	}
	if err := electionWait(ctx, "node-1 to lead after node-3 left", func() bool { return n1.el.IsLeader() }); err != nil {
		return err
	}
	e.say("node-3 closed its election: node-1 leads %s later", electionMs(time.Since(start)))
	if err := expect(slices.Equal(leader(), []string{"node-1"}), "node-1 alone to lead, got %v", leader()); err != nil {
		return err
	}

	// The observer on node-3 ended with node-3's Close; it saw every change until then.
	<-observed
	got := observedSoFar()
	e.say("node-3's observer saw the leaders %q, and closed with node-3", got)
	if err := expect(slices.Equal(got, []string{"", "node-1", "node-2", "node-3"}), `observed leaders "", node-1, node-2, node-3, got %q`, got); err != nil {
		return err
	}
	// Callbacks run on a goroutine of their election, in order, once per transition.
	counts := func() []int32 {
		return []int32{n1.elected.Load(), n1.defeated.Load(), n2.elected.Load(), n2.defeated.Load(), n3.elected.Load(), n3.defeated.Load()}
	}
	want := []int32{2, 1, 1, 1, 1, 1}
	if err := electionWait(ctx, "one callback per transition", func() bool { return slices.Equal(counts(), want) }); err != nil {
		return fmt.Errorf("%w: got %v, want %v", err, counts(), want)
	}
	for _, n := range nodes {
		e.say("%s: OnElected ran %d time(s), OnDefeat %d", n.id, n.elected.Load(), n.defeated.Load())
	}
	return nil
}

// electionCandidates counts the keys of an election.
func electionCandidates(ctx context.Context, e *env, prefix string) int64 {
	resp, err := e.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1
	}
	return resp.Count
}

// electionWait polls cond every 5ms for up to 5s.
func electionWait(ctx context.Context, what string, cond func() bool) error {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return expect(false, "%s within 5s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// electionMs renders a duration in milliseconds.
func electionMs(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}
