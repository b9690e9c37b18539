package source_test

import (
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a source with Keep", func() {
	var cli *clientv3.Client
	BeforeEach(func() { cli = etcdtest.New(GinkgoT()).Client() })

	It("caches and delivers only the kept keys; lists the keys it comes to keep; evicts those it stops keeping without a delete", func(ctx SpecContext) {
		for _, k := range []string{"a", "b", "m", "n"} {
			_, err := cli.Put(ctx, "/kv/"+k, "1")
			Expect(err).NotTo(HaveOccurred())
		}
		var upTo atomic.Value // keys below it are kept; "" keeps all
		upTo.Store("/kv/m")
		keep := func(key string) bool { u := upTo.Load().(string); return u == "" || key < u }
		s, err := source.New(cli, "/kv/", source.Options{Keep: func(key string) bool { return keep(key) }})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		Expect(s.Len()).To(Equal(2))
		Expect(s.Holds("/kv/a")).To(BeTrue())
		Expect(s.Holds("/kv/n")).To(BeFalse())

		By("changes of keys it does not keep are not delivered")
		resp, err := cli.Txn(ctx).Then(clientv3.OpPut("/kv/n", "2"), clientv3.OpPut("/kv/b", "2")).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(s.WaitForRevision(ctx, resp.Header.Revision)).To(Succeed())
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(map[string]string{"/kv/a": "1", "/kv/b": "2"}))

		By("keeping every key, a relist delivers the keys it did not hold, and only those")
		_, before := rec.snapshot()
		upTo.Store("")
		Expect(s.WaitForList(ctx, s.Relist())).To(Succeed())
		Expect(s.Len()).To(Equal(4))
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(map[string]string{"/kv/a": "1", "/kv/b": "2", "/kv/m": "1", "/kv/n": "2"}))
		_, after := rec.snapshot()
		var listed []string
		for _, e := range after[len(before):] {
			Expect(e.Type).To(Equal(source.Put))
			Expect(e.Initial).To(BeTrue())
			listed = append(listed, e.Key)
		}
		Expect(listed).To(ConsistOf("/kv/m", "/kv/n"))

		By("keeping fewer keys, Evict drops the others from the cache without a delete event")
		upTo.Store("/kv/b")
		s.Evict()
		Expect(s.Len()).To(Equal(1))
		_, ok := s.Get("/kv/m")
		Expect(ok).To(BeFalse())
		_, err = cli.Delete(ctx, "/kv/m")
		Expect(err).NotTo(HaveOccurred())
		resp2, err := cli.Put(ctx, "/kv/a", "3")
		Expect(err).NotTo(HaveOccurred())
		Expect(s.WaitForRevision(ctx, resp2.Header.Revision)).To(Succeed())
		Eventually(func() string { st, _ := rec.snapshot(); return st["/kv/a"] }).Should(Equal("3"))
		_, evs := rec.snapshot()
		for _, e := range evs {
			Expect(e.Type).To(Equal(source.Put), "event %s of %s", e.Type, e.Key)
		}
	})
})
