package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/lock"
)

// The interactive HA example campaigns under haPrefix, a fixed prefix so that the examples
// of several terminals meet; its primaries count the requests they process in
// haProcessedKey, which outlives them, so that each new primary goes on from the last count.
const (
	haPrefix       = "/etcdkit-examples/ha/"
	haProcessedKey = "/etcdkit-examples/ha-processed"
)

// runHA shows the guide's section 8. Alone (--example=ha) it runs a primary/secondary
// pair of functions as --node-id until Ctrl-C: run it in several terminals and stop the
// primary to watch another take over. Under --example=all it shows the three patterns in
// this process: active-passive with failover, active-active with a lock, and sharded with
// a leader per shard, checking each.
func runHA(ctx context.Context, e *env) error {
	if !e.all {
		return haInteractive(ctx, e)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, step := range []func(context.Context, *env) error{haActivePassive, haActiveActive, haSharded} {
		if err := step(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// haInteractive runs this node's primary (while it leads) or secondary until ctx ends.
func haInteractive(ctx context.Context, e *env) error {
	el, err := election.New(e.client, haPrefix, election.Options{ID: e.nodeID, TTL: 5 * time.Second, Logger: e.log.V(1)}) // the story tells the transitions; -v shows the log
	if err != nil {
		return err
	}
	defer el.Close()
	primary := func(ctx context.Context) error {
		e.say("%s: primary: processing requests (fencing token %d)", e.nodeID, el.Token())
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				e.say("%s: primary: stopped (%v)", e.nodeID, context.Cause(ctx))
				return nil
			case <-tick.C:
			}
			n, ok, err := haIncrement(ctx, e.client, el, haProcessedKey)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				return err
			case !ok:
				e.say("%s: primary: write rejected, the leadership is gone", e.nodeID)
			default:
				e.say("%s: primary: processed request %d", e.nodeID, n)
			}
		}
	}
	secondary := func(ctx context.Context) error {
		e.say("%s: secondary: standing by", e.nodeID)
		<-ctx.Done()
		return nil
	}
	h, err := election.NewHACoordinator(el, primary, secondary, election.HAOptions{Logger: e.log.V(1)})
	if err != nil {
		return err
	}
	e.say("running as %s under %s (TTL 5s); start more nodes with --example=ha --node-id=<id> in other terminals; Ctrl-C to leave", e.nodeID, haPrefix)
	// Start blocks until ctx ends, and returns once the running function has returned and
	// this node has left the election.
	if err := h.Start(ctx); err != nil {
		return err
	}
	e.say("%s: left", e.nodeID)
	return nil
}

// haIncrement adds one to the counter at key in a transaction that holds only while el
// leads and nobody else wrote the counter since it was read. It returns the new count and
// whether etcd accepted the write.
func haIncrement(ctx context.Context, cli *clientv3.Client, el *election.Election, key string) (int, bool, error) {
	guard := el.Guard()
	// The write is not cut short when the primary's context ends (its leadership may end at
	// any moment): the guard decides, and the outcome is known either way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return 0, false, err
	}
	n, rev := 0, int64(0)
	if len(resp.Kvs) == 1 {
		n, _ = strconv.Atoi(string(resp.Kvs[0].Value))
		rev = resp.Kvs[0].ModRevision
	}
	tresp, err := cli.Txn(ctx).
		If(guard, clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, strconv.Itoa(n+1))).
		Commit()
	if err != nil {
		return 0, false, err
	}
	return n + 1, tresp.Succeeded, nil
}

// haNode is one process of the active-passive demo: a client, a candidate, a coordinator,
// and what its primary did.
type haNode struct {
	*candidate
	h        *election.HACoordinator
	cancel   context.CancelFunc // ends the coordinator's Start; nil while it does not run
	done     chan error         // receives the result of the coordinator's Start
	accepted atomic.Int32
	rejected atomic.Int32
}

// start runs the coordinator's Start, which blocks until stop is called, in a goroutine.
func (n *haNode) start(ctx context.Context) {
	ctx, n.cancel = context.WithCancel(ctx)
	n.done = make(chan error, 1)
	go func() { n.done <- n.h.Start(ctx) }()
}

// stop ends the coordinator's Start and returns its result once it has returned: the
// node's primary has stopped and the node has left the election. It does nothing when the
// coordinator does not run.
func (n *haNode) stop() error {
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.cancel = nil
	return <-n.done
}

