package discovery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/discovery"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// eventLog records watch events as "<type> <id>:<port>".
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(ev discovery.ServiceEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf("%s %s:%d", ev.Type, ev.Service.ID, ev.Service.Port))
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

// since returns the events after the first n.
func (l *eventLog) since(n int) []string { return l.all()[n:] }

// putInstance writes an instance's description straight to etcd, on no lease.
func putInstance(ctx context.Context, prefix string, s discovery.ServiceInfo) {
	v, err := json.Marshal(s)
	Expect(err).NotTo(HaveOccurred())
	_, err = cluster.Client().Put(ctx, prefix+"/"+s.Name+"/"+s.ID, string(v))
	Expect(err).NotTo(HaveOccurred())
}

// deleteInstance deletes an instance's key straight from etcd.
func deleteInstance(ctx context.Context, prefix, name, id string) {
	_, err := cluster.Client().Delete(ctx, prefix+"/"+name+"/"+id)
	Expect(err).NotTo(HaveOccurred())
}

// proxiedRegistry returns a registry whose client reaches etcd through a proxy that the
// spec can cut; all are closed when the spec ends.
func proxiedRegistry(prefix string, log logr.Logger) (*etcdtest.Proxy, *discovery.Registry) {
	px, err := etcdtest.NewProxy(cluster.Endpoint(0))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(px.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{px.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	reg, err := discovery.NewRegistry(cli, prefix, discovery.Options{TTL: 5 * time.Second, Logger: log})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(reg.Close)
	return px, reg
}

var _ = Describe("Registry.Watch", func() {
	var prefix string
	BeforeEach(func() { prefix = uniquePrefix() })

	It("reports the instances present before it returns, then every change in order", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cluster.Client(), prefix, discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		Expect(reg.Register(ctx, instance("api", "b", 2))).To(Succeed())
		Expect(reg.Register(ctx, instance("api", "a", 1))).To(Succeed())
		Expect(reg.Register(ctx, instance("other", "x", 9))).To(Succeed())

		events := &eventLog{}
		Expect(reg.Watch(ctx, "api", events.add)).To(Succeed())
		Expect(events.all()).To(Equal([]string{"added a:1", "added b:2"}))

		Expect(reg.Register(ctx, instance("api", "c", 3))).To(Succeed())
		Expect(reg.Register(ctx, instance("api", "b", 20))).To(Succeed())
		Expect(reg.Deregister(ctx, "api", "a")).To(Succeed())
		Expect(reg.Register(ctx, instance("other", "y", 9))).To(Succeed())
		Eventually(events.since).WithArguments(2).Should(Equal([]string{"added c:3", "updated b:20", "removed a:1"}))
		Consistently(events.since).WithArguments(2).WithTimeout(300 * time.Millisecond).Should(HaveLen(3))
	})

	It("stops when its context ends", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cluster.Client(), prefix, discovery.Options{TTL: 5 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		wctx, cancel := context.WithCancel(ctx)
		events := &eventLog{}
		Expect(reg.Watch(wctx, "api", events.add)).To(Succeed())
		cancel()
		// The watch stops soon after: from some point on, a new instance is never reported.
		probes := 0
		Eventually(func(g Gomega) {
			probes++
			id := fmt.Sprintf("probe-%d", probes)
			g.Expect(reg.Register(ctx, instance("api", id, 1))).To(Succeed())
			g.Consistently(events.all).WithTimeout(200 * time.Millisecond).ShouldNot(ContainElement(ContainSubstring(id)))
		}).Should(Succeed())
	})

	It("reports the right differences after missing changes across a compaction", func(ctx SpecContext) {
		writer := cluster.Client()
		put := func(s discovery.ServiceInfo) {
			v, err := json.Marshal(s)
			Expect(err).NotTo(HaveOccurred())
			_, err = writer.Put(ctx, prefix+"/api/"+s.ID, string(v))
			Expect(err).NotTo(HaveOccurred())
		}
		put(instance("api", "a", 1))
		put(instance("api", "b", 2))
		put(instance("api", "c", 3))

		// The watching process reaches etcd through a proxy that can cut it off.
		px, err := etcdtest.NewProxy(cluster.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		defer px.Close()
		watchCli, err := clientv3.New(clientv3.Config{Endpoints: []string{px.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		Expect(err).NotTo(HaveOccurred())
		defer watchCli.Close()
		logs, log := newCapturedLog()
		reg, err := discovery.NewRegistry(watchCli, prefix, discovery.Options{TTL: 5 * time.Second, Logger: log})
		Expect(err).NotTo(HaveOccurred())
		defer reg.Close()
		events := &eventLog{}
		Expect(reg.Watch(ctx, "api", events.add)).To(Succeed())
		Expect(events.all()).To(Equal([]string{"added a:1", "added b:2", "added c:3"}))

		By("changing the service while the watcher is cut off, then compacting the history")
		px.Block()
		put(instance("api", "d", 4))
		_, err = writer.Delete(ctx, prefix+"/api/a")
		Expect(err).NotTo(HaveOccurred())
		put(instance("api", "b", 22))
		put(instance("api", "c", 3)) // rewritten unchanged: not an update
		_, err = cluster.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		px.Unblock()

		Eventually(events.since).WithArguments(3).WithTimeout(15 * time.Second).Should(
			ConsistOf("added d:4", "removed a:1", "updated b:22"))
		Expect(logs.Contains("watch broken", "compacted")).To(BeTrue(), "the differences come from a relist")
		Consistently(events.since).WithArguments(3).WithTimeout(300 * time.Millisecond).Should(HaveLen(3))

		By("the watch goes on from the list's revision")
		put(instance("api", "e", 5))
		Eventually(events.since).WithArguments(6).Should(Equal([]string{"added e:5"}))
	})

	It("resumes a broken watch after the last change it saw, reporting every change in order", func(ctx SpecContext) {
		putInstance(ctx, prefix, instance("api", "a", 1))
		putInstance(ctx, prefix, instance("api", "b", 2))
		logs, log := newCapturedLog()
		px, reg := proxiedRegistry(prefix, log)
		events := &eventLog{}
		Expect(reg.Watch(ctx, "api", events.add)).To(Succeed())
		Expect(events.all()).To(Equal([]string{"added a:1", "added b:2"}))

		By("changing the service while the watcher is cut off, without compacting")
		px.Block()
		putInstance(ctx, prefix, instance("api", "c", 3))
		putInstance(ctx, prefix, instance("api", "b", 22))
		deleteInstance(ctx, prefix, "api", "a")
		putInstance(ctx, prefix, instance("api", "x", 7)) // here and gone again while cut off: still reported
		deleteInstance(ctx, prefix, "api", "x")
		px.Unblock()

		Eventually(events.since).WithArguments(2).WithTimeout(15 * time.Second).Should(
			Equal([]string{"added c:3", "updated b:22", "removed a:1", "added x:7", "removed x:7"}))
		Consistently(events.since).WithArguments(2).WithTimeout(300 * time.Millisecond).Should(HaveLen(5))
		Expect(logs.Contains("compacted")).To(BeFalse(), "the watch resumed without listing again")
	})

	It("fails and reports nothing when the service cannot be listed before its context ends", func(ctx SpecContext) {
		putInstance(ctx, prefix, instance("api", "a", 1))
		px, reg := proxiedRegistry(prefix, logr.Discard())
		px.Block()
		events := &eventLog{}
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		err := reg.Watch(wctx, "api", events.add)
		Expect(err).To(MatchError(context.DeadlineExceeded))
		Expect(err.Error()).To(ContainSubstring("watching api"))

		By("etcd is reachable again: a new watch works, the failed one stays silent")
		px.Unblock()
		putInstance(ctx, prefix, instance("api", "b", 2))
		again := &eventLog{}
		Expect(reg.Watch(ctx, "api", again.add)).To(Succeed())
		Expect(again.all()).To(Equal([]string{"added a:1", "added b:2"}))
		Consistently(events.all).WithTimeout(time.Second).Should(BeEmpty())
	})

	It("ends when the registry's client is closed", func(ctx SpecContext) {
		own, err := cluster.NewClient()
		Expect(err).NotTo(HaveOccurred())
		logs, log := newCapturedLog()
		reg, err := discovery.NewRegistry(own, prefix, discovery.Options{TTL: 5 * time.Second, Logger: log})
		Expect(err).NotTo(HaveOccurred())
		Expect(reg.Watch(ctx, "api", func(discovery.ServiceEvent) {})).To(Succeed())
		Expect(own.Close()).To(Succeed())
		Eventually(func() bool { return logs.Contains("etcd client closed; the watch ends") }).Should(BeTrue())
		Expect(reg.Close()).To(Succeed())
		Expect(reg.Watch(ctx, "api", func(discovery.ServiceEvent) {})).To(MatchError(discovery.ErrClosed))
	})
})
