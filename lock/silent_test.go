package lock_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
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

// throughProxies returns a client of the suite's etcd through n silent proxies, all
// forwarding, once the client has had answers through each (so that its connections are
// ready and take requests in turn); both are closed after the spec.
func throughProxies(ctx context.Context, n int) (*clientv3.Client, []*silentProxy) {
	GinkgoHelper()
	var ps []*silentProxy
	var eps []string
	for range n {
		p, err := newSilentProxy(cluster.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(p.Close)
		ps = append(ps, p)
		eps = append(eps, p.Endpoint())
	}
	cfg := cluster.ClientConfig()
	cfg.Endpoints = eps
	cli, err := clientv3.New(cfg)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	Eventually(func(g Gomega) {
		_, err := cli.Get(ctx, "warm-up")
		g.Expect(err).NotTo(HaveOccurred())
		for _, p := range ps {
			answers, _ := p.counts()
			g.Expect(answers).To(BeNumerically(">=", 3), "answers through %s", p.Endpoint())
		}
	}).WithContext(ctx).WithPolling(time.Millisecond).Should(Succeed())
	return cli, ps
}

// historyOf returns every event under key/ from revision 1.
func historyOf(ctx context.Context, key string) []*clientv3.Event {
	GinkgoHelper()
	resp, err := cluster.Client().Get(ctx, "history-probe", clientv3.WithCountOnly())
	Expect(err).NotTo(HaveOccurred())
	var evs []*clientv3.Event
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range cluster.Client().Watch(wctx, key+"/", clientv3.WithPrefix(), clientv3.WithRev(1)) {
		Expect(wr.Err()).NotTo(HaveOccurred())
		evs = append(evs, wr.Events...)
		if len(wr.Events) > 0 && wr.Events[len(wr.Events)-1].Kv.ModRevision >= resp.Header.Revision {
			break
		}
		if wr.IsProgressNotify() && wr.Header.Revision >= resp.Header.Revision {
			break
		}
	}
	return evs
}

var _ = Describe("a lock whose etcd member keeps requests without answering", func() {
	It("locks, try-locks, read-locks and unlocks through the other members", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		ps[0].forward(false, false)
		key := uniqueKey("silent-member")
		l := newLock(cli, key, 2)
		rw, err := lock.NewRW(cli, key, 2, GinkgoLogr)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(rw.Close)
		for range 3 {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			Expect(l.Lock(cctx)).To(Succeed())
			Expect(l.Unlock(cctx)).To(Succeed())
			Expect(l.TryLock(cctx)).To(BeTrue())
			Expect(rw.TryRLock(cctx)).To(BeFalse())
			Expect(l.Unlock(cctx)).To(Succeed())
			Expect(rw.RLock(cctx)).To(Succeed())
			Expect(rw.RUnlock(cctx)).To(Succeed())
			cancel()
		}
		Eventually(queueLen(key)).WithContext(ctx).Should(BeZero())
		_, held := ps[0].counts()
		Expect(held).To(BeNumerically(">", 0), "requests the silent member kept")
		ps[0].forward(true, true)
	})

	It("recognises its own queue entry when etcd applied a request whose answer was lost", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		ps[0].forward(true, false) // requests go through, answers do not
		key := uniqueKey("lost-answers")
		l := newLock(cli, key, 2)
		var tokens []int64
		for range 10 {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			Expect(l.Lock(cctx)).To(Succeed())
			tokens = append(tokens, l.Token())
			Expect(l.Unlock(cctx)).To(Succeed())
			cancel()
		}
		_, held := ps[0].counts()
		Expect(held).To(BeNumerically(">", 0), "answers lost")
		ps[0].forward(true, true)

		By("each Lock created one entry, once, and held it under its create revision")
		var created []int64
		for _, ev := range historyOf(ctx, key) {
			if ev.Type == clientv3.EventTypePut {
				Expect(ev.Kv.Version).To(BeEquivalentTo(1), "%s written again", ev.Kv.Key)
				created = append(created, ev.Kv.CreateRevision)
			}
		}
		Expect(created).To(Equal(tokens))
		Expect(queueLen(key)(ctx)).To(BeZero())
	})

	It("reports a release that etcd does not answer as of unknown outcome, and etcd frees the lock anyway", specTimeout, func(ctx SpecContext) {
		cli, ps := throughProxies(ctx, 3)
		key := uniqueKey("unanswered-release")
		l := newLock(cli, key, 10)
		Expect(l.Lock(ctx)).To(Succeed())
		for _, p := range ps {
			p.forward(false, false)
		}
		uctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		Expect(l.Unlock(uctx)).To(MatchError(lock.ErrOutcomeUnknown))

		By("the session is abandoned: its lease is revoked once etcd answers, long before the TTL")
		for _, p := range ps {
			p.forward(true, true)
		}
		Eventually(queueLen(key)).WithContext(ctx).WithTimeout(5 * time.Second).Should(BeZero())
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(l.Unlock(ctx)).To(Succeed())
	})
})
