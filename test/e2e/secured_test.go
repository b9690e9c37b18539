package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/config"
	"github.com/etcdkit/etcdkit/discovery"
	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// The specs of this file run each component against an etcd with authentication on, as a
// user that holds exactly the permissions README.md's "Running against a secured etcd"
// documents for it, and with one of them missing. secRoles is that section's table, row
// for row; the README specs check that the table and its etcdctl script say the same.

const (
	rootPassword = "rootpw"
	userPassword = "pw"
	// secTTL is the lease TTL of every session here: long enough that a loaded machine
	// does not lose one, short enough that a refused campaign is retried soon.
	secTTL = 5 * time.Second
)

// secCheck runs a component's happy path as the user of cli.
type secCheck func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client)

// secExample is one example role of a row: the role of the README's script that holds the
// grants, the grants, and the component's happy path under exactly those grants. An example
// without a role needs no grant at all.
type secExample struct {
	role  string
	perms []etcdtest.Perm
	check secCheck
}

// secRow is one row of the README's table: the component as the table names it, and its
// examples, as the table's last column lists them.
type secRow struct {
	component string
	examples  []secExample
}

var secRoles = []secRow{
	{"`manager.New`, leader election on (the default), no `Sharding`", []secExample{
		{"jobs-controller", []etcdtest.Perm{etcdtest.ReadWrite("/etcdkit/jobs/election/")}, checkLeaderManager("jobs")},
	}},
	{"`manager.New` with `Sharding`", []secExample{
		{"orders-controller", []etcdtest.Perm{etcdtest.ReadWrite("/etcdkit/orders/")}, checkShardedManager("orders")},
	}},
	{"`manager.New` with `DisableLeaderElection`", []secExample{
		{"", nil, checkPlainManager},
	}},
	{"a controller's `For(source.Prefix(p))`", []secExample{
		{"jobs-controller", []etcdtest.Perm{etcdtest.Read("/jobs/")}, checkController("/jobs/")},
		{"orders-controller", []etcdtest.Perm{etcdtest.Read("/orders/")}, checkController("/orders/")},
	}},
	{"`store.New(client, p)`: `Create`, `Update`, `Delete`, `Mutate`", []secExample{
		{"jobs-controller", []etcdtest.Perm{etcdtest.ReadWrite("/jobs-status/")}, checkStore("/jobs-status/")},
		{"orders-controller", []etcdtest.Perm{etcdtest.ReadWrite("/order-status/")}, checkStore("/order-status/")},
	}},
	{"`lock.New(client, k, opts)`", []secExample{
		{"report-worker", []etcdtest.Perm{etcdtest.ReadWrite("/locks/report/")}, checkLock("/locks/report")},
	}},
	{"`lock.NewRW(client, k, opts)`", []secExample{
		{"report-worker", []etcdtest.Perm{etcdtest.ReadWrite("/locks/catalog/")}, checkRWLock("/locks/catalog")},
	}},
	{"`lock.NewManager(client, p, opts)`", []secExample{
		{"report-worker", []etcdtest.Perm{etcdtest.ReadWrite("/locks/tenants/")}, checkLockManager("/locks/tenants")},
	}},
	{"`election.New(client, p, opts)`: `Campaign`, `Run`, `Resign`, `NewLeaderTask`, `NewHACoordinator`", []secExample{
		{"billing", []etcdtest.Perm{etcdtest.ReadWrite("/elections/billing/")}, checkCandidates("/elections/billing/")},
	}},
	{"an election's `Observe` and `GetLeader` alone", []secExample{
		{"billing-observer", []etcdtest.Perm{etcdtest.Read("/elections/billing/")}, checkObserver("/elections/billing/")},
	}},
	{"`discovery.NewRegistry(client, p, opts)`: `Register`, `Deregister`", []secExample{
		{"api-server", []etcdtest.Perm{etcdtest.ReadWrite("/services/api/")}, checkRegisterWithHealth("/services", "api")},
	}},
	{"`Discover`, `Watch`, `discovery.NewLoadBalancer`", []secExample{
		{"api-client", []etcdtest.Perm{etcdtest.Read("/services/api/")}, checkDiscover("/services", "api")},
	}},
	{"`config.NewManager(client, p, opts)`: the `Get` calls, `GetAll`, `Watch`, `FeatureFlags` reads", []secExample{
		{"app", []etcdtest.Perm{etcdtest.Read("/config/app/")}, checkConfigReader("/config/app/")},
	}},
	{"`Set`, `Delete`, `FeatureFlags.Enable`, `Disable`, `SetRollout`", []secExample{
		{"config-admin", []etcdtest.Perm{etcdtest.ReadWrite("/config/app/")}, checkConfigWriter("/config/app/")},
	}},
	{"`config.NewSnapshots(mgr)`", []secExample{
		{"config-admin", []etcdtest.Perm{etcdtest.ReadWrite("/config/app/"), etcdtest.ReadWrite("/config/app.snapshots/")}, checkSnapshots("/config/app/")},
	}},
}

// securedCluster starts an etcd with authentication on.
func securedCluster() *etcdtest.Cluster {
	return etcdtest.New(GinkgoT(), etcdtest.WithAuth(rootPassword))
}

// userClient adds a user holding exactly perms and returns a client that authenticates as
// it, closed when the spec ends.
func userClient(ctx context.Context, c *etcdtest.Cluster, name string, perms ...etcdtest.Perm) *clientv3.Client {
	Expect(c.AddUser(ctx, name, userPassword, perms...)).To(Succeed())
	cli, err := c.UserClient(name, userPassword)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	return cli
}

