package config_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/config"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// newManager returns a synced Manager that the spec closes at its end.
func newManager(ctx context.Context, cli *clientv3.Client, prefix string) *config.Manager {
	m, err := config.NewManager(cli, prefix, config.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(m.Close)
	Expect(m.WaitForSync(ctx)).To(Succeed())
	return m
}

// changeLog records Watch callbacks as "key: old -> new".
type changeLog struct {
	mu      sync.Mutex
	changes []string
}

func (l *changeLog) add(key string, old, new any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, fmt.Sprintf("%s: %v -> %v", key, old, new))
}

func (l *changeLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.changes...)
}

var _ = Describe("Manager", func() {
	var prefix string
	BeforeEach(func() { prefix = uniquePrefix() })

	It("stores values as JSON and reads them back typed", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), prefix)
		Expect(m.Prefix()).To(Equal(prefix))
		Expect(m.Set(ctx, "database/host", "localhost")).To(Succeed())
		Expect(m.Set(ctx, "database/port", 5432)).To(Succeed())
		Expect(m.Set(ctx, "api/timeout", 30)).To(Succeed())
		Expect(m.Set(ctx, "feature/enabled", true)).To(Succeed())
		Expect(m.Set(ctx, "limits", map[string]any{"rps": 2.5, "burst": 10})).To(Succeed())

		resp, err := cluster.Client().Get(ctx, prefix+"database/host")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Kvs[0].Value)).To(Equal(`"localhost"`))

		Expect(m.GetString(ctx, "database/host")).To(Equal("localhost"))
		Expect(m.GetInt(ctx, "database/port")).To(Equal(5432))
		Expect(m.GetBool(ctx, "feature/enabled")).To(BeTrue())
		Expect(m.Get(ctx, "api/timeout")).To(Equal(int64(30)))
		Expect(m.Get(ctx, "limits")).To(Equal(map[string]any{"rps": 2.5, "burst": int64(10)}))

		Expect(m.GetAll(ctx, "database")).To(Equal(map[string]any{"database/host": "localhost", "database/port": int64(5432)}))
		all, err := m.GetAll(ctx, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(all).To(HaveLen(5))

		// What a caller does with a returned object does not change the cache.
		limits, err := m.Get(ctx, "limits")
		Expect(err).NotTo(HaveOccurred())
		limits.(map[string]any)["rps"] = 0
		Expect(m.Get(ctx, "limits")).To(HaveKeyWithValue("rps", 2.5))

		Expect(m.Delete(ctx, "api/timeout")).To(Succeed())
		Expect(m.Delete(ctx, "api/timeout")).To(Succeed(), "deleting a missing key is not an error")
		_, err = m.GetInt(ctx, "api/timeout")
		Expect(err).To(MatchError(config.ErrNotFound))
	})

	It("hands every reader its own copy of an object, so that changing it changes nothing stored", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), prefix)
		Expect(m.Set(ctx, "db", map[string]any{"host": "a"})).To(Succeed())
		v, err := m.Get(ctx, "db")
		Expect(err).NotTo(HaveOccurred())
		v.(map[string]any)["host"] = "changed by a caller"
		again, err := m.Get(ctx, "db")
		Expect(err).NotTo(HaveOccurred())
		Expect(again).To(Equal(map[string]any{"host": "a"}))
		all, err := m.GetAll(ctx, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(all["db"]).To(Equal(map[string]any{"host": "a"}))
	})

	It("tells a missing key from a value of another type, naming key and value", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), prefix)
		_, err := m.GetString(ctx, "database/host")
		Expect(err).To(MatchError(config.ErrNotFound))
		Expect(err).To(MatchError(`config: "database/host": key not found`))

		Expect(m.Set(ctx, "database/host", "localhost")).To(Succeed())
		_, err = m.GetInt(ctx, "database/host")
		Expect(err).To(MatchError(config.ErrWrongType))
		Expect(err).To(MatchError(`config: "database/host": wrong type: want int, stored value "localhost" is a string`))

		Expect(m.Set(ctx, "ratio", 3.5)).To(Succeed())
		_, err = m.GetInt(ctx, "ratio")
		Expect(err).To(MatchError(`config: "ratio": wrong type: want int, stored value 3.5 is not an integer`))
		_, err = m.GetBool(ctx, "ratio")
		Expect(err).To(MatchError(`config: "ratio": wrong type: want bool, stored value 3.5 is a number`))
		Expect(m.Set(ctx, "list", []int{1, 2})).To(Succeed())
		_, err = m.GetString(ctx, "list")
		Expect(err).To(MatchError(`config: "list": wrong type: want string, stored value [1,2] is an array`))
		Expect(m.Set(ctx, "whole", 8.0)).To(Succeed())
		Expect(m.GetInt(ctx, "whole")).To(Equal(8), "a number without a fraction is an integer")
	})

	It("returns its own write to a read right after Set, every time", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), prefix)
		for i := 0; i < 200; i++ {
			Expect(m.Set(ctx, "counter", i)).To(Succeed())
			Expect(m.GetInt(ctx, "counter")).To(Equal(i))
			Expect(m.GetAll(ctx, "")).To(HaveKeyWithValue("counter", int64(i)))
		}
	})

	It("sees another manager's writes in its cache", func(ctx SpecContext) {
		writer := newManager(ctx, cluster.Client(), prefix)
		own, err := cluster.NewClient()
		Expect(err).NotTo(HaveOccurred())
		defer own.Close()
		reader := newManager(ctx, own, prefix)

		Expect(writer.Set(ctx, "api/timeout", 30)).To(Succeed())
		Eventually(reader.GetInt).WithArguments(ctx, "api/timeout").Should(Equal(30))
		Expect(writer.Set(ctx, "api/timeout", 60)).To(Succeed())
		Eventually(reader.GetInt).WithArguments(ctx, "api/timeout").Should(Equal(60))

		By("the reader answers from its cache, even without etcd")
		changes := &changeLog{}
		Expect(reader.Watch(ctx, "api/timeout", changes.add)).To(Succeed())
		Expect(writer.Set(ctx, "api/timeout", 90)).To(Succeed())
		Eventually(changes.all).Should(ContainElement("api/timeout: 60 -> 90"))
		Expect(own.Close()).To(Succeed())
		Expect(reader.GetInt(ctx, "api/timeout")).To(Equal(90))
	})

	It("reports old and new values to watchers of a key, a prefix and everything", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), prefix)
		Expect(m.Set(ctx, "database/host", "db-1")).To(Succeed())
		key, sub, every := &changeLog{}, &changeLog{}, &changeLog{}
		Expect(m.Watch(ctx, "api/timeout", key.add)).To(Succeed())
		Expect(m.Watch(ctx, "database/", sub.add)).To(Succeed())
		Expect(m.Watch(ctx, "/", every.add)).To(Succeed())

		Expect(m.Set(ctx, "api/timeout", 30)).To(Succeed())
		Expect(m.Set(ctx, "api/timeout", 60)).To(Succeed())
		Expect(m.Set(ctx, "api/timeout", 60)).To(Succeed()) // the same value again: no change
		Expect(m.Delete(ctx, "api/timeout")).To(Succeed())
		Expect(m.Set(ctx, "database/host", "db-2")).To(Succeed())
		Expect(m.Set(ctx, "database", "not under database/")).To(Succeed())
		_, err := cluster.Client().Put(ctx, prefix+"database/raw", "not json")
		Expect(err).NotTo(HaveOccurred())

		Eventually(key.all).Should(Equal([]string{
			"api/timeout: <nil> -> 30",
			"api/timeout: 30 -> 60",
			"api/timeout: 60 -> <nil>",
		}))
		Eventually(sub.all).Should(Equal([]string{
			"database/host: db-1 -> db-2",
			fmt.Sprintf("database/raw: <nil> -> %v", []byte("not json")),
		}))
		Eventually(every.all).Should(HaveLen(6))
		Consistently(key.all).WithTimeout(200 * time.Millisecond).Should(HaveLen(3))
	})

	It("stops a watch when its context ends", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), prefix)
		wctx, cancel := context.WithCancel(ctx)
		changes := &changeLog{}
		Expect(m.Watch(wctx, "k", changes.add)).To(Succeed())
		Expect(m.Set(ctx, "k", 1)).To(Succeed())
		Eventually(changes.all).Should(HaveLen(1))
		cancel()
		n := 1
		Eventually(func(g Gomega) {
			n++
			g.Expect(m.Set(ctx, "k", n)).To(Succeed())
			g.Consistently(changes.all).WithTimeout(200 * time.Millisecond).ShouldNot(ContainElement(HaveSuffix(fmt.Sprintf("-> %d", n))))
		}).Should(Succeed())
	})

	It("reports the changes it missed across a compaction, and its cache follows them", func(ctx SpecContext) {
		writer := newManager(ctx, cluster.Client(), prefix)
		Expect(writer.Set(ctx, "a", 1)).To(Succeed())
		Expect(writer.Set(ctx, "b", 2)).To(Succeed())
		Expect(writer.Set(ctx, "c", 3)).To(Succeed())

		px, err := etcdtest.NewProxy(cluster.Endpoint(0))
		Expect(err).NotTo(HaveOccurred())
		defer px.Close()
		own, err := clientv3.New(clientv3.Config{Endpoints: []string{px.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		Expect(err).NotTo(HaveOccurred())
		defer own.Close()
		logs, log := newCapturedLog()
		reader, err := config.NewManager(own, prefix, config.Options{Logger: log})
		Expect(err).NotTo(HaveOccurred())
		defer reader.Close()
		Expect(reader.WaitForSync(ctx)).To(Succeed())
		changes := &changeLog{}
		Expect(reader.Watch(ctx, "/", changes.add)).To(Succeed())

		px.Block()
		Expect(writer.Set(ctx, "b", 22)).To(Succeed())
		Expect(writer.Delete(ctx, "a")).To(Succeed())
		Expect(writer.Set(ctx, "d", 4)).To(Succeed())
		Expect(writer.Set(ctx, "c", 3)).To(Succeed()) // rewritten unchanged
		_, err = cluster.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		px.Unblock()

		Eventually(changes.all).WithTimeout(15 * time.Second).Should(Equal([]string{
			"b: 2 -> 22", "d: <nil> -> 4", "a: 1 -> <nil>",
		}))
		Expect(logs.Contains("watch broken", "compacted")).To(BeTrue())
		Expect(reader.GetAll(ctx, "")).To(Equal(map[string]any{"b": int64(22), "c": int64(3), "d": int64(4)}))
		Expect(writer.Set(ctx, "e", 5)).To(Succeed())
		Eventually(reader.GetInt).WithArguments(ctx, "e").Should(Equal(5))
	})

	It("fails calls after Close", func(ctx SpecContext) {
		m, err := config.NewManager(cluster.Client(), prefix, config.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(m.WaitForSync(ctx)).To(Succeed())
		Expect(m.HasSynced()).To(BeTrue())
		m.Close()
		m.Close()
		Expect(m.Set(ctx, "k", 1)).To(MatchError(config.ErrClosed))
		_, err = m.GetString(ctx, "k")
		Expect(err).To(MatchError(config.ErrClosed))
		_, err = m.GetAll(ctx, "")
		Expect(err).To(MatchError(config.ErrClosed))
		Expect(m.Watch(ctx, "k", func(string, any, any) {})).To(MatchError(config.ErrClosed))
	})
})

var _ = Describe("Manager.Watch", func() {
	It("does not report the Manager's own writes that finished before Watch", func(ctx SpecContext) {
		m := newManager(ctx, cluster.Client(), uniquePrefix())
		// Other watches start and stop all along, so that the cache's handler has to wait
		// for the Manager's lock while a Watch may already see the write in the cache.
		churn, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for churn.Err() == nil {
					wctx, cancel := context.WithCancel(churn)
					_ = m.Watch(wctx, "none/", func(string, any, any) {})
					cancel()
				}
			})
		}
		defer wg.Wait()
		defer stop()
		for i := 1; i <= 100; i++ {
			Expect(m.Set(ctx, "before", i)).To(Succeed())
			wctx, cancel := context.WithCancel(ctx)
			changes := &changeLog{}
			Expect(m.Watch(wctx, "/", changes.add)).To(Succeed())
			Expect(m.Set(ctx, "after", i)).To(Succeed())
			// Changes come in order: an own write reported would come first.
			want := fmt.Sprintf("after: %d -> %d", i-1, i)
			if i == 1 {
				want = "after: <nil> -> 1"
			}
			Eventually(changes.all).Should(ContainElement(want))
			Expect(changes.all()).To(Equal([]string{want}))
			cancel()
		}
	})
})
