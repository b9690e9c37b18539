package discovery_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/discovery"
)

var _ = Describe("bad input", func() {
	It("is rejected by NewRegistry with errors naming the option and value", func() {
		_, err := discovery.NewRegistry(nil, "/services", discovery.Options{TTL: 30 * time.Second})
		Expect(err).To(MatchError(ContainSubstring("client must not be nil")))
		_, err = discovery.NewRegistry(cluster.Client(), "", discovery.Options{TTL: 30 * time.Second})
		Expect(err).To(MatchError(ContainSubstring(`prefix must name a key prefix other than the root, got ""`)))
		_, err = discovery.NewRegistry(cluster.Client(), "//", discovery.Options{TTL: 30 * time.Second})
		Expect(err).To(MatchError(ContainSubstring(`got "//"`)))
		_, err = discovery.NewRegistry(cluster.Client(), "/services", discovery.Options{TTL: time.Second})
		Expect(err).To(MatchError("discovery: TTL must be at least 2s, got 1s"))
		_, err = discovery.NewRegistry(cluster.Client(), "/services", discovery.Options{TTL: -5 * time.Second})
		Expect(err).To(MatchError("discovery: TTL must be at least 2s, got -5s"))
		_, err = discovery.NewRegistry(cluster.Client(), "/services", discovery.Options{TTL: 2500 * time.Millisecond})
		Expect(err).To(MatchError("discovery: TTL must be a whole number of seconds (etcd leases count seconds), got 2.5s"))
		reg, err := discovery.NewRegistry(cluster.Client(), "/services", discovery.Options{})
		Expect(err).NotTo(HaveOccurred(), "zero Options: the default TTL, logs discarded")
		Expect(reg.Close()).To(Succeed())
	})

	It("is rejected by the registry's calls", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cluster.Client(), uniquePrefix(), discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		for _, c := range []struct {
			info discovery.ServiceInfo
			want string
		}{
			{discovery.ServiceInfo{ID: "1", Address: "h"}, "service name must not be empty"},
			{discovery.ServiceInfo{Name: "a/b", ID: "1", Address: "h"}, `service name must not contain "/", got "a/b"`},
			{discovery.ServiceInfo{Name: "api", Address: "h"}, "instance ID must not be empty"},
			{discovery.ServiceInfo{Name: "api", ID: "x/y", Address: "h"}, `instance ID must not contain "/", got "x/y"`},
			{discovery.ServiceInfo{Name: "api", ID: "1"}, "instance api/1: address must not be empty"},
			{discovery.ServiceInfo{Name: "api", ID: "1", Address: "h", Port: -1}, "port must be between 0 and 65535, got -1"},
			{discovery.ServiceInfo{Name: "api", ID: "1", Address: "h", Port: 70000}, "port must be between 0 and 65535, got 70000"},
		} {
			Expect(reg.Register(ctx, c.info)).To(MatchError(ContainSubstring(c.want)))
		}
		ok := func(context.Context) error { return nil }
		Expect(reg.Register(ctx, instance("api", "1", 1), discovery.WithHealthCheck(ok, -time.Second))).
			To(MatchError(ContainSubstring("health check interval must not be negative, got -1s")))
		Expect(reg.Deregister(ctx, "", "1")).To(MatchError(ContainSubstring("service name must not be empty")))
		Expect(reg.Deregister(ctx, "api", "")).To(MatchError(ContainSubstring("instance ID must not be empty")))
		_, err = reg.Discover(ctx, "")
		Expect(err).To(MatchError(ContainSubstring("service name must not be empty")))
		Expect(reg.Watch(ctx, "", func(discovery.ServiceEvent) {})).To(MatchError(ContainSubstring("service name must not be empty")))
		Expect(reg.Watch(ctx, "api", nil)).To(MatchError(ContainSubstring("watch callback must not be nil")))
	})

	It("is rejected by NewLoadBalancer", func() {
		_, err := discovery.NewLoadBalancer(nil, discovery.RoundRobin)
		Expect(err).To(MatchError(ContainSubstring("registry must not be nil")))
		reg, err := discovery.NewRegistry(cluster.Client(), uniquePrefix(), discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		_, err = discovery.NewLoadBalancer(reg, discovery.Strategy(7))
		Expect(err).To(MatchError(ContainSubstring("unknown load-balancing strategy 7")))
		lb, err := discovery.NewLoadBalancer(reg, discovery.RoundRobin)
		Expect(err).NotTo(HaveOccurred())
		defer lb.Close()
		_, err = lb.GetService(context.Background(), "")
		Expect(err).To(MatchError(ContainSubstring("service name must not be empty")))
	})

	It("skips stored values that are not instances, without failing the others", func(ctx SpecContext) {
		prefix := uniquePrefix()
		logs, log := newCapturedLog()
		reg, err := discovery.NewRegistry(cluster.Client(), prefix, discovery.Options{TTL: 5 * time.Second, Logger: log})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		Expect(reg.Register(ctx, instance("api", "good", 1))).To(Succeed())
		_, err = cluster.Client().Put(ctx, prefix+"/api/broken", "not json {")
		Expect(err).NotTo(HaveOccurred())
		_, err = cluster.Client().Put(ctx, prefix+"/api/nested/deeper", `{"name":"api","id":"x","address":"h"}`)
		Expect(err).NotTo(HaveOccurred())

		found, err := reg.Discover(ctx, "api")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(HaveLen(1))
		Expect(found[0].ID).To(Equal("good"))
		Expect(logs.Contains("does not decode", prefix+"/api/broken")).To(BeTrue())

		events := &eventLog{}
		Expect(reg.Watch(ctx, "api", events.add)).To(Succeed())
		Expect(events.all()).To(Equal([]string{"added good:1"}))
		_, err = cluster.Client().Put(ctx, prefix+"/api/good", "{broken")
		Expect(err).NotTo(HaveOccurred())
		Eventually(events.all).Should(Equal([]string{"added good:1", "removed good:1"}))

		lb, err := discovery.NewLoadBalancer(reg, discovery.Random)
		Expect(err).NotTo(HaveOccurred())
		defer lb.Close()
		_, err = lb.GetService(ctx, "api")
		Expect(err).To(MatchError(discovery.ErrNoInstances))
	})

	It("names strategies and event types", func() {
		Expect(discovery.RoundRobin.String()).To(Equal("round-robin"))
		Expect(discovery.Random.String()).To(Equal("random"))
		Expect(discovery.LeastConn.String()).To(Equal("least-conn"))
		Expect(discovery.Strategy(9).String()).To(Equal("Strategy(9)"))
		Expect(discovery.ServiceAdded.String()).To(Equal("added"))
		Expect(discovery.ServiceRemoved.String()).To(Equal("removed"))
		Expect(discovery.ServiceUpdated.String()).To(Equal("updated"))
		Expect(discovery.EventType(0).String()).To(Equal("EventType(0)"))
	})
})