// denied matches an error that says permission denied and names what was refused.
func denied(what string) OmegaMatcher {
	return MatchError(And(ContainSubstring("permission denied"), ContainSubstring(what)))
}

// within returns a context far longer than any refusal takes: a call that returns the
// refusal and not this deadline was not retried in silence.
func within(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, time.Minute)
}

// logSink keeps the lines of a logger, for specs that read what a component logged.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		s.mu.Lock()
		s.lines = append(s.lines, prefix+" "+args)
		s.mu.Unlock()
	}, funcr.Options{})
}

func (s *logSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// probe answers a GET of url with the status code and body.
func probe(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// secManager returns a manager on cli with the probes on a free local port.
func secManager(cli *clientv3.Client, opts manager.Options) *manager.Manager {
	opts.Client = cli
	if opts.ID == "" {
		opts.ID = "a"
	}
	opts.LeaseTTL = secTTL
	opts.GracefulShutdownTimeout = 5 * time.Second
	opts.HealthProbeAddr, opts.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	opts.Logger = GinkgoLogr
	mgr, err := manager.New(opts)
	Expect(err).NotTo(HaveOccurred())
	return mgr
}

// readyz answers the manager's /readyz.
func readyz(mgr *manager.Manager) (int, string) {
	return probe("http://" + mgr.HealthProbeAddr() + "/readyz")
}

func readyzCode(mgr *manager.Manager) func() int {
	return func() int { code, _ := readyz(mgr); return code }
}

// rootPut writes a key as root.
func rootPut(ctx context.Context, c *etcdtest.Cluster, key, value string) {
	_, err := c.Client().Put(ctx, key, value)
	Expect(err).NotTo(HaveOccurred())
}

// rootValue reads a key as root ("" when absent).
func rootValue(ctx context.Context, c *etcdtest.Cluster, key string) func() string {
	return func() string {
		resp, err := c.Client().Get(ctx, key)
		Expect(err).NotTo(HaveOccurred())
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
}

// The happy paths of the rows.

func checkLeaderManager(name string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		mgr := secManager(cli, manager.Options{Name: name})
		stop := runManager(mgr)
		defer stop()
		Eventually(mgr.IsLeader).Should(BeTrue())
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		Eventually(readyzCode(mgr)).Should(Equal(http.StatusOK))
		Expect(mgr.Refusals()).To(BeEmpty())
	}
}

func checkShardedManager(name string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		mgr := secManager(cli, manager.Options{Name: name, Sharding: &manager.ShardingOptions{Shards: 4}})
		stop := runManager(mgr)
		defer stop()
		Eventually(func() bool {
			st, _ := mgr.ShardStatus(ctx)
			return st.Settled() && len(st.Owned) == 4
		}, 30*time.Second).Should(BeTrue())
		Eventually(readyzCode(mgr)).Should(Equal(http.StatusOK))
		Expect(mgr.Refusals()).To(BeEmpty())
	}
}

// checkPlainManager runs a manager without leader election: it needs no key of its own.
func checkPlainManager(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
	mgr := secManager(cli, manager.Options{Name: "plain", DisableLeaderElection: true})
	stop := runManager(mgr)
	defer stop()
	Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
	Eventually(func() int { code, _ := probe("http://" + mgr.HealthProbeAddr() + "/healthz"); return code }).Should(Equal(http.StatusOK))
	Eventually(readyzCode(mgr)).Should(Equal(http.StatusOK))
}

// checkController runs a controller that watches prefix in a manager without leader
// election, so that it needs nothing but the controller's own permission.
func checkController(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		rootPut(ctx, c, prefix+"before", "1")
		mgr := secManager(cli, manager.Options{Name: "ctl", DisableLeaderElection: true})
		var mu sync.Mutex
		seen := map[string]bool{}
		Expect(manager.NewControllerManagedBy(mgr).Named("ctl").For(source.Prefix(prefix)).
			Complete(reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
				mu.Lock()
				seen[req.Key] = true
				mu.Unlock()
				return reconcile.Result{}, nil
			}))).To(Succeed())
		stop := runManager(mgr)
		defer stop()
		rootPut(ctx, c, prefix+"after", "1")
		Eventually(func() map[string]bool {
			mu.Lock()
			defer mu.Unlock()
			return copyMap(seen)
		}).Should(Equal(map[string]bool{prefix + "before": true, prefix + "after": true}))
		Expect(mgr.Refusals()).To(BeEmpty())
	}
}

func copyMap(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

type secStatus struct{ Seen string }

func checkStore(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		statuses, err := store.New[secStatus](cli, prefix, store.Options[secStatus]{})
		Expect(err).NotTo(HaveOccurred())
		key := statuses.Key("a")
		obj, err := statuses.Create(ctx, key, &secStatus{Seen: "1"})
		Expect(err).NotTo(HaveOccurred())
		obj, err = statuses.Update(ctx, key, &secStatus{Seen: "2"}, obj.ModRevision)
		Expect(err).NotTo(HaveOccurred())
		_, err = statuses.Mutate(ctx, key, func(s *secStatus) error { s.Seen = "3"; return nil })
		Expect(err).NotTo(HaveOccurred())
		got, err := statuses.Get(ctx, key)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value.Seen).To(Equal("3"))
		all, err := statuses.List(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(all).To(HaveLen(1))
		_, err = statuses.Update(ctx, key, &secStatus{Seen: "stale"}, obj.ModRevision)
		Expect(err).To(MatchError(store.ErrConflict))
		Expect(statuses.Delete(ctx, key, 0)).To(Succeed())
		Expect(rootValue(ctx, c, key)()).To(BeEmpty())
	}
}

