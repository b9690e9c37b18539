package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdkit/etcdkit/config"
	"github.com/etcdkit/etcdkit/discovery"
	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// rpcCounter counts the requests and streams a client sends, by method.
type rpcCounter struct {
	mu sync.Mutex
	by map[string]int
}

func (r *rpcCounter) add(method string) {
	r.mu.Lock()
	r.by[method]++
	r.mu.Unlock()
}

func (r *rpcCounter) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.by))
	for k, v := range r.by {
		out[k] = v
	}
	return out
}

func (r *rpcCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			r.add(method)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			r.add(method)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

var _ = Describe("every component with auth tokens that expire", func() {
	// tokenTTL is the JWT lifetime; the spec runs for five of them.
	const tokenTTL = 2 * time.Second

	It("keeps working past the tokens' TTL, opened before and after the first expiry, without a spin", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("rootpw"), etcdtest.WithJWT(tokenTTL))
		rpcs := &rpcCounter{by: map[string]int{}}
		cfg := c.ClientConfig()
		cfg.DialOptions = append(cfg.DialOptions, rpcs.dialOptions()...)
		cli, err := clientv3.New(cfg) // one client for all: the case where new watches meet an old stream
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		start := time.Now()

		// Opened before the first expiry: a leader-only controller.
		mgr, err := manager.New(manager.Options{Client: cli, Name: "tokens", LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		seen := &lastSeen{v: map[string]string{}}
		Expect(manager.NewControllerManagedBy(mgr).Named("jobs").For(source.Prefix("/jobs/")).
			Complete(reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
				seen.set(req.Key, "seen")
				return reconcile.Result{}, nil
			}))).To(Succeed())
		stop := runManager(mgr)
		defer stop()
		Eventually(mgr.IsLeader).Should(BeTrue())

		// The tokens are JWTs that expire tokenTTL after they are issued: waiting past it is
		// the condition under test, and nothing else can signal it.
		Eventually(func() time.Duration { return time.Since(start) }, 2*tokenTTL).WithPolling(100 * time.Millisecond).
			Should(BeNumerically(">", tokenTTL+tokenTTL/2))

		// Opened after it, on the same client, once per round until five TTLs have passed.
		rounds := 0
		for ; time.Since(start) < 5*tokenTTL; rounds++ {
			round := rounds
			By(fmt.Sprintf("round %d at %s", round, time.Since(start).Round(100*time.Millisecond)))
			key := fmt.Sprintf("/jobs/%d", round)
			_, err := cli.Put(ctx, key, "x")
			Expect(err).NotTo(HaveOccurred())
			Eventually(func() string { return seen.snapshot()[key] }).Should(Equal("seen"))

			cfgMgr, err := config.NewManager(cli, fmt.Sprintf("/config/%d/", round), config.Options{})
			Expect(err).NotTo(HaveOccurred())
			Expect(cfgMgr.WaitForSync(ctx)).To(Succeed())
			Expect(cfgMgr.Set(ctx, "db/host", "h")).To(Succeed())
			Expect(cfgMgr.GetString(ctx, "db/host")).To(Equal("h"))
			cfgMgr.Close()

			reg, err := discovery.NewRegistry(cli, "/services", discovery.Options{TTL: 2 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			var added atomic.Int32
			wctx, cancelWatch := context.WithCancel(ctx)
			Expect(reg.Watch(wctx, "api", func(ev discovery.ServiceEvent) {
				if ev.Type == discovery.ServiceAdded && ev.Service.ID == fmt.Sprint(round) {
					added.Add(1)
				}
			})).To(Succeed())
			Expect(reg.Register(ctx, discovery.ServiceInfo{Name: "api", ID: fmt.Sprint(round), Address: "127.0.0.1", Port: 80})).To(Succeed())
			Eventually(added.Load).Should(BeEquivalentTo(1))
			cancelWatch()
			Expect(reg.Close()).To(Succeed())

			l, err := lock.New(cli, "/locks/tokens", lock.Options{TTL: 2 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			Expect(l.Lock(ctx)).To(Succeed())
			Expect(l.Unlock(ctx)).To(Succeed())
			Expect(l.Close()).To(Succeed())

			e, err := election.New(cli, "/elections/tokens/", election.Options{ID: fmt.Sprint(round), TTL: 2 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			octx, cancelObserve := context.WithCancel(ctx)
			leaders := e.Observe(octx)
			Expect(e.Campaign(ctx)).To(Succeed())
			Eventually(leaders).Should(Receive(Equal(fmt.Sprint(round))))
			cancelObserve()
			Expect(e.Close()).To(Succeed())
		}
		Expect(mgr.IsLeader()).To(BeTrue())
		Expect(mgr.Refusals()).To(BeEmpty())

		// No loop spins on a refused token: the run stays within a budget per round (each
		// opens three watches, a lock, a campaign, a registration: measured about 25
		// requests) plus the background of the running manager, far below what a loop
		// without backoff sends (hundreds a second).
		counts := rpcs.snapshot()
		total := 0
		for _, n := range counts {
			total += n
		}
		elapsed := time.Since(start)
		GinkgoWriter.Printf("requests in %s over %d rounds: %d total, %v\n", elapsed.Round(time.Millisecond), rounds, total, counts)
		Expect(counts["/etcdserverpb.Watch/Watch"]).To(BeNumerically("<=", 4*rounds+10))
		Expect(float64(total)).To(BeNumerically("<", 40*float64(rounds)+20*elapsed.Seconds()))
	})
})
