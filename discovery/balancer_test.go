package discovery_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/discovery"
)

var _ = Describe("LoadBalancer", func() {
	var reg *discovery.Registry
	BeforeEach(func(ctx SpecContext) {
		var err error
		reg, err = discovery.NewRegistry(cluster.Client(), uniquePrefix(), discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(reg.Close)
		for i, id := range []string{"a", "b", "c"} {
			Expect(reg.Register(ctx, instance("api", id, 8080+i))).To(Succeed())
		}
	})

	newBalancer := func(s discovery.Strategy) *discovery.LoadBalancer {
		lb, err := discovery.NewLoadBalancer(reg, s)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(lb.Close)
		return lb
	}
	picks := func(ctx SpecContext, lb *discovery.LoadBalancer, n int) []string {
		var ids []string
		for i := 0; i < n; i++ {
			s, err := lb.GetService(ctx, "api")
			Expect(err).NotTo(HaveOccurred())
			ids = append(ids, s.ID)
		}
		return ids
	}
	count := func(ids []string) map[string]int {
		m := map[string]int{}
		for _, id := range ids {
			m[id]++
		}
		return m
	}

	It("round robin cycles through the instances evenly", func(ctx SpecContext) {
		lb := newBalancer(discovery.RoundRobin)
		ids := picks(ctx, lb, 30)
		Expect(count(ids)).To(Equal(map[string]int{"a": 10, "b": 10, "c": 10}))
		Expect(ids[:3]).To(ConsistOf("a", "b", "c"))
		for i := range ids {
			Expect(ids[i]).To(Equal(ids[i%3]), "pick %d repeats the cycle", i)
		}
	})

	It("random covers every instance", func(ctx SpecContext) {
		lb := newBalancer(discovery.Random)
		counts := count(picks(ctx, lb, 300))
		Expect(counts).To(HaveLen(3))
		for id, n := range counts {
			Expect(n).To(BeNumerically(">", 50), "instance %s is picked about a third of the time", id)
		}
	})

	It("least-conn picks the instance with the fewest requests in flight", func(ctx SpecContext) {
		lb := newBalancer(discovery.LeastConn)
		held := map[string][]func(){}
		acquire := func() string {
			s, release, err := lb.Acquire(ctx, "api")
			Expect(err).NotTo(HaveOccurred())
			held[s.ID] = append(held[s.ID], release)
			return s.ID
		}
		// Equal loads spread over all instances.
		Expect([]string{acquire(), acquire(), acquire()}).To(ConsistOf("a", "b", "c"))
		Expect([]string{acquire(), acquire(), acquire()}).To(ConsistOf("a", "b", "c"))
		// b: 2 in flight -> 0; the next two go to b (0, then 1 while the others have 2).
		held["b"][0]()
		held["b"][1]()
		held["b"][1]() // a second release of the same request counts once
		Expect(acquire()).To(Equal("b"))
		Expect(acquire()).To(Equal("b"))
		// GetService picks without counting: b stays the least loaded after the pick.
		held["c"][0]()
		s, err := lb.GetService(ctx, "api")
		Expect(err).NotTo(HaveOccurred())
		Expect(s.ID).To(Equal("c"))
		Expect(acquire()).To(Equal("c"))
	})

	It("follows registrations and removals from its watch", func(ctx SpecContext) {
		lb := newBalancer(discovery.RoundRobin)
		Expect(count(picks(ctx, lb, 3))).To(HaveLen(3))
		Expect(reg.Register(ctx, instance("api", "d", 9000))).To(Succeed())
		Eventually(func() map[string]int { return count(picks(ctx, lb, 4)) }).Should(HaveKey("d"))
		Expect(reg.Deregister(ctx, "api", "a")).To(Succeed())
		Eventually(func() map[string]int { return count(picks(ctx, lb, 4)) }).ShouldNot(HaveKey("a"))
		Consistently(func() map[string]int { return count(picks(ctx, lb, 3)) }).
			WithTimeout(200 * time.Millisecond).Should(Equal(map[string]int{"b": 1, "c": 1, "d": 1}))
	})

	It("says which service has no instances", func(ctx SpecContext) {
		lb := newBalancer(discovery.LeastConn)
		_, err := lb.GetService(ctx, "billing")
		Expect(err).To(MatchError(discovery.ErrNoInstances))
		Expect(err.Error()).To(ContainSubstring(`"billing"`))
		_, _, err = lb.Acquire(ctx, "billing")
		Expect(err).To(MatchError(discovery.ErrNoInstances))

		lb.Close()
		_, err = lb.GetService(ctx, "api")
		Expect(err).To(MatchError(discovery.ErrClosed))
	})
})