func checkLock(key string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		l1, err := lock.New(cli, key, lock.Options{TTL: secTTL, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l1.Close)
		l2, err := lock.New(cli, key, lock.Options{TTL: secTTL, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l2.Close)

		Expect(l1.Lock(ctx)).To(Succeed())
		Expect(l1.Lost()).NotTo(BeClosed())
		Expect(l2.TryLock(ctx)).To(BeFalse())
		Expect(l1.Unlock(ctx)).To(Succeed())
		Expect(l2.TryLock(ctx)).To(BeTrue())
		Expect(l2.Unlock(ctx)).To(Succeed())
	}
}

func checkRWLock(key string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		rw := make([]*lock.RWLock, 3)
		for i := range rw {
			l, err := lock.NewRW(cli, key, lock.Options{TTL: secTTL, Logger: GinkgoLogr})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(l.Close)
			rw[i] = l
		}
		Expect(rw[0].RLock(ctx)).To(Succeed())
		Expect(rw[1].RLock(ctx)).To(Succeed())
		Expect(rw[2].TryLock(ctx)).To(BeFalse())
		Expect(rw[0].RUnlock(ctx)).To(Succeed())
		Expect(rw[1].RUnlock(ctx)).To(Succeed())
		Expect(rw[2].Lock(ctx)).To(Succeed())
		Expect(rw[0].TryRLock(ctx)).To(BeFalse())
		Expect(rw[2].Unlock(ctx)).To(Succeed())
	}
}

func checkLockManager(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		m, err := lock.NewManager(cli, prefix, lock.Options{TTL: secTTL, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(m.Close)
		a, err := m.Get("a")
		Expect(err).NotTo(HaveOccurred())
		b, err := m.Get("b")
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Lock(ctx)).To(Succeed())
		Expect(b.Lock(ctx)).To(Succeed())
		Expect(a.Unlock(ctx)).To(Succeed())
		Expect(b.Unlock(ctx)).To(Succeed())
	}
}

// secElection returns a candidate, closed when the spec ends.
func secElection(cli *clientv3.Client, prefix, id string, log logr.Logger) *election.Election {
	e, err := election.New(cli, prefix, election.Options{ID: id, TTL: secTTL, Logger: log})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(e.Close)
	return e
}

func checkCandidates(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		By("Campaign, GetLeader, Resign")
		e1 := secElection(cli, prefix, "n1", GinkgoLogr)
		Expect(e1.Campaign(ctx)).To(Succeed())
		Expect(e1.GetLeader(ctx)).To(Equal("n1"))
		Expect(e1.Resign(ctx)).To(Succeed())

		By("a LeaderTask")
		e2 := secElection(cli, prefix, "n2", GinkgoLogr)
		ran := make(chan struct{}, 1)
		task, err := election.NewLeaderTask(e2, func(context.Context) error {
			select {
			case ran <- struct{}{}:
			default:
			}
			return nil
		}, election.TaskOptions{Interval: 50 * time.Millisecond, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		stopTask := startBlocking(ctx, task.Start)
		Eventually(ran).Should(Receive())
		Expect(stopTask()).To(Succeed())
		Expect(e2.Err()).NotTo(HaveOccurred())

		By("an HACoordinator")
		e3 := secElection(cli, prefix, "n3", GinkgoLogr)
		ha, err := election.NewHACoordinator(e3, func(ctx context.Context) error { <-ctx.Done(); return nil }, nil, election.HAOptions{Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		stopHA := startBlocking(ctx, ha.Start)
		Eventually(ha.Role).Should(Equal(election.RolePrimary))
		Expect(stopHA()).To(Succeed())
	}
}

func checkObserver(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		leader := secElection(c.Client(), prefix, "n1", GinkgoLogr)
		Expect(leader.Campaign(ctx)).To(Succeed())
		obs := secElection(cli, prefix, "observer", GinkgoLogr)
		octx, cancel := context.WithCancel(ctx)
		defer cancel()
		Eventually(obs.Observe(octx)).Should(Receive(Equal("n1")))
		Expect(obs.GetLeader(ctx)).To(Equal("n1"))
	}
}

// startBlocking runs start (a LeaderTask's or an HACoordinator's Start, which blocks until
// its context ends) in a goroutine. The returned stop ends it and returns its result once
// it has returned; the spec's end stops it too.
func startBlocking(ctx context.Context, start func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- start(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	DeferCleanup(func() { _ = stop() })
	return stop
}

// secRegistry returns a registry, closed when the spec ends.
func secRegistry(cli *clientv3.Client, prefix string) *discovery.Registry {
	r, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: secTTL, Logger: GinkgoLogr})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(r.Close)
	return r
}

func instance(service, id string) discovery.ServiceInfo {
	return discovery.ServiceInfo{Name: service, ID: id, Address: "10.0.0.1", Port: 8080}
}

// checkRegisterWithHealth registers an instance with a health check, takes it out of
// discovery while the check fails and back once it passes, and deregisters it.
func checkRegisterWithHealth(prefix, service string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		reg := secRegistry(cli, prefix)
		var healthy atomic.Bool
		healthy.Store(true)
		check := func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("down")
		}
		Expect(reg.Register(ctx, instance(service, "i1"), discovery.WithHealthCheck(check, 50*time.Millisecond))).To(Succeed())
		key := prefix + "/" + service + "/i1"
		Expect(rootValue(ctx, c, key)()).NotTo(BeEmpty())
		healthy.Store(false)
		Eventually(rootValue(ctx, c, key)).Should(BeEmpty())
		healthy.Store(true)
		Eventually(rootValue(ctx, c, key)).ShouldNot(BeEmpty())
		Expect(reg.Deregister(ctx, service, "i1")).To(Succeed())
		Expect(rootValue(ctx, c, key)()).To(BeEmpty())
	}
}

