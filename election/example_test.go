package election_test

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// A candidate campaigns, leads, writes under its fence and resigns.
func Example() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx) // a real etcd, in this process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	cli := etcd.Client()

	e, err := election.New(cli, "/myapp/election/", election.Options{ID: "node-1", TTL: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()

	if err := e.Campaign(ctx); err != nil {
		fmt.Println(err)
		return
	}
	leader, _ := e.GetLeader(ctx)
	fmt.Println("leader:", leader, "- I lead:", e.IsLeader())

	// A write that only the leader may make carries the guard: etcd rejects it once the
	// leadership is gone, even if this process has not noticed yet.
	resp, err := cli.Txn(ctx).If(e.Guard()).Then(clientv3.OpPut("/myapp/state", "v1")).Commit()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("fenced write accepted:", resp.Succeeded)

	if err := e.Resign(ctx); err != nil {
		fmt.Println(err)
		return
	}
	_, err = e.GetLeader(ctx)
	fmt.Println("after resigning:", err)
	// Output:
	// leader: node-1 - I lead: true
	// fenced write accepted: true
	// after resigning: election: no leader
}

// Run keeps a candidate in the election; Observe follows the leader.
func ExampleElection_Run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()

	var nodes []*election.Election
	for _, id := range []string{"node-1", "node-2"} {
		e, err := election.New(etcd.Client(), "/myapp/election/", election.Options{ID: id, TTL: 5 * time.Second})
		if err != nil {
			fmt.Println(err)
			return
		}
		defer e.Close()
		nodes = append(nodes, e)
	}
	leaders := nodes[1].Observe(ctx)
	fmt.Printf("leader: %q\n", <-leaders)

	go nodes[0].Run(ctx) // campaigns until ctx ends, again after every loss
	fmt.Printf("leader: %q\n", <-leaders)
	go nodes[1].Run(ctx)
	for inLine(ctx, etcd.Client(), "/myapp/election/") < 2 {
		time.Sleep(10 * time.Millisecond) // until node-2 is in line behind node-1
	}

	// node-1 resigns; node-2, next in line, leads at once; node-1 campaigns again.
	_ = nodes[0].Resign(ctx)
	fmt.Printf("leader: %q\n", <-leaders)
	// Output:
	// leader: ""
	// leader: "node-1"
	// leader: "node-2"
}

// inLine counts the candidates of an election.
func inLine(ctx context.Context, cli *clientv3.Client, prefix string) int64 {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0
	}
	return resp.Count
}

// A leader task runs only while its candidate leads.
func ExampleNewLeaderTask() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	e, err := election.New(etcd.Client(), "/myapp/election/", election.Options{ID: "node-1", TTL: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()

	ran := make(chan struct{}, 1)
	task, err := election.NewLeaderTask(e, func(ctx context.Context) error {
		// ctx ends the moment the leadership does.
		select {
		case ran <- struct{}{}:
		default:
		}
		return nil
	}, election.TaskOptions{Interval: 100 * time.Millisecond})
	if err != nil {
		fmt.Println(err)
		return
	}
	taskCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- task.Start(taskCtx) }() // campaigns, too, and blocks until taskCtx ends
	<-ran
	fmt.Println("the task ran on the leader:", e.IsLeader())
	stop()
	fmt.Println("Start returned:", <-done)
	fmt.Println("leading after Start returned:", e.IsLeader())
	// Output:
	// the task ran on the leader: true
	// Start returned: <nil>
	// leading after Start returned: false
}

// An HA coordinator runs the primary on the leader and the secondary on the others.
func ExampleNewHACoordinator() {
	ctx := context.Background()
	etcd, err := etcdtest.Start(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()

	// serve returns a function that says when it starts, then runs until its context ends.
	serve := func(started chan<- struct{}) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			select {
			case started <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return nil
		}
	}
	var coordinators []*election.HACoordinator
	var primaries, secondaries []chan struct{}
	for _, id := range []string{"node-1", "node-2"} {
		e, err := election.New(etcd.Client(), "/myapp/ha/", election.Options{ID: id, TTL: 5 * time.Second})
		if err != nil {
			fmt.Println(err)
			return
		}
		defer e.Close()
		primary, secondary := make(chan struct{}, 1), make(chan struct{}, 1)
		h, err := election.NewHACoordinator(e, serve(primary), serve(secondary), election.HAOptions{})
		if err != nil {
			fmt.Println(err)
			return
		}
		coordinators = append(coordinators, h)
		primaries, secondaries = append(primaries, primary), append(secondaries, secondary)
	}

	// start runs a coordinator's Start, which campaigns, too, and blocks until its context
	// ends; the returned stop ends it and waits for it to return.
	start := func(h *election.HACoordinator) (stop func()) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = h.Start(ctx)
		}()
		return func() {
			cancel()
			<-done
		}
	}
	stop1 := start(coordinators[0])
	<-primaries[0]
	stop2 := start(coordinators[1])
	<-secondaries[1]
	fmt.Println("roles:", coordinators[0].Role(), coordinators[1].Role())

	stop1() // node-1 stops its primary, then resigns: node-2 takes over
	<-primaries[1]
	fmt.Println("roles:", coordinators[0].Role(), coordinators[1].Role())
	stop2()
	// Output:
	// roles: primary secondary
	// roles: none primary
}
