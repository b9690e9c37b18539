package store_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("the default codec", func() {
	It("reads and writes a Store[string] as plain text, as etcdctl does", func(ctx SpecContext) {
		cli := etcdtest.New(GinkgoT()).Client()
		s, err := store.New[string](cli, "/notes/", store.Options[string]{})
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/notes/a", "hello") // etcdctl put /notes/a hello
		Expect(err).NotTo(HaveOccurred())
		got, err := s.Get(ctx, "/notes/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value).To(Equal("hello"))

		v := "written by the store"
		_, err = s.Create(ctx, "/notes/b", &v)
		Expect(err).NotTo(HaveOccurred())
		resp, err := cli.Get(ctx, "/notes/b") // etcdctl get /notes/b
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Kvs[0].Value)).To(Equal("written by the store"))

		_, err = cli.Put(ctx, "/notes/bin", "\xff\xfe")
		Expect(err).NotTo(HaveOccurred())
		_, err = s.Get(ctx, "/notes/bin")
		Expect(err).To(MatchError(store.ErrDecode))
		Expect(err.Error()).To(ContainSubstring("not UTF-8"))
	})

	It("keeps the bytes of a Store[[]byte] as they are", func(ctx SpecContext) {
		cli := etcdtest.New(GinkgoT()).Client()
		s, err := store.New[[]byte](cli, "/blobs/", store.Options[[]byte]{})
		Expect(err).NotTo(HaveOccurred())
		blob := []byte{0, 1, 0xff, '"'}
		_, err = s.Create(ctx, "/blobs/a", &blob)
		Expect(err).NotTo(HaveOccurred())
		resp, err := cli.Get(ctx, "/blobs/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs[0].Value).To(Equal(blob))
		got, err := s.Get(ctx, "/blobs/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value).To(Equal(blob))
	})

	It("stays JSON for structured types", func(ctx SpecContext) {
		cli := etcdtest.New(GinkgoT()).Client()
		s, err := store.New[job](cli, "/jobs/", store.Options[job]{})
		Expect(err).NotTo(HaveOccurred())
		_, err = s.Create(ctx, "/jobs/a", &job{Phase: "new"})
		Expect(err).NotTo(HaveOccurred())
		resp, err := cli.Get(ctx, "/jobs/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(resp.Kvs[0].Value)).To(Equal(`{"phase":"new","count":0}`))
	})
})