func checkDiscover(prefix, service string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		owner := secRegistry(c.Client(), prefix)
		Expect(owner.Register(ctx, instance(service, "i1"))).To(Succeed())
		reg := secRegistry(cli, prefix)

		found, err := reg.Discover(ctx, service)
		Expect(err).NotTo(HaveOccurred())
		Expect(found).To(ConsistOf(HaveField("ID", "i1")))

		events := make(chan discovery.ServiceEvent, 16)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		Expect(reg.Watch(wctx, service, func(ev discovery.ServiceEvent) { events <- ev })).To(Succeed())
		Eventually(events).Should(Receive(And(HaveField("Type", discovery.ServiceAdded), HaveField("Service.ID", "i1"))))

		lb, err := discovery.NewLoadBalancer(reg, discovery.RoundRobin)
		Expect(err).NotTo(HaveOccurred())
		defer lb.Close()
		Expect(lb.GetService(ctx, service)).To(HaveField("ID", "i1"))

		Expect(owner.Register(ctx, instance(service, "i2"))).To(Succeed())
		Eventually(events).Should(Receive(And(HaveField("Type", discovery.ServiceAdded), HaveField("Service.ID", "i2"))))
		Expect(owner.Deregister(ctx, service, "i1")).To(Succeed())
		Eventually(events).Should(Receive(And(HaveField("Type", discovery.ServiceRemoved), HaveField("Service.ID", "i1"))))
		Eventually(func() (string, error) {
			info, err := lb.GetService(ctx, service)
			return info.ID, err
		}).Should(Equal("i2"))
	}
}

// secConfig returns a config manager, closed when the spec ends.
func secConfig(cli *clientv3.Client, prefix string) *config.Manager {
	m, err := config.NewManager(cli, prefix, config.Options{Logger: GinkgoLogr})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(m.Close)
	return m
}

func checkConfigReader(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		rootPut(ctx, c, prefix+"database/host", `"db1"`)
		rootPut(ctx, c, prefix+config.FlagPrefix+"new-ui", "100")
		m := secConfig(cli, prefix)
		Expect(m.WaitForSync(ctx)).To(Succeed())
		Expect(m.GetString(ctx, "database/host")).To(Equal("db1"))
		Expect(m.GetAll(ctx, "")).To(HaveLen(2))
		flags, err := config.NewFeatureFlags(m)
		Expect(err).NotTo(HaveOccurred())
		Expect(flags.IsEnabled(ctx, "new-ui")).To(BeTrue())
		rootPut(ctx, c, prefix+"database/host", `"db2"`)
		Eventually(func() (string, error) { return m.GetString(ctx, "database/host") }).Should(Equal("db2"))
	}
}

func checkConfigWriter(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		m := secConfig(cli, prefix)
		Expect(m.WaitForSync(ctx)).To(Succeed())
		Expect(m.Set(ctx, "database/host", "db1")).To(Succeed())
		Expect(m.GetString(ctx, "database/host")).To(Equal("db1"))
		flags, err := config.NewFeatureFlags(m)
		Expect(err).NotTo(HaveOccurred())
		Expect(flags.Enable(ctx, "new-ui")).To(Succeed())
		Expect(flags.IsEnabled(ctx, "new-ui")).To(BeTrue())
		Expect(flags.SetRollout(ctx, "new-ui", 50)).To(Succeed())
		Expect(flags.Disable(ctx, "new-ui")).To(Succeed())
		Expect(m.Delete(ctx, "database/host")).To(Succeed())
		_, err = m.GetString(ctx, "database/host")
		Expect(err).To(MatchError(config.ErrNotFound))
	}
}

func checkSnapshots(prefix string) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		m := secConfig(cli, prefix)
		Expect(m.WaitForSync(ctx)).To(Succeed())
		snaps, err := config.NewSnapshots(m)
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Set(ctx, "a", 1)).To(Succeed())
		Expect(snaps.CreateSnapshot(ctx, "s1")).To(HaveField("Keys", 1))
		Expect(m.Set(ctx, "a", 2)).To(Succeed())
		Expect(m.Set(ctx, "b", true)).To(Succeed())
		Expect(snaps.RestoreSnapshot(ctx, "s1")).To(Succeed())
		Expect(m.GetInt(ctx, "a")).To(Equal(1))
		_, err = m.GetBool(ctx, "b")
		Expect(err).To(MatchError(config.ErrNotFound))
		Expect(snaps.ListSnapshots(ctx)).To(ConsistOf(HaveField("ID", "s1")))
		Expect(snaps.DeleteSnapshot(ctx, "s1")).To(Succeed())
	}
}

// A controller process: a manager, a controller that watches watchPrefix and, for every
// key, writes a status under statusPrefix through its reconcile's fence.

// statusWriter is a reconciler that copies each watched key's value into a status. It
// sends the errors of its writes to errs (without blocking) and counts the reconciles
// that ran without a fence.
type statusWriter struct {
	cli                       *clientv3.Client
	statuses                  *store.Store[secStatus]
	watchPrefix, statusPrefix string
	errs                      chan error
	unfenced                  atomic.Int32
	sharded                   bool
}