// haActivePassive runs three nodes whose primary processes requests (fenced increments of a
// counter): the primary stops and hands over, then the next one loses its session.
func haActivePassive(ctx context.Context, e *env) error {
	prefix, counter := e.key("active-passive/election/"), e.key("active-passive/processed")
	var nodes []*haNode
	defer func() {
		for _, n := range nodes {
			_ = n.stop()
			_ = n.el.Close()
			_ = n.cli.Close()
		}
	}()
	for i := 1; i <= 3; i++ {
		c, err := newCandidate(e, prefix, i)
		if err != nil {
			return err
		}
		n := &haNode{candidate: c}
		cli, el := c.cli, c.el
		primary := func(ctx context.Context) error {
			for {
				_, ok, err := haIncrement(ctx, cli, el, counter)
				switch {
				case err == nil && ok:
					n.accepted.Add(1)
				case err == nil:
					n.rejected.Add(1)
				case ctx.Err() == nil:
					return err
				}
				if ctx.Err() != nil {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		if n.h, err = election.NewHACoordinator(el, primary, nil, election.HAOptions{Logger: e.log.WithName(c.id).V(1)}); err != nil {
			_ = el.Close()
			_ = cli.Close()
			return err
		}
		nodes = append(nodes, n)
	}
	roles := func() []election.Role {
		return []election.Role{nodes[0].h.Role(), nodes[1].h.Role(), nodes[2].h.Role()}
	}
	processed := func() int {
		resp, err := e.client.Get(ctx, counter)
		if err != nil || len(resp.Kvs) == 0 {
			return 0
		}
		n, _ := strconv.Atoi(string(resp.Kvs[0].Value))
		return n
	}
	p, s, none := election.RolePrimary, election.RoleSecondary, election.RoleNone
	waitRoles := func(what string, want ...election.Role) error {
		if err := electionWait(ctx, what, func() bool { return slices.Equal(roles(), want) }); err != nil {
			return fmt.Errorf("%w: roles %v, want %v", err, roles(), want)
		}
		return nil
	}

	nodes[0].start(ctx)
	if err := waitRoles("node-1 to be primary", p, none, none); err != nil {
		return err
	}
	for _, n := range nodes[1:] {
		n.start(ctx)
	}
	if err := waitRoles("node-2 and node-3 to stand by", p, s, s); err != nil {
		return err
	}
	if err := electionWait(ctx, "requests to be processed", func() bool { return processed() >= 5 }); err != nil {
		return err
	}
	e.say("active-passive: roles %v; the primary processes requests (%d so far)", roles(), processed())

	// primaryOf waits until exactly one of the candidates is primary, and it is not the
	// former one, while the others stand by.
	primaryOf := func(what string, former *haNode, candidates ...*haNode) (*haNode, error) {
		var found *haNode
		err := electionWait(ctx, what, func() bool {
			found = nil
			for _, n := range candidates {
				switch n.h.Role() {
				case p:
					if found != nil {
						return false
					}
					found = n
				case none:
					return false
				}
			}
			return found != nil && found != former
		})
		if err != nil {
			return nil, fmt.Errorf("%w: roles %v", err, roles())
		}
		return found, nil
	}
	start := time.Now()
	if err := nodes[0].stop(); err != nil {
		return err
	}
	next, err := primaryOf("node-2 or node-3 to take over from node-1", nodes[0], nodes[1:]...)
	if err != nil {
		return err
	}
	e.say("  node-1 stopped: it stopped its primary, then resigned; %s is primary %s later (roles %v)", next.id, electionMs(time.Since(start)), roles())
	before := processed()
	if err := electionWait(ctx, next.id+" to process requests", func() bool { return processed() >= before+3 }); err != nil {
		return err
	}

	resp, err := e.client.Get(ctx, prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return err
	}
	if err := expect(len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == next.id, "%s's key to be the oldest", next.id); err != nil {
		return err
	}
	start = time.Now()
	if _, err := e.client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		return err
	}
	last, err := primaryOf("the other node to take over from "+next.id, next, nodes[1:]...)
	if err != nil {
		return err
	}
	e.say("  %s's session was revoked (as when it crashes): %s is primary %s later, %s stands by (roles %v)",
		next.id, last.id, electionMs(time.Since(start)), next.id, roles())
	before = processed()
	if err := electionWait(ctx, last.id+" to process requests", func() bool { return processed() >= before+3 }); err != nil {
		return err
	}
	// Every primary stops before the counts are read: a write accepted in between would
	// be in the counter and not in the sum.
	for _, n := range nodes {
		if err := n.stop(); err != nil {
			return err
		}
	}
	var accepted, rejected int32
	var by []string
	for _, n := range nodes {
		accepted += n.accepted.Load()
		rejected += n.rejected.Load()
		by = append(by, fmt.Sprintf("%s %d", n.id, n.accepted.Load()))
	}
	total := processed()
	e.say("  requests processed: %d (%s), fenced writes rejected: %d", total, strings.Join(by, ", "), rejected)
	return expect(int(accepted) == total, "every accepted write to count once: %d accepted, counter %d", accepted, total)
}

// haActiveActive runs three workers that all process requests, each a read-modify-write of
// one shared counter under a distributed lock (lock.New), each write fenced by the lock.
func haActiveActive(ctx context.Context, e *env) error {
	const workers, requests = 3, 10
	lockKey, counter := e.key("active-active/lock"), e.key("active-active/counter")
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 1; i <= workers; i++ {
		cli, err := e.newClient()
		if err != nil {
			return err
		}
		wg.Add(1)
		// Each worker belongs to this step: it ends after its requests, and the step waits.
		go func() {
			defer wg.Done()
			defer cli.Close()
			errs <- haWorker(ctx, cli, lockKey, counter, requests, &inside, &most)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	resp, err := e.client.Get(ctx, counter)
	if err != nil {
		return err
	}
	got := 0
	if len(resp.Kvs) == 1 {
		got, _ = strconv.Atoi(string(resp.Kvs[0].Value))
	}
	e.say("active-active: %d workers handled %d requests each on one counter under a lock: counter=%d, at most %d in the critical section at once",
		workers, requests, got, most.Load())
	return expect(got == workers*requests && most.Load() == 1, "counter %d and one worker at a time, got %d and %d", workers*requests, got, most.Load())
}

// haWorker processes requests, each under the lock: read the counter, write it plus one,
// guarded by the lock (a worker that lost the lock cannot write).
func haWorker(ctx context.Context, cli *clientv3.Client, lockKey, counter string, requests int, inside, most *atomic.Int32) error {
	m, err := lock.New(cli, lockKey, lock.Options{TTL: 5 * time.Second})
	if err != nil {
		return err
	}
	defer m.Close()
	for i := 0; i < requests; i++ {
		if err := m.Lock(ctx); err != nil {
			return err
		}
		if n := inside.Add(1); n > most.Load() {
			most.Store(n)
		}
		resp, err := cli.Get(ctx, counter)
		if err == nil {
			n := 0
			if len(resp.Kvs) == 1 {
				n, _ = strconv.Atoi(string(resp.Kvs[0].Value))
			}
			var put *clientv3.TxnResponse
			put, err = cli.Txn(ctx).If(m.Guard()).Then(clientv3.OpPut(counter, strconv.Itoa(n+1))).Commit()
			if err == nil && !put.Succeeded {
				err = fmt.Errorf("the lock on %s was lost before the write", lockKey)
			}
		}
		inside.Add(-1)
		if uerr := m.Unlock(ctx); err == nil {
			err = uerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// haSharded runs one election per shard, with three nodes campaigning in each: every shard
// has one leader, leaders are spread over the nodes, and a node that leaves hands its shards
// over.
func haSharded(ctx context.Context, e *env) error {
	const shards, nodes = 4, 3
	type campaign struct {
		el   *election.Election
		stop func()
	}
	var clients []*clientv3.Client
	grid := make([][]*campaign, nodes) // grid[node][shard]
	defer func() {
		for _, row := range grid {
			for _, c := range row {
				if c.stop != nil {
					c.stop()
				}
				_ = c.el.Close()
			}
		}
		for _, cli := range clients {
			_ = cli.Close()
		}
	}()
	for n := 0; n < nodes; n++ {
		cli, err := e.newClient()
		if err != nil {
			return err
		}
		clients = append(clients, cli)
		id := fmt.Sprintf("node-%d", n+1)
		for s := 0; s < shards; s++ {
			el, err := election.New(cli, e.key(fmt.Sprintf("sharded/shard-%d/", s)), election.Options{ID: id, TTL: 2 * time.Second, Logger: e.log.WithName(id).V(1)})
			if err != nil {
				return err
			}
			grid[n] = append(grid[n], &campaign{el: el})
		}
	}
	leaderOf := func(s int) []string {
		var ids []string
		for n := 0; n < nodes; n++ {
			if grid[n][s].el.IsLeader() {
				ids = append(ids, grid[n][s].el.ID())
			}
		}
		return ids
	}
	table := func() string {
		var parts []string
		for s := 0; s < shards; s++ {
			parts = append(parts, fmt.Sprintf("shard-%d: %s", s, strings.Join(leaderOf(s), "+")))
		}
		return strings.Join(parts, ", ")
	}
	// Shard s's preferred node campaigns first, so that the shards spread over the nodes;
	// the others campaign too, as standbys.
	for s := 0; s < shards; s++ {
		first := s % nodes
		grid[first][s].stop = electionRun(ctx, grid[first][s].el)
		if err := electionWait(ctx, fmt.Sprintf("shard-%d to get a leader", s), func() bool { return grid[first][s].el.IsLeader() }); err != nil {
			return err
		}
		for n := 0; n < nodes; n++ {
			if n != first {
				grid[n][s].stop = electionRun(ctx, grid[n][s].el)
			}
		}
	}
	for s := 0; s < shards; s++ {
		want := fmt.Sprintf("node-%d", s%nodes+1)
		if err := expect(slices.Equal(leaderOf(s), []string{want}), "shard-%d led by %s alone, got %v", s, want, leaderOf(s)); err != nil {
			return err
		}
	}
	e.say("sharded: one election per shard, three nodes in each: %s", table())

	// node-1 leaves: its elections close, resigning the shards it led.
	for _, c := range grid[0] {
		c.stop()
		c.stop = nil
		if err := c.el.Close(); err != nil {
			return err
		}
	}
	err := electionWait(ctx, "node-1's shards to move", func() bool {
		for s := 0; s < shards; s++ {
			if ids := leaderOf(s); len(ids) != 1 || ids[0] == "node-1" {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w: %s", err, table())
	}
	e.say("  node-1 left: %s", table())
	return nil
}
