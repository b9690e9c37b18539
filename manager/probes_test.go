package manager_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// switchable is a check whose outcome a spec sets.
type switchable struct {
	mu     sync.Mutex
	err    error
	panics bool
}

func (s *switchable) set(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *switchable) setPanics(p bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.panics = p
}

func (s *switchable) check(*http.Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.panics {
		panic("out of bounds")
	}
	return s.err
}

// codeOf and bodyOf poll a URL, for Eventually and Consistently.
func codeOf(url string) func() int {
	return func() int { code, _ := get(url); return code }
}

func bodyOf(url string) func() string {
	return func() string { _, body := get(url); return body }
}

var _ = Describe("a manager's probes", func() {
	var c *etcdtest.Cluster
	BeforeEach(func() { c = etcdtest.New(GinkgoT()) })

	newManager := func(id string, extra func(*manager.Options)) *manager.Manager {
		cli, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		opts := manager.Options{
			Client: cli, Name: "jobs", ID: id, LeaseTTL: 2 * time.Second, GracefulShutdownTimeout: 5 * time.Second,
			HealthProbeAddr: "127.0.0.1:0",
		}
		if extra != nil {
			extra(&opts)
		}
		mgr, err := manager.New(opts)
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}

	It("keep /healthz at 200 while etcd is cut off, and fail /readyz naming etcd until it answers again", func() {
		px, err := etcdtest.NewProxy(c.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		defer px.Close()
		mgr, err := manager.New(manager.Options{
			Endpoints: []string{px.Endpoint()}, Name: "health", ID: "a", LeaseTTL: 2 * time.Second,
			HealthProbeAddr: "127.0.0.1:0", GracefulShutdownTimeout: 5 * time.Second,
		})
		Expect(err).NotTo(HaveOccurred())
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		healthz, readyz := "http://"+mgr.HealthProbeAddr()+"/healthz", "http://"+mgr.HealthProbeAddr()+"/readyz"
		Eventually(codeOf(readyz)).Should(Equal(200))
		Eventually(mgr.IsLeader).Should(BeTrue())
		code, body := get(healthz + "?verbose")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("[+]ping ok\nhealthz check passed\n"), "with no check added, /healthz pings")

		px.Block()
		Eventually(bodyOf(readyz)).Should(And(
			ContainSubstring("[-]etcd failed: "),
			ContainSubstring(strings.TrimPrefix(px.Endpoint(), "http://")),
			HaveSuffix("readyz check failed\n"),
		))
		Expect(codeOf(readyz)()).To(Equal(503))
		// Past the lease's TTL by the replica's own clock, its session is no longer alive.
		Eventually(bodyOf(readyz)).Should(ContainSubstring("[-]session failed: the replica's session (lease) is not alive"))
		Expect(codeOf(readyz + "/etcd")()).To(Equal(503))
		Expect(codeOf(readyz + "/caches")()).To(Equal(200))
		code, body = get(healthz)
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("ok"))
		Consistently(codeOf(healthz), 500*time.Millisecond).Should(Equal(200))

		px.Unblock()
		Eventually(codeOf(readyz), 20*time.Second).Should(Equal(200))
		Expect(bodyOf(readyz)()).To(Equal("ok"))
	})

	It("serve added checks: a failing one fails its endpoint only, named with its error", func() {
		disk, warm := &switchable{}, &switchable{}
		mgr := newManager("a", nil)
		Expect(mgr.AddHealthzCheck("disk", disk.check)).To(Succeed())
		Expect(mgr.AddReadyzCheck("warm", warm.check)).To(Succeed())
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		healthz, readyz := "http://"+mgr.HealthProbeAddr()+"/healthz", "http://"+mgr.HealthProbeAddr()+"/readyz"
		Eventually(codeOf(readyz)).Should(Equal(200))
		Expect(bodyOf(readyz)()).To(Equal("ok"))
		Expect(bodyOf(healthz)()).To(Equal("ok"))
		// ?verbose lists every check: the built-in ones first, and no ping once a liveness
		// check was added.
		Expect(bodyOf(readyz + "?verbose")()).To(Equal(
			"[+]etcd ok\n[+]session ok\n[+]caches ok\n[+]refusals ok\n[+]warm ok\nreadyz check passed\n"))
		Expect(bodyOf(healthz + "?verbose")()).To(Equal("[+]disk ok\nhealthz check passed\n"))

		disk.set(errors.New("disk full"))
		code, body := get(healthz)
		Expect(code).To(Equal(500))
		Expect(body).To(Equal("[-]disk failed: disk full\nhealthz check failed\n"))
		code, body = get(healthz + "/disk")
		Expect(code).To(Equal(500))
		Expect(body).To(Equal("[-]disk failed: disk full\n"))
		Expect(codeOf(readyz)()).To(Equal(200), "a liveness check is not a readiness check")
		disk.setPanics(true)
		Expect(bodyOf(healthz)()).To(ContainSubstring("[-]disk failed: panic: out of bounds"))
		disk.setPanics(false)
		disk.set(nil)
		Expect(codeOf(healthz)()).To(Equal(200))

		warm.set(errors.New("cache cold"))
		code, body = get(readyz)
		Expect(code).To(Equal(503))
		Expect(body).To(Equal("[+]etcd ok\n[+]session ok\n[+]caches ok\n[+]refusals ok\n[-]warm failed: cache cold\nreadyz check failed\n"))
		Expect(codeOf(readyz + "/warm")()).To(Equal(503))
		code, body = get(readyz + "/etcd")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("ok"))
		code, body = get(readyz + "?exclude=warm")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("ok"))
		Expect(codeOf(healthz)()).To(Equal(200))
		code, body = get(readyz + "/nope")
		Expect(code).To(Equal(404))
		Expect(body).To(ContainSubstring(`no readyz check named "nope"`))
		warm.set(nil)
		Expect(codeOf(readyz)()).To(Equal(200))
	})

	It("refuse a bad check with an error that names it", func() {
		mgr := newManager("a", func(o *manager.Options) { o.DisableLeaderElection = true })
		ok := func(*http.Request) error { return nil }
		Expect(mgr.AddHealthzCheck("", ok)).To(MatchError("manager: a healthz check needs a name"))
		Expect(mgr.AddReadyzCheck("a/b", ok)).To(MatchError(`manager: a readyz check's name must not hold '/', got "a/b"`))
		Expect(mgr.AddReadyzCheck("warm", nil)).To(MatchError(`manager: readyz check "warm" must not be nil`))
		Expect(mgr.AddHealthzCheck("ping", manager.Ping)).To(Succeed())
		Expect(mgr.AddHealthzCheck("ping", ok)).To(MatchError(`manager: a healthz check named "ping" exists already`))
		Expect(mgr.AddReadyzCheck("ping", manager.Ping)).To(Succeed(), "liveness and readiness checks have names of their own")
		Expect(mgr.AddReadyzCheck(manager.CheckEtcd, ok)).To(MatchError(`manager: a readyz check named "etcd" exists already (built in)`))
		Expect(mgr.AddReadyzCheck(manager.CheckSession, ok)).To(MatchError(ContainSubstring("built in")))
		rep := startReplica(mgr)
		defer rep.shutdown()
		Eventually(mgr.HealthProbeAddr).ShouldNot(BeEmpty())
		Expect(mgr.AddReadyzCheck("late", ok)).To(MatchError(`manager: readyz check "late" added after Start`))
		Expect(mgr.AddHealthzCheck("late", ok)).To(MatchError(`manager: healthz check "late" added after Start`))
		Eventually(bodyOf("http://"+mgr.HealthProbeAddr()+"/readyz?verbose")).Should(Equal(
			"[+]etcd ok\n[+]caches ok\n[+]refusals ok\n[+]ping ok\nreadyz check passed\n"), "no session check without leader election")
	})

	It("close Elected when the replica is first elected, not before, and at once without leader election", func(ctx SpecContext) {
		solo := newManager("solo", func(o *manager.Options) { o.DisableLeaderElection = true })
		Expect(solo.Elected()).To(BeClosed())

		a, b := newManager("a", nil), newManager("b", nil)
		Expect(a.Elected()).NotTo(BeClosed())
		ra := startReplica(a)
		Eventually(a.Elected()).Should(BeClosed())
		Expect(a.IsLeader()).To(BeTrue())

		rb := startReplica(b)
		defer rb.shutdown()
		// b campaigns behind a.
		Eventually(func() (int, error) {
			resp, err := c.Client().Get(ctx, a.RootPrefix()+"election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return 0, err
			}
			return int(resp.Count), nil
		}).Should(Equal(2))
		Consistently(b.Elected(), 300*time.Millisecond).ShouldNot(BeClosed())

		ra.shutdown() // resigns: b leads
		Eventually(b.Elected()).Should(BeClosed())
		Expect(b.IsLeader()).To(BeTrue())
		Expect(a.Elected()).To(BeClosed(), "it stays closed once the leadership ends")
		Expect(a.IsLeader()).To(BeFalse())
	})
})