func newStatusWriter(cli *clientv3.Client, watchPrefix, statusPrefix string, sharded bool) *statusWriter {
	statuses, err := store.New[secStatus](cli, statusPrefix, store.Options[secStatus]{})
	Expect(err).NotTo(HaveOccurred())
	return &statusWriter{cli: cli, statuses: statuses, watchPrefix: watchPrefix, statusPrefix: statusPrefix,
		errs: make(chan error, 100), sharded: sharded}
}

func (w *statusWriter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	_, fenced := fence.From(ctx)
	if _, inShard := manager.ShardFrom(ctx); !fenced || (w.sharded && !inShard) {
		w.unfenced.Add(1)
	}
	resp, err := w.cli.Get(ctx, req.Key)
	if err != nil {
		return w.fail(err)
	}
	if len(resp.Kvs) == 0 {
		return reconcile.Result{}, nil
	}
	value := string(resp.Kvs[0].Value)
	key := w.statusPrefix + strings.TrimPrefix(req.Key, w.watchPrefix)
	_, err = w.statuses.Create(ctx, key, &secStatus{Seen: value})
	if errors.Is(err, store.ErrExists) {
		_, err = w.statuses.Mutate(ctx, key, func(s *secStatus) error { s.Seen = value; return nil })
	}
	if err != nil {
		return w.fail(err)
	}
	return reconcile.Result{}, nil
}

func (w *statusWriter) fail(err error) (reconcile.Result, error) {
	select {
	case w.errs <- err:
	default:
	}
	return reconcile.Result{}, err
}

// controllerProcess builds a manager named name (sharded or leader-only) with the status
// controller, ready to start.
func controllerProcess(cli *clientv3.Client, name, watchPrefix, statusPrefix string, sharded bool) (*manager.Manager, *statusWriter) {
	opts := manager.Options{Name: name}
	if sharded {
		opts.Sharding = &manager.ShardingOptions{Shards: 4}
	}
	mgr := secManager(cli, opts)
	w := newStatusWriter(cli, watchPrefix, statusPrefix, sharded)
	Expect(manager.NewControllerManagedBy(mgr).Named(name).For(source.Prefix(watchPrefix)).Complete(w)).To(Succeed())
	return mgr, w
}

// checkControllerProcess runs the controller process and checks that it writes the status
// of every key, fenced.
func checkControllerProcess(name, watchPrefix, statusPrefix string, sharded bool) secCheck {
	return func(ctx context.Context, c *etcdtest.Cluster, cli *clientv3.Client) {
		mgr, w := controllerProcess(cli, name, watchPrefix, statusPrefix, sharded)
		stop := runManager(mgr)
		defer stop()
		for _, k := range []string{"a", "b", "c"} {
			rootPut(ctx, c, watchPrefix+k, "v-"+k)
		}
		for _, k := range []string{"a", "b", "c"} {
			Eventually(rootValue(ctx, c, statusPrefix+k), 30*time.Second).Should(Equal(`{"Seen":"v-` + k + `"}`))
		}
		Expect(w.unfenced.Load()).To(BeZero(), "every reconcile carries its leader's or shard's fence")
		Expect(w.errs).NotTo(Receive())
		Expect(mgr.Refusals()).To(BeEmpty())
	}
}

var _ = Describe("secured etcd: the README's roles", func() {
	It("are the rows of the README's table", func() {
		table, _ := readmeSecuredSection()
		Expect(table).To(Equal(goTable()))
	})

	It("are what the README's etcdctl script grants", func() {
		_, script := readmeSecuredSection()
		roles, grants := parseScript(script)
		want := map[string][]string{}
		for _, row := range secRoles {
			for _, ex := range row.examples {
				if ex.role == "" {
					continue
				}
				for _, p := range ex.perms {
					want[ex.role] = appendUnique(want[ex.role], formatPerm(p))
					slices.Sort(want[ex.role])
				}
			}
		}
		Expect(grants).To(Equal(want))
		Expect(roles).To(ConsistOf(keysOf(want)))
	})

	for _, row := range secRoles {
		for _, ex := range row.examples {
			It(fmt.Sprintf("%s works under exactly %s", row.component, describeGrants(ex)), func(ctx SpecContext) {
				c := securedCluster()
				cli := userClient(ctx, c, "u", ex.perms...)
				ex.check(ctx, c, cli)
			})
		}
	}

	It("a jobs-controller process (leader election) reconciles and writes every status through its fence under the script's role", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "jobs-controller", scriptRole("jobs-controller")...)
		checkControllerProcess("jobs", "/jobs/", "/jobs-status/", false)(ctx, c, cli)
	})

	It("an orders-controller process (sharded) reconciles and writes every status through its shard's fence under the script's role", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "orders-controller", scriptRole("orders-controller")...)
		checkControllerProcess("orders", "/orders/", "/order-status/", true)(ctx, c, cli)
	})
})

// scriptRole returns the grants of a role of the table.
func scriptRole(role string) []etcdtest.Perm {
	var out []etcdtest.Perm
	seen := map[string]bool{}
	for _, row := range secRoles {
		for _, ex := range row.examples {
			if ex.role != role {
				continue
			}
			for _, p := range ex.perms {
				if !seen[formatPerm(p)] {
					seen[formatPerm(p)] = true
					out = append(out, p)
				}
			}
		}
	}
	Expect(out).NotTo(BeEmpty(), "no role %q in the table", role)
	return out
}

