package lease_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// silentProxy forwards TCP connections to an etcd endpoint and can stop forwarding in
// either direction while it keeps every connection open, as a member that is paused
// (SIGSTOP) would: the client's connection stays ready, and its requests go unanswered.
type silentProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the copy goroutines

	mu       sync.Mutex
	changed  *sync.Cond // broadcast when the directions or closed change
	toEtcd   bool       // forward the client's requests
	toClient bool       // forward etcd's answers
	closed   bool
	conns    map[net.Conn]struct{}
	answers  int // reads forwarded from etcd to the client
	held     int // reads held back
}

// newSilentProxy forwards to endpoint (a URL such as http://127.0.0.1:2379) in both
// directions until told otherwise.
func newSilentProxy(endpoint string) (*silentProxy, error) {
	target := strings.TrimPrefix(endpoint, "http://")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &silentProxy{ln: ln, target: target, toEtcd: true, toClient: true, conns: map[net.Conn]struct{}{}}
	p.changed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	// The accept loop ends when Close closes the listener.
	go p.accept()
	return p, nil
}

// Endpoint is the proxy's URL.
func (p *silentProxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// forward sets what the proxy forwards: the client's requests, etcd's answers.
func (p *silentProxy) forward(toEtcd, toClient bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.toEtcd, p.toClient = toEtcd, toClient
	p.changed.Broadcast()
}

func (p *silentProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_, _ = in.Close(), out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		// Each copy goroutine ends when either side is closed (by a peer or Close).
		go p.pipe(out, in, func() bool { return p.toEtcd }, nil)
		go p.pipe(in, out, func() bool { return p.toClient }, &p.answers)
	}
}

// pipe copies src to dst, holding what it read while open says no, and counts the reads
// it forwards in *count when count is not nil.
func (p *silentProxy) pipe(dst, src net.Conn, open func() bool, count *int) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if !open() {
				p.held++
			}
			for !open() && !p.closed {
				p.changed.Wait()
			}
			closed := p.closed
			if count != nil {
				*count++
			}
			p.mu.Unlock()
			if closed {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// counts returns how many reads the proxy forwarded from etcd to the client, and how many
// it held back.
func (p *silentProxy) counts() (answers, held int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answers, p.held
}

// Close cuts every connection, stops listening and waits for the proxy's goroutines.
func (p *silentProxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.changed.Broadcast()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// throughProxies returns a client of c's member 0 through n silent proxies, all
// forwarding, once the client has had answers through each; both are closed when the test
// ends.
func throughProxies(t *testing.T, c *etcdtest.Cluster, n int) (*clientv3.Client, []*silentProxy) {
	t.Helper()
	var ps []*silentProxy
	var eps []string
	for range n {
		p, err := newSilentProxy(c.Endpoint(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		ps = append(ps, p)
		eps = append(eps, p.Endpoint())
	}
	cfg := c.ClientConfig()
	cfg.Endpoints = eps
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	// Answers through each: the client's connections are ready and take requests in turn.
	waitFor(t, "answers through every proxy", func() bool {
		if _, err := cli.Get(context.Background(), "warm-up"); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if answers, _ := p.counts(); answers < 3 {
				return false
			}
		}
		return true
	})
	return cli, ps
}

// Two of the three endpoints keep every request without answering, as paused members
// would: the client's connections to them stay ready and get their share of the requests.
// A Grant and every renewal still get through the third, within the TTL.
func TestGrantsAndRenewsPastMembersThatDoNotAnswer(t *testing.T) {
	c := etcdtest.New(t)
	cli, ps := throughProxies(t, c, 3)
	ps[0].forward(false, false)
	ps[1].forward(false, false)

	const ttl = 2
	asked := time.Now()
	s, err := lease.Grant(context.Background(), cli, ttl, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go s.KeepAlive() // ends with Close
	defer s.Close()
	// Each attempt of the Grant waits at most a third of the TTL: the lease it returns has
	// two thirds of its TTL left, less the margin for clock rates and a moment.
	if left := time.Until(s.Deadline()); left < ttl*time.Second*2/3-200*time.Millisecond {
		t.Fatalf("Grant returned a lease with %s left of its %ds", left, ttl)
	}
	first := s.Deadline()
	waitFor(t, "three TTLs of renewals", func() bool {
		if err := s.Cause(); err != nil {
			t.Fatalf("the session ended after %s: %v", time.Since(asked), err)
		}
		return s.Deadline().After(first.Add(3 * ttl * time.Second))
	})
	for _, p := range ps[:2] {
		if _, held := p.counts(); held == 0 {
			t.Errorf("%s kept no request", p.Endpoint())
		}
	}
	ps[0].forward(true, true)
	ps[1].forward(true, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// etcd raises a TTL below its minimum (one and a half election timeouts, rounded up to
// seconds) without a word: the session keeps etcd's TTL, and Grant says so in its log.
func TestLogsATTLThatEtcdRaised(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithElectionTimeout(100*time.Millisecond, time.Second))
	var mu sync.Mutex
	var logged []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{})
	s, err := lease.Grant(context.Background(), c.Client(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	go s.KeepAlive() // ends with Close
	defer s.Close()
	if s.TTL() != 2*time.Second {
		t.Fatalf("TTL = %s, want etcd's minimum of 2s", s.TTL())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || !strings.Contains(logged[0], `"askedTTL"=1 "grantedTTL"=2`) {
		t.Fatalf("logged %q, want one line with the asked and the granted TTL", logged)
	}
}

// A Grant that no member answers gives up after the TTL, with the etcd error of its last
// attempt, even when its context has no end: a lease granted that late would have no
// time left to be used.
func TestGrantGivesUpAfterTheTTL(t *testing.T) {
	c := etcdtest.New(t)
	cli, ps := throughProxies(t, c, 2)
	for _, p := range ps {
		p.forward(false, false)
	}
	const ttl = 2
	s, err := lease.Grant(context.Background(), cli, ttl, logr.Discard())
	if err == nil {
		s.Close()
		t.Fatal("Grant succeeded through members that do not answer")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within the TTL") {
		t.Fatalf("err = %v, want the attempts' deadline and no answer within the TTL", err)
	}
	for _, p := range ps {
		p.forward(true, true)
	}
}
