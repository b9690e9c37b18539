package source_test

import (
	"context"
	"errors"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

// seenKeys records the keys a handler was given, with the last event type.
type seenKeys struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *seenKeys) handle(e source.Event) {
	s.mu.Lock()
	s.m[e.Key] = e.Type.String()
	s.mu.Unlock()
}

func (s *seenKeys) get() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

var _ = Describe("a shared source", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
	})

	It("serves several Runs with one list and one watch, replays the cache to a late one, and goes on when its driver stops", func(ctx SpecContext) {
		_, err := cli.Put(ctx, "/s/a", "1")
		Expect(err).NotTo(HaveOccurred())
		s, err := source.New(cli, "/s/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		first := &seenKeys{m: map[string]string{}}
		stopFirst := run(s, first.handle)
		Expect(s.WaitForSync(ctx)).To(Succeed())
		_, err = cli.Put(ctx, "/s/b", "1")
		Expect(err).NotTo(HaveOccurred())
		Eventually(first.get).Should(HaveLen(2))

		late := &seenKeys{m: map[string]string{}}
		stopLate := run(s, late.handle)
		defer stopLate()
		Eventually(late.get).Should(Equal(map[string]string{"/s/a": "PUT", "/s/b": "PUT"}), "the cache replayed")

		stopFirst() // the driver stops; the late Run takes over from the last seen revision
		_, err = cli.Delete(ctx, "/s/a")
		Expect(err).NotTo(HaveOccurred())
		Eventually(late.get).Should(HaveKeyWithValue("/s/a", "DELETE"))
		Expect(s.Stats().Lists).To(Equal(1))
		Expect(first.get()).To(HaveKeyWithValue("/s/a", "PUT"), "a stopped Run is given nothing more")
	})
})

var _ = Describe("a source's indexes", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
	})
	parent := func(key string, _ []byte) []string {
		// "/i/<parent>/<child>" is indexed under <parent>.
		parts := strings.Split(strings.TrimPrefix(key, "/i/"), "/")
		if len(parts) != 2 {
			return nil
		}
		return []string{parts[0]}
	}
	put := func(ctx context.Context, k string) {
		_, err := cli.Put(ctx, k, "x")
		Expect(err).NotTo(HaveOccurred())
	}

	It("stays right through puts, deletes and a relist after a compaction", func(ctx SpecContext) {
		put(ctx, "/i/p/1")
		put(ctx, "/i/p/2")
		put(ctx, "/i/q/1")
		s, err := source.New(cli, "/i/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		children := func(p string) func() []string {
			return func() []string {
				kvs, err := s.ByIndex("parent", p)
				Expect(err).NotTo(HaveOccurred())
				return keysOf(kvs)
			}
		}
		Expect(s.IndexField("parent", parent)).To(Succeed()) // before the list
		stop := run(s, func(source.Event) {})
		Expect(s.WaitForSync(ctx)).To(Succeed())
		Expect(children("p")()).To(Equal([]string{"/i/p/1", "/i/p/2"}))

		By("following puts and deletes")
		put(ctx, "/i/p/3")
		_, err = cli.Delete(ctx, "/i/p/1")
		Expect(err).NotTo(HaveOccurred())
		Eventually(children("p")).Should(Equal([]string{"/i/p/2", "/i/p/3"}))

		By("indexing the cached keys when added after the sync")
		Expect(s.IndexField("late", parent)).To(Succeed())
		kvs, err := s.ByIndex("late", "q")
		Expect(err).NotTo(HaveOccurred())
		Expect(keysOf(kvs)).To(Equal([]string{"/i/q/1"}))

		By("following a relist after the history was compacted")
		stop()
		_, err = cli.Delete(ctx, "/i/p/2")
		Expect(err).NotTo(HaveOccurred())
		put(ctx, "/i/q/2")
		put(ctx, "/i/r/1")
		_, err = c.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		stop = run(s, func(source.Event) {})
		defer stop()
		Eventually(func() int { return s.Stats().Relists }).Should(Equal(1))
		Eventually(children("q")).Should(Equal([]string{"/i/q/1", "/i/q/2"}))
		Expect(children("p")()).To(Equal([]string{"/i/p/3"}))
		Expect(children("r")()).To(Equal([]string{"/i/r/1"}))
		kvs, err = s.ByIndex("late", "q")
		Expect(err).NotTo(HaveOccurred())
		Expect(keysOf(kvs)).To(Equal([]string{"/i/q/1", "/i/q/2"}))
	})

	It("is safe to read while the watch writes", func(ctx SpecContext) {
		s, err := source.New(cli, "/i/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(s.IndexField("parent", parent)).To(Succeed())
		stop := run(s, func(source.Event) {})
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		done := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(done)
			for i := 0; i < 50; i++ {
				_, _ = s.ByIndex("parent", "p")
			}
		}()
		for _, k := range []string{"/i/p/1", "/i/p/2", "/i/p/3"} {
			put(ctx, k)
		}
		<-done
		Eventually(func() int { kvs, _ := s.ByIndex("parent", "p"); return len(kvs) }).Should(Equal(3))
	})

	It("refuses bad input", func() {
		s, err := source.New(cli, "/i/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(s.IndexField("", parent)).To(MatchError(ContainSubstring("source /i/: IndexField: the index name must not be empty")))
		Expect(s.IndexField("n", nil)).To(MatchError(ContainSubstring(`IndexField("n"): the index function must not be nil`)))
		Expect(s.IndexField("n", parent)).To(Succeed())
		Expect(s.IndexField("n", parent)).To(MatchError(ContainSubstring("exists already")))
		_, err = s.ByIndex("missing", "v")
		Expect(errors.Is(err, source.ErrNoIndex)).To(BeTrue())
		Expect(err).To(MatchError(ContainSubstring(`"missing" on the source of /i/`)))
	})
})