var _ = Describe("secured etcd: a manager", func() {
	It("with leader election reports an election prefix it may not write in Refusals and /readyz, naming it", func(ctx SpecContext) {
		c := securedCluster()
		// A common mistake: read on the manager's keyspace, as for a controller's prefix.
		cli := userClient(ctx, c, "jobs", etcdtest.Read("/etcdkit/jobs/"))
		mgr := secManager(cli, manager.Options{Name: "jobs"})
		stop := runManager(mgr)
		defer stop()
		Eventually(mgr.Refusals).Should(ConsistOf(denied("/etcdkit/jobs/election/")))
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		code, body := readyz(mgr)
		Expect(code).To(Equal(http.StatusServiceUnavailable))
		Expect(body).To(And(ContainSubstring("permission denied"), ContainSubstring("/etcdkit/jobs/election/")))
		_, metrics := probe("http://" + mgr.MetricsAddr() + "/metrics")
		Expect(metrics).To(ContainSubstring(`etcdkit_permanent_error{component="election"} 1`))
		Expect(mgr.IsLeader()).To(BeFalse())
	})

	It("with Sharding is refused by New, naming the shards key, under the leader-only role", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "orders", etcdtest.ReadWrite("/etcdkit/orders/election/"))
		_, err := manager.New(manager.Options{Client: cli, Name: "orders", Sharding: &manager.ShardingOptions{Shards: 4}})
		Expect(err).To(denied("/etcdkit/orders/shards"))
	})

	It("with Sharding fails Start, naming its root, when its keys are granted one by one but the root may not be read", func(ctx SpecContext) {
		c := securedCluster()
		root := "/etcdkit/orders/"
		cli := userClient(ctx, c, "orders",
			etcdtest.ReadWrite(root+"election/"), etcdtest.ReadWrite(root+"members/"),
			etcdtest.ReadWrite(root+"assignments/"), etcdtest.ReadWrite(root+"owners/"),
			etcdtest.Perm{Key: root + "shards", Read: true, Write: true})
		mgr := secManager(cli, manager.Options{Name: "orders", Sharding: &manager.ShardingOptions{Shards: 4}})
		sctx, cancel := within(ctx)
		defer cancel()
		Expect(mgr.Start(sctx)).To(denied(root))
		Expect(sctx.Err()).NotTo(HaveOccurred(), "Start waited for its deadline instead of returning the refusal")
	})
})

var _ = Describe("secured etcd: a controller", func() {
	It("fails Start, naming the prefix, when the user may not read what it watches", func(ctx SpecContext) {
		c := securedCluster()
		// The jobs-controller role without its read on /jobs/.
		cli := userClient(ctx, c, "jobs", etcdtest.ReadWrite("/etcdkit/jobs/election/"), etcdtest.ReadWrite("/jobs-status/"))
		mgr, _ := controllerProcess(cli, "jobs", "/jobs/", "/jobs-status/", false)
		sctx, cancel := within(ctx)
		defer cancel()
		Expect(mgr.Start(sctx)).To(denied("/jobs/"))
		Expect(sctx.Err()).NotTo(HaveOccurred(), "Start waited for its deadline instead of returning the refusal")
	})

	It("has its store writes refused, naming the key, when it may write its status prefix but not read it", func(ctx SpecContext) {
		c := securedCluster()
		// A common mistake: write alone on the prefix a controller writes. Every store
		// write compares the key (and a put reads its previous value): it needs read too.
		cli := userClient(ctx, c, "jobs", etcdtest.ReadWrite("/etcdkit/jobs/election/"), etcdtest.Read("/jobs/"), etcdtest.Write("/jobs-status/"))
		mgr, w := controllerProcess(cli, "jobs", "/jobs/", "/jobs-status/", false)
		stop := runManager(mgr)
		defer stop()
		rootPut(ctx, c, "/jobs/a", "1")
		Eventually(w.errs).Should(Receive(denied("/jobs-status/a")))
		Expect(rootValue(ctx, c, "/jobs-status/a")()).To(BeEmpty())
	})
})

var _ = Describe("secured etcd: locks", func() {
	// A common mistake: write alone on a lock's prefix ("the lock writes its entries"). Every
	// queueing is a transaction that compares the entry and reads the queue: it needs read
	// too.
	It("Lock and TryLock return the refusal, naming the queue entry, when the user may write the lock's prefix but not read it", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "worker", etcdtest.Write("/locks/report/"))
		l, err := lock.New(cli, "/locks/report", lock.Options{TTL: secTTL, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(l.Close)
		lctx, cancel := within(ctx)
		defer cancel()
		Expect(l.Lock(lctx)).To(denied("/locks/report/"))
		_, err = l.TryLock(lctx)
		Expect(err).To(denied("/locks/report/"))
		Expect(lctx.Err()).NotTo(HaveOccurred())
		Expect(l.Token()).To(BeZero())
	})

	It("RLock and Lock of a read-write lock return the refusal, naming the queue entry, when the user may write its prefix but not read it", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "worker", etcdtest.Write("/locks/catalog/"))
		rw, err := lock.NewRW(cli, "/locks/catalog", lock.Options{TTL: secTTL, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(rw.Close)
		lctx, cancel := within(ctx)
		defer cancel()
		Expect(rw.RLock(lctx)).To(denied("/locks/catalog/r-"))
		Expect(rw.Lock(lctx)).To(denied("/locks/catalog/"))
		Expect(lctx.Err()).NotTo(HaveOccurred())
	})

	It("a lock manager's lock returns the refusal, naming its queue entry, when the user may write the manager's prefix but not read it", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "worker", etcdtest.Write("/locks/tenants/"))
		m, err := lock.NewManager(cli, "/locks/tenants", lock.Options{TTL: secTTL, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(m.Close)
		b, err := m.Get("b")
		Expect(err).NotTo(HaveOccurred())
		lctx, cancel := within(ctx)
		defer cancel()
		Expect(b.Lock(lctx)).To(denied("/locks/tenants/b/"))
		Expect(lctx.Err()).NotTo(HaveOccurred())
	})
})

