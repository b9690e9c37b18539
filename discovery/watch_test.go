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

var _ = Describe("Registry.Watch", func() {
	var prefix string
	BeforeEach(func() { prefix = uniquePrefix() })

	It("reports the instances present before it returns, then every change in order", func(ctx SpecContext) {
		reg, err := discovery.NewRegistry(cluster.Client(), prefix, 5, logr.Discard())
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
		reg, err := discovery.NewRegistry(cluster.Client(), prefix, 5, logr.Discard())
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
		reg, err := discovery.NewRegistry(watchCli, prefix, 5, log)
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
})
