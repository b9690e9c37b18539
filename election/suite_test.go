package election_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestElection(t *testing.T) {
	RegisterFailHandler(Fail)
	// Conditions are waited for, not timed: a loaded CI machine may need longer than 1 s.
	SetDefaultEventuallyTimeout(10 * time.Second)
	RunSpecs(t, "election")
}

// TestMain runs the suite, or, when the test binary is started again by a process test
// with candidateEnv set, a candidate in its own process (see candidate_test.go).
func TestMain(m *testing.M) {
	if os.Getenv(candidateEnv) != "" {
		os.Exit(runCandidate())
	}
	etcdtest.VerifyTestMain(m)
}

// ttl is the session TTL of the tests.
const ttl = 2 * time.Second

// node is one candidate with its own client, counting its callbacks.
type node struct {
	id       string
	cli      *clientv3.Client
	e        *election.Election
	elected  atomic.Int32
	defeated atomic.Int32
}

// newNode makes a candidate on its own client; both are closed when the spec ends.
func newNode(c *etcdtest.Cluster, prefix, id string) *node {
	GinkgoHelper()
	cli, err := c.NewClient()
	Expect(err).NotTo(HaveOccurred())
	e, err := election.New(cli, prefix, election.Options{ID: id, TTL: ttl})
	Expect(err).NotTo(HaveOccurred())
	n := &node{id: id, cli: cli, e: e}
	e.OnElected(func() { n.elected.Add(1) })
	e.OnDefeat(func() { n.defeated.Add(1) })
	DeferCleanup(func() {
		_ = e.Close()
		_ = cli.Close()
	})
	return n
}

// run keeps n campaigning until the spec ends.
func (n *node) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		_ = n.e.Run(ctx)
	}()
	DeferCleanup(func() {
		cancel()
		<-done
	})
}

// campaign starts a Campaign of n and returns a channel with its result.
func (n *node) campaign(ctx context.Context) <-chan error {
	res := make(chan error, 1)
	go func() { res <- n.e.Campaign(ctx) }()
	return res
}

// leaders returns the ids of the nodes that say they lead.
func leaders(nodes ...*node) []string {
	var ids []string
	for _, n := range nodes {
		if n.e.IsLeader() {
			ids = append(ids, n.id)
		}
	}
	return ids
}

// keyOf returns the key and lease of the candidate with id under prefix, as etcd has them.
func keyOf(ctx context.Context, cli *clientv3.Client, prefix, id string) (string, clientv3.LeaseID) {
	GinkgoHelper()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	Expect(err).NotTo(HaveOccurred())
	for _, kv := range resp.Kvs {
		if string(kv.Value) == id {
			return string(kv.Key), clientv3.LeaseID(kv.Lease)
		}
	}
	Fail(fmt.Sprintf("no key of %s under %s", id, prefix))
	return "", 0
}

// candidates counts the keys under prefix.
func candidates(ctx context.Context, cli *clientv3.Client, prefix string) int64 {
	GinkgoHelper()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	Expect(err).NotTo(HaveOccurred())
	return resp.Count
}

// fencedPut writes key under n's guard and reports whether etcd accepted it.
func fencedPut(ctx context.Context, n *node, key string) bool {
	GinkgoHelper()
	resp, err := n.cli.Txn(ctx).If(n.e.Guard()).Then(clientv3.OpPut(key, n.id)).Commit()
	Expect(err).NotTo(HaveOccurred())
	return resp.Succeeded
}

// recorder collects the values of an Observe channel until it closes.
type recorder struct {
	mu     sync.Mutex
	values []string
	closed chan struct{}
}

func record(ch <-chan string) *recorder {
	r := &recorder{closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		for v := range ch {
			r.mu.Lock()
			r.values = append(r.values, v)
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.values...)
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.values) == 0 {
		return "<nothing>"
	}
	return r.values[len(r.values)-1]
}

// blocking is a Start of a LeaderTask or an HACoordinator, running in a goroutine of its
// own on a context of its own.
type blocking struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Start has returned
	err    error         // Start's result, set before done is closed
}

// startBlocking calls start (a LeaderTask's or an HACoordinator's Start) in a goroutine;
// the spec's end stops it, if the spec has not.
func startBlocking(start func(context.Context) error) *blocking {
	ctx, cancel := context.WithCancel(context.Background())
	b := &blocking{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer GinkgoRecover()
		defer close(b.done)
		b.err = start(ctx)
	}()
	DeferCleanup(func() {
		cancel()
		<-b.done
	})
	return b
}

// stop cancels Start's context and returns Start's result once it has returned.
func (b *blocking) stop() error {
	GinkgoHelper()
	b.cancel()
	Eventually(b.done).Should(BeClosed(), "Start did not return after its context ended")
	return b.err
}

// taskFrames name the functions of a LeaderTask or an HACoordinator, and of the campaign
// they keep going, as they appear in a goroutine's stack.
var taskFrames = []string{
	"election.(*LeaderTask).",
	"election.(*HACoordinator).",
	"election.keepCampaigning",
	"election.(*Election).Run(",
	"election.(*Election).campaignLoop",
}

// taskGoroutines returns the stacks of the goroutines that run a part of a LeaderTask or
// an HACoordinator (their function included), or the campaign they keep going.
func taskGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, f := range taskFrames {
			if strings.Contains(g, f) {
				found = append(found, g)
				break
			}
		}
	}
	return found
}

// within is the time a failover may take: the TTL, plus a second.
var within = ttl + time.Second