var _ = Describe("secured etcd: an election", func() {
	const prefix = "/elections/billing/"

	It("Campaign returns the refusal, naming the candidate's key, when the user may only read the prefix", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "billing", etcdtest.Read(prefix))
		e := secElection(cli, prefix, "n1", GinkgoLogr)
		cctx, cancel := within(ctx)
		defer cancel()
		Expect(e.Campaign(cctx)).To(denied(prefix))
		Expect(cctx.Err()).NotTo(HaveOccurred())
		Expect(e.IsLeader()).To(BeFalse())
	})

	It("a LeaderTask reports the refused campaign by Err, naming the key, and never runs", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "billing", etcdtest.Read(prefix))
		e := secElection(cli, prefix, "n1", GinkgoLogr)
		var ran atomic.Bool
		task, err := election.NewLeaderTask(e, func(context.Context) error { ran.Store(true); return nil },
			election.TaskOptions{Interval: 50 * time.Millisecond, Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		stopTask := startBlocking(ctx, task.Start)
		defer func() { Expect(stopTask()).To(Succeed()) }()
		Eventually(e.Err).Should(denied(prefix))
		Expect(ran.Load()).To(BeFalse())
	})

	It("an HACoordinator reports the refused campaign by Err, naming the key, and stays secondary", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "billing", etcdtest.Read(prefix))
		e := secElection(cli, prefix, "n1", GinkgoLogr)
		ha, err := election.NewHACoordinator(e, func(ctx context.Context) error { <-ctx.Done(); return nil }, nil, election.HAOptions{Logger: GinkgoLogr})
		Expect(err).NotTo(HaveOccurred())
		stopHA := startBlocking(ctx, ha.Start)
		defer func() { Expect(stopHA()).To(Succeed()) }()
		Eventually(e.Err).Should(denied(prefix))
		Expect(ha.Role()).To(Equal(election.RoleSecondary))
	})

	It("Observe closes its channel and logs the refusal, naming the prefix, when the user may not read the candidates", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "dashboard", etcdtest.Read("/elections/other/"))
		logs := &logSink{}
		e := secElection(cli, prefix, "observer", logs.logger())
		octx, cancel := within(ctx)
		defer cancel()
		Eventually(e.Observe(octx)).Should(BeClosed())
		Expect(octx.Err()).NotTo(HaveOccurred())
		Expect(logs.text()).To(And(ContainSubstring("permission denied"), ContainSubstring(prefix)))
		_, err := e.GetLeader(octx)
		Expect(err).To(denied(""))
	})
})

var _ = Describe("secured etcd: discovery", func() {
	It("Register needs only write on the service's prefix without a health check", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "api", etcdtest.Write("/services/api/"))
		reg := secRegistry(cli, "/services")
		Expect(reg.Register(ctx, instance("api", "i1"))).To(Succeed())
		Expect(rootValue(ctx, c, "/services/api/i1")()).NotTo(BeEmpty())
		Expect(reg.Deregister(ctx, "api", "i1")).To(Succeed())
		Expect(rootValue(ctx, c, "/services/api/i1")()).To(BeEmpty())
		Expect(reg.Register(ctx, instance("api", "i2"))).To(Succeed())
		Expect(reg.Close()).To(Succeed())
		Expect(rootValue(ctx, c, "/services/api/i2")()).To(BeEmpty())
	})

	It("Register returns the refusal, naming the instance's key, when the user may only read the service's prefix", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "api", etcdtest.Read("/services/api/"))
		reg := secRegistry(cli, "/services")
		rctx, cancel := within(ctx)
		defer cancel()
		Expect(reg.Register(rctx, instance("api", "i1"))).To(denied("/services/api/i1"))
		Expect(rctx.Err()).NotTo(HaveOccurred())
	})

	It("Discover, Watch and the load balancer return the refusal, naming the service's prefix, when the user may not read it", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "client", etcdtest.Read("/services/web/"))
		reg := secRegistry(cli, "/services")
		dctx, cancel := within(ctx)
		defer cancel()
		_, err := reg.Discover(dctx, "api")
		Expect(err).To(denied("/services/api/"))
		Expect(reg.Watch(dctx, "api", func(discovery.ServiceEvent) {})).To(denied("/services/api/"))
		lb, err := discovery.NewLoadBalancer(reg, discovery.RoundRobin)
		Expect(err).NotTo(HaveOccurred())
		defer lb.Close()
		_, err = lb.GetService(dctx, "api")
		Expect(err).To(denied("/services/api/"))
		Expect(dctx.Err()).NotTo(HaveOccurred())
	})
})

