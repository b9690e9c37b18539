package source_test

import (
	"fmt"
	"maps"
	"slices"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/ranges"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a range source", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
	})

	It("refuses a range without a start, without an end, or empty", func() {
		for _, r := range [][2]string{{"", "/b"}, {"/a", ""}, {"/b", "/a"}, {"/a", "/a"}} {
			_, err := source.NewRange(cli, r[0], r[1], source.Options{})
			Expect(err).To(MatchError(ContainSubstring("must have a start and an end after it")), "range %q", r)
		}
	})

	It("lists and watches only its range, and sees a transaction's part in it at once", func(ctx SpecContext) {
		for _, k := range []string{"/jobs/a", "/jobs/f", "/jobs/m", "/jobs/z"} {
			_, err := cli.Put(ctx, k, "0")
			Expect(err).NotTo(HaveOccurred())
		}
		s, err := source.NewRange(cli, "/jobs/f", "/jobs/n", source.Options{PageSize: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Covers("/jobs/g")).To(BeTrue())
		Expect(s.Covers("/jobs/")).To(BeFalse())
		Expect(s.Contains("/jobs/f")).To(BeTrue())
		Expect(s.Contains("/jobs/n")).To(BeFalse())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		Expect(s.Len()).To(Equal(2))

		resp, err := cli.Txn(ctx).Then(
			clientv3.OpPut("/jobs/a", "1"), clientv3.OpPut("/jobs/g", "1"),
			clientv3.OpDelete("/jobs/m"), clientv3.OpPut("/jobs/zz", "1"),
		).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(s.WaitForRevision(ctx, resp.Header.Revision)).To(Succeed())
		_, ok := s.Get("/jobs/m")
		Expect(ok).To(BeFalse(), "the transaction's delete is in the cache with its put")
		kv, ok := s.Get("/jobs/g")
		Expect(ok).To(BeTrue())
		Expect(kv.ModRevision).To(Equal(resp.Header.Revision))

		want := map[string]string{"/jobs/f": "0", "/jobs/g": "1"}
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(want))
		_, evs := rec.snapshot()
		for _, e := range evs {
			Expect(s.Contains(e.Key)).To(BeTrue(), "event of %s, outside the range", e.Key)
		}
		for _, kv := range s.List("") {
			Expect(s.Contains(string(kv.Key))).To(BeTrue(), "cached %s, outside the range", kv.Key)
		}
	})

	It("holds, over the ranges of a slice, exactly the keys whose slice key is in it", func(ctx SpecContext) {
		const prefix = "/items/"
		// foo-0 sorts between foo and foo/a: the slice that ends at foo-0 has foo/a too.
		keys := []string{"a", "foo", "foo-0", "foo-0/x", "foo/a", "foo/b/c", "foo.bar", "fop", "z"}
		for _, k := range keys {
			_, err := cli.Put(ctx, prefix+k, "v")
			Expect(err).NotTo(HaveOccurred())
		}
		bounds := [][2]string{{"", "foo-0"}, {"foo-0", "fop"}, {"fop", ""}}
		owner := map[string]int{}
		for i, b := range bounds {
			var srcs []*source.Source
			for _, r := range ranges.KeyRanges(prefix, b[0], b[1]) {
				s, err := source.NewRange(cli, r.Start, r.End, source.Options{})
				Expect(err).NotTo(HaveOccurred())
				stop := run(s, func(source.Event) {})
				DeferCleanup(stop)
				Expect(s.WaitForSync(ctx)).To(Succeed())
				srcs = append(srcs, s)
			}
			for _, s := range srcs {
				for _, kv := range s.List("") {
					k := string(kv.Key)[len(prefix):]
					Expect(owner).NotTo(HaveKey(k), "key %s in slices %d and %d", k, owner[k], i)
					owner[k] = i
				}
			}
		}
		// '-' < '.' < '/': foo.bar sorts after foo-0, and is cut from foo with it.
		want := map[string]int{"a": 0, "foo": 0, "foo/a": 0, "foo/b/c": 0,
			"foo-0": 1, "foo-0/x": 1, "foo.bar": 1, "fop": 2, "z": 2}
		Expect(owner).To(Equal(want), fmt.Sprintf("keys by slice, of %q", slices.Sorted(maps.Keys(owner))))
	})
})
