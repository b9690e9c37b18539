package manager_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a manager on a secured etcd", func() {
	var c *etcdtest.Cluster
	BeforeEach(func() { c = etcdtest.New(GinkgoT(), etcdtest.WithAuth("rootpw")) })

	userManager := func(user string, extra func(*manager.Options)) *manager.Manager {
		cli, err := c.UserClient(user, "pw")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		opts := manager.Options{
			Client: cli, Name: "jobs", ID: "a", LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 5 * time.Second,
			HealthProbeAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		}
		if extra != nil {
			extra(&opts)
		}
		mgr, err := manager.New(opts)
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}

	It("fails /readyz and reports the refused election until the role is mended, then leads", func(ctx SpecContext) {
		// The user may read its keyspace but not write its election prefix.
		Expect(c.AddUser(ctx, "ctl", "pw", etcdtest.Read("/etcdkit/jobs/"))).To(Succeed())
		mgr := userManager("ctl", nil)
		r := startReplica(mgr)
		defer r.shutdown()
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		ready, metrics := "http://"+mgr.HealthProbeAddr()+"/readyz", "http://"+mgr.MetricsAddr()+"/metrics"

		Eventually(func() string { _, body := get(ready); return body }).Should(And(
			ContainSubstring("permission denied"), ContainSubstring("/etcdkit/jobs/election/")))
		code, _ := get(ready)
		Expect(code).To(Equal(503))
		Expect(mgr.Refusals()).To(HaveLen(1))
		Expect(mgr.IsLeader()).To(BeFalse())
		_, body := get(metrics)
		Expect(body).To(ContainSubstring(`etcdkit_permanent_error{component="election"} 1`))

		Expect(c.Grant(ctx, "ctl", etcdtest.Write("/etcdkit/jobs/election/"))).To(Succeed())
		Eventually(mgr.IsLeader, 20*time.Second).Should(BeTrue())
		Eventually(func() int { code, _ := get(ready); return code }).Should(Equal(200))
		Expect(mgr.Refusals()).To(BeEmpty())
		_, body = get(metrics)
		Expect(body).To(ContainSubstring(`etcdkit_permanent_error{component="election"} 0`))
	})

	It("fails Start at once, naming the prefix, when a controller may not read what it watches", func(ctx SpecContext) {
		Expect(c.AddUser(ctx, "ctl", "pw", etcdtest.ReadWrite("/etcdkit/jobs/"))).To(Succeed())
		mgr := userManager("ctl", nil)
		Expect(manager.NewControllerManagedBy(mgr).Named("jobs").For(source.Prefix("/jobs/")).
			Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
				return reconcile.Result{}, nil
			}))).To(Succeed())
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := mgr.Start(sctx)
		Expect(err).To(MatchError(And(ContainSubstring("permission denied"), ContainSubstring("/jobs/"))))
		Expect(sctx.Err()).NotTo(HaveOccurred(), "Start waited for its deadline instead of returning the refusal")
	})

	It("refuses a sharded manager that may not read its keyspace, naming the key", func(ctx SpecContext) {
		Expect(c.AddUser(ctx, "ctl", "pw", etcdtest.ReadWrite("/etcdkit/jobs/election/"))).To(Succeed())
		cli, err := c.UserClient("ctl", "pw")
		Expect(err).NotTo(HaveOccurred())
		defer cli.Close()
		_, err = manager.New(manager.Options{Client: cli, Name: "jobs", Sharding: &manager.ShardingOptions{Shards: 4}})
		Expect(err).To(MatchError(And(ContainSubstring("permission denied"), ContainSubstring("/etcdkit/jobs/shards"))))
	})

	It("reports a member that may not register until the role is mended, then shards", func(ctx SpecContext) {
		Expect(c.AddUser(ctx, "ctl", "pw", etcdtest.Read("/etcdkit/jobs/"), etcdtest.Write("/etcdkit/jobs/election/"),
			etcdtest.Perm{Key: "/etcdkit/jobs/shards", Write: true})).To(Succeed())
		mgr := userManager("ctl", func(o *manager.Options) { o.Sharding = &manager.ShardingOptions{Shards: 4} })
		r := startReplica(mgr)
		defer r.shutdown()
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		ready := "http://" + mgr.HealthProbeAddr() + "/readyz"
		Eventually(func() string { _, body := get(ready); return body }).Should(And(
			ContainSubstring("permission denied"), ContainSubstring("/etcdkit/jobs/members/a")))

		Expect(c.Grant(ctx, "ctl", etcdtest.ReadWrite("/etcdkit/jobs/"))).To(Succeed())
		Eventually(func() int {
			st, _ := mgr.ShardStatus(ctx)
			return len(st.Owned)
		}, 30*time.Second).Should(Equal(4))
		Eventually(func() int { code, _ := get(ready); return code }).Should(Equal(200))
	})

	DescribeTable("reports a sharded write the role refuses, naming the keys, until it is mended",
		func(ctx SpecContext, refused string) {
			grants := []etcdtest.Perm{etcdtest.Read("/etcdkit/jobs/"), etcdtest.Perm{Key: "/etcdkit/jobs/shards", Write: true}}
			for _, p := range []string{"election/", "members/", "assignments/", "owners/"} {
				if p != refused {
					grants = append(grants, etcdtest.ReadWrite("/etcdkit/jobs/"+p))
				}
			}
			Expect(c.AddUser(ctx, "ctl", "pw", grants...)).To(Succeed())
			mgr := userManager("ctl", func(o *manager.Options) { o.Sharding = &manager.ShardingOptions{Shards: 4} })
			r := startReplica(mgr)
			defer r.shutdown()
			Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
			ready := "http://" + mgr.HealthProbeAddr() + "/readyz"
			Eventually(func() string { _, body := get(ready); return body }).Should(And(
				ContainSubstring("permission denied"), ContainSubstring("/etcdkit/jobs/"+refused)))

			Expect(c.Grant(ctx, "ctl", etcdtest.ReadWrite("/etcdkit/jobs/"+refused))).To(Succeed())
			Eventually(func() int {
				st, _ := mgr.ShardStatus(ctx)
				return len(st.Owned)
			}, 30*time.Second).Should(Equal(4))
			Eventually(func() int { code, _ := get(ready); return code }).Should(Equal(200))
		},
		Entry("claims of owners/", "owners/"),
		Entry("the leader's assignments/", "assignments/"),
	)

	It("refuses a LeaseTTL longer than etcd grants", func() {
		_, err := manager.New(manager.Options{Client: c.Client(), Name: "jobs", LeaseTTL: 9_000_000_001 * time.Second})
		Expect(err).To(MatchError("manager: LeaseTTL must be at most 2500000h0m0s (etcd's longest lease), got 2500000h0m1s"))
	})
})