var _ = Describe("secured etcd: configuration", func() {
	It("WaitForSync returns the refusal, naming the prefix, when the user may not read the configuration", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "app", etcdtest.Read("/config/other/"))
		m := secConfig(cli, "/config/app/")
		wctx, cancel := within(ctx)
		defer cancel()
		Expect(m.WaitForSync(wctx)).To(denied("/config/app/"))
		Expect(wctx.Err()).NotTo(HaveOccurred())
	})

	It("Set and Enable return the refusal, naming the key, when the user may only read the configuration", func(ctx SpecContext) {
		c := securedCluster()
		cli := userClient(ctx, c, "app", etcdtest.Read("/config/app/"))
		m := secConfig(cli, "/config/app/")
		wctx, cancel := within(ctx)
		defer cancel()
		Expect(m.WaitForSync(wctx)).To(Succeed())
		Expect(m.Set(wctx, "database/host", "db1")).To(denied(`"database/host"`))
		flags, err := config.NewFeatureFlags(m)
		Expect(err).NotTo(HaveOccurred())
		Expect(flags.Enable(wctx, "new-ui")).To(denied(`"flags/new-ui"`))
		Expect(wctx.Err()).NotTo(HaveOccurred())
	})
})

// The README: its section "Running against a secured etcd", the table and the script.

const readmePath = "../../README.md"

// readmeSecuredSection returns the section's table, parsed as goTable renders the Go
// table, and its bash script.
func readmeSecuredSection() (table [][]string, script string) {
	raw, err := os.ReadFile(readmePath)
	Expect(err).NotTo(HaveOccurred())
	lines := strings.Split(string(raw), "\n")
	start := -1
	for i, l := range lines {
		if l == "## Running against a secured etcd" {
			start = i + 1
			break
		}
	}
	Expect(start).To(BeNumerically(">", 0), "README.md has no section \"Running against a secured etcd\"")
	var section []string
	for _, l := range lines[start:] {
		if strings.HasPrefix(l, "## ") {
			break
		}
		section = append(section, l)
	}
	var rows []string
	for i, l := range section {
		if strings.HasPrefix(l, "|") {
			rows = append(rows, l)
			continue
		}
		if len(rows) > 0 {
			section = section[i:]
			break
		}
	}
	Expect(len(rows)).To(BeNumerically(">", 2), "the section has no table")
	for _, r := range rows[2:] { // the header and its rule
		cells := strings.Split(strings.Trim(r, "|"), "|")
		Expect(len(cells)).To(BeNumerically(">=", 2), "table row %q", r)
		row := []string{strings.TrimSpace(cells[0])}
		for _, ex := range strings.Split(strings.TrimSpace(cells[len(cells)-1]), "<br>") {
			row = append(row, normalizeExample(ex))
		}
		table = append(table, row)
	}
	var in bool
	var body []string
	for _, l := range section {
		switch {
		case !in && strings.TrimSpace(l) == "```bash":
			in = true
		case in && strings.TrimSpace(l) == "```":
			return table, strings.Join(body, "\n")
		case in:
			body = append(body, l)
		}
	}
	Fail("the section has no bash script")
	return nil, ""
}

// normalizeExample turns an example cell's entry ("`role` readwrite `/a/`, read `/b/`")
// into "role: readwrite /a/, read /b/" ("-" for none).
func normalizeExample(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "`", ""))
	if s == "—" || s == "-" || s == "" {
		return "-"
	}
	role, rest, _ := strings.Cut(s, " ")
	var grants []string
	for _, g := range strings.Split(rest, ",") {
		grants = append(grants, strings.Join(strings.Fields(g), " "))
	}
	return role + ": " + strings.Join(grants, ", ")
}

// goTable renders secRoles as readmeSecuredSection parses the README's table.
func goTable() [][]string {
	var out [][]string
	for _, row := range secRoles {
		r := []string{row.component}
		for _, ex := range row.examples {
			if ex.role == "" {
				r = append(r, "-")
				continue
			}
			r = append(r, ex.role+": "+describeGrants(ex))
		}
		out = append(out, r)
	}
	return out
}

func describeGrants(ex secExample) string {
	if len(ex.perms) == 0 {
		return "no grant"
	}
	var gs []string
	for _, p := range ex.perms {
		gs = append(gs, formatPerm(p))
	}
	return strings.Join(gs, ", ")
}

// formatPerm writes a permission as the README does: "readwrite /prefix/". Every
// permission of the table is on a prefix.
func formatPerm(p etcdtest.Perm) string {
	ExpectWithOffset(1, p.Prefix).NotTo(BeEmpty(), "the README's grants are all prefix grants")
	typ := "read"
	switch {
	case p.Read && p.Write:
		typ = "readwrite"
	case p.Write:
		typ = "write"
	}
	return typ + " " + p.Prefix
}

// parseScript returns the roles the script adds and, by role, the prefix permissions it
// grants, as formatPerm writes them.
func parseScript(script string) (roles []string, grants map[string][]string) {
	grants = map[string][]string{}
	joined := strings.ReplaceAll(script, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "role" {
				continue
			}
			switch f[i+1] {
			case "add":
				Expect(len(f)).To(BeNumerically(">", i+2), "line %q", line)
				if r := unquote(f[i+2]); r != "root" {
					roles = append(roles, r)
				}
			case "grant-permission":
				prefix := false
				var args []string
				for _, a := range f[i+2:] {
					switch {
					case a == "--prefix" || a == "--prefix=true":
						prefix = true
					case strings.HasPrefix(a, "--"):
						Fail(fmt.Sprintf("the script's line %q has a flag this spec does not know", line))
					default:
						args = append(args, unquote(a))
					}
				}
				Expect(args).To(HaveLen(3), "line %q: role, permission, key", line)
				Expect(prefix).To(BeTrue(), "line %q: the README's grants are all prefix grants", line)
				grants[args[0]] = appendUnique(grants[args[0]], args[1]+" "+args[2])
				slices.Sort(grants[args[0]])
			}
			break
		}
	}
	return roles, grants
}

func unquote(s string) string { return strings.Trim(s, `"'`) }

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func keysOf(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
