package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/discovery"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// stored returns the value and lease of key, or ok false when it does not exist.
func stored(ctx context.Context, cli *clientv3.Client, key string) (value string, lease clientv3.LeaseID, ok bool) {
	resp, err := cli.Get(ctx, key)
	Expect(err).NotTo(HaveOccurred())
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func instance(name, id string, port int) discovery.ServiceInfo {
	return discovery.ServiceInfo{Name: name, ID: id, Address: "10.0.0.1", Port: port}
}

var _ = Describe("Registry", func() {
	var (
		prefix string
		cli    *clientv3.Client
	)
	BeforeEach(func() {
		prefix = uniquePrefix()
		cli = cluster.Client()
	})

	It("registers instances as JSON under prefix/name/id, discovers and deregisters them", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cli, prefix+"/", discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()

		api1 := discovery.ServiceInfo{Name: "api", ID: "api-1", Address: "10.0.0.1", Port: 8080,
			Metadata: map[string]string{"version": "1.0.0", "region": "us-east-1"}}
		api2 := instance("api", "api-2", 8081)
		Expect(reg.Register(ctx, api2)).To(Succeed())
		Expect(reg.Register(ctx, api1)).To(Succeed())
		Expect(reg.Register(ctx, instance("db", "db-1", 5432))).To(Succeed())

		value, lease, ok := stored(ctx, cli, prefix+"/api/api-1")
		Expect(ok).To(BeTrue())
		Expect(lease).NotTo(BeZero())
		var decoded discovery.ServiceInfo
		Expect(json.Unmarshal([]byte(value), &decoded)).To(Succeed())
		Expect(decoded).To(Equal(api1))

		found, err := reg.Discover(ctx, "api")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(Equal([]discovery.ServiceInfo{api1, api2}))
		Expect(found[0].HostPort()).To(Equal("10.0.0.1:8080"))

		Expect(reg.Deregister(ctx, "api", "api-1")).To(Succeed())
		found, err = reg.Discover(ctx, "api")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(Equal([]discovery.ServiceInfo{api2}))

		none, err := reg.Discover(ctx, "nobody")
		Expect(err).NotTo(HaveOccurred())
		Expect(none).To(BeEmpty())

		Expect(reg.Close()).To(Succeed())
		resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Count).To(BeZero(), "Close deregisters every instance")
		_, err = reg.Discover(ctx, "api")
		Expect(err).To(MatchError(discovery.ErrClosed))
		Expect(reg.Register(ctx, api1)).To(MatchError(discovery.ErrClosed))
	})

	It("keeps an instance past its TTL while the heartbeat runs", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 2 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		Expect(reg.Register(ctx, instance("api", "a", 1))).To(Succeed())
		Consistently(func() bool {
			_, _, ok := stored(ctx, cli, prefix+"/api/a")
			return ok
		}).WithTimeout(3 * time.Second).WithPolling(100 * time.Millisecond).Should(BeTrue())
	})

	It("lets an instance expire within TTL + 1 s when its heartbeat stops", func(ctx SpecContext) {
		own, err := cluster.NewClient()
		Expect(err).NotTo(HaveOccurred())
		reg, err := discovery.NewRegistry(own, prefix, discovery.Options{TTL: 2 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(reg.Register(ctx, instance("api", "a", 1))).To(Succeed())
		_, _, ok := stored(ctx, cli, prefix+"/api/a")
		Expect(ok).To(BeTrue())

		// The process's connection goes away without deregistering: no more keep-alives.
		Expect(own.Close()).To(Succeed())
		Eventually(func() bool {
			_, _, ok := stored(ctx, cli, prefix+"/api/a")
			return ok
		}).WithTimeout(3 * time.Second).WithPolling(50 * time.Millisecond).Should(BeFalse())
		_ = reg.Close() // its client is gone: deregistering fails, the goroutines stop
	})

	It("registers again on a new lease when its lease is revoked", func(ctx SpecContext) {
		logs, log := newCapturedLog()
		reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 2 * time.Second, Logger: log})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		Expect(reg.Register(ctx, instance("api", "a", 1))).To(Succeed())
		_, first, ok := stored(ctx, cli, prefix+"/api/a")
		Expect(ok).To(BeTrue())

		_, err = cli.Revoke(ctx, first)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() clientv3.LeaseID {
			_, lease, _ := stored(ctx, cli, prefix+"/api/a")
			return lease
		}).WithTimeout(5 * time.Second).Should(And(Not(BeZero()), Not(Equal(first))))
		Expect(logs.Contains("lease lost")).To(BeTrue())
		// The new lease is kept alive too.
		Consistently(func() bool {
			_, _, ok := stored(ctx, cli, prefix+"/api/a")
			return ok
		}).WithTimeout(3 * time.Second).WithPolling(100 * time.Millisecond).Should(BeTrue())
	})

	It("registers again after etcd restarts", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT())
		// This process reaches etcd through a proxy, so that the spec decides when it is cut
		// off (an in-process etcd keeps answering open streams for a while as it stops).
		px, err := etcdtest.NewProxy(c.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		defer px.Close()
		own, err := clientv3.New(clientv3.Config{Endpoints: []string{px.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		Expect(err).NotTo(HaveOccurred())
		defer own.Close()
		logs, log := newCapturedLog()
		reg, err := discovery.NewRegistry(own, prefix, discovery.Options{TTL: 2 * time.Second, Logger: log})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		Expect(reg.Register(ctx, instance("api", "a", 1))).To(Succeed())
		leaseOf := func() clientv3.LeaseID {
			resp, err := c.Client().Get(ctx, prefix+"/api/a")
			if err != nil || len(resp.Kvs) == 0 {
				return 0
			}
			return clientv3.LeaseID(resp.Kvs[0].Lease)
		}
		present := func() bool { return leaseOf() != 0 }
		before := leaseOf()
		Expect(before).NotTo(BeZero())

		By("etcd restarts while this process is cut off for longer than the TTL")
		px.Block()
		Expect(c.Restart(ctx, 0)).To(Succeed())
		Eventually(func() bool { return logs.Contains("lease lost") }).WithTimeout(10 * time.Second).Should(BeTrue())
		px.Unblock()
		Eventually(leaseOf).WithTimeout(15 * time.Second).Should(And(Not(BeZero()), Not(Equal(before))))
		Eventually(func() bool { return logs.Contains("registered again") }).Should(BeTrue())
		Consistently(present).WithTimeout(3 * time.Second).WithPolling(100 * time.Millisecond).Should(BeTrue())

		By("a plain restart: the instance is back in discovery soon and stays there")
		Expect(c.Restart(ctx, 0)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(present()).To(BeTrue())
			g.Consistently(present).WithTimeout(3 * time.Second).WithPolling(100 * time.Millisecond).Should(BeTrue())
		}).WithTimeout(20 * time.Second).Should(Succeed())
	})

	It("replaces a registration of the same instance, and watchers see the update", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		Expect(reg.Register(ctx, instance("api", "a", 1))).To(Succeed())
		events := &eventLog{}
		Expect(reg.Watch(ctx, "api", events.add)).To(Succeed())

		updated := instance("api", "a", 2)
		updated.Metadata = map[string]string{"version": "2"}
		Expect(reg.Register(ctx, updated)).To(Succeed())
		Eventually(events.all).Should(Equal([]string{"added a:1", "updated a:2"}))
		found, err := reg.Discover(ctx, "api")
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(Equal([]discovery.ServiceInfo{updated}))

		// The replaced registration's heartbeat is gone: the instance outlives the old lease.
		Consistently(func() bool {
			_, _, ok := stored(ctx, cli, prefix+"/api/a")
			return ok
		}).WithTimeout(1 * time.Second).Should(BeTrue())
		Expect(reg.Close()).To(Succeed())
		_, _, ok := stored(ctx, cli, prefix+"/api/a")
		Expect(ok).To(BeFalse())
	})

	It("leaves an unhealthy instance out of discovery until it is healthy again", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		var healthy atomic.Bool
		check := func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("database unreachable")
		}
		Expect(reg.Register(ctx, instance("api", "a", 1), discovery.WithHealthCheck(check, 50*time.Millisecond))).To(Succeed())
		Expect(reg.Register(ctx, instance("api", "b", 2))).To(Succeed())
		ids := func() []string {
			found, err := reg.Discover(ctx, "api")
			Expect(err).NotTo(HaveOccurred())
			var out []string
			for _, s := range found {
				out = append(out, s.ID)
			}
			return out
		}
		Expect(ids()).To(Equal([]string{"b"}), "a failing first check keeps the instance out")

		healthy.Store(true)
		Eventually(ids).Should(Equal([]string{"a", "b"}))
		healthy.Store(false)
		Eventually(ids).Should(Equal([]string{"b"}))
		healthy.Store(true)
		Eventually(ids).Should(Equal([]string{"a", "b"}))
	})

	It("deregisters an instance it did not register", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		v, err := json.Marshal(instance("api", "stale", 1))
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, prefix+"/api/stale", string(v))
		Expect(err).NotTo(HaveOccurred())
		Expect(reg.Deregister(ctx, "api", "stale")).To(Succeed())
		_, _, ok := stored(ctx, cli, prefix+"/api/stale")
		Expect(ok).To(BeFalse())
	})
})
