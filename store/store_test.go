package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

type job struct {
	Phase string `json:"phase"`
	Count int    `json:"count"`
}

var _ = Describe("a store", func() {
	var (
		cli *clientv3.Client
		s   *store.Store[job]
	)
	BeforeEach(func() {
		cli = etcdtest.New(GinkgoT()).Client()
		var err error
		s, err = store.New[job](cli, "/jobs/", store.Options[job]{MutateAttempts: 200})
		Expect(err).NotTo(HaveOccurred())
	})

	It("creates once and reads back the object with its metadata", func(ctx SpecContext) {
		created, err := s.Create(ctx, s.Key("a"), &job{Phase: "new"})
		Expect(err).NotTo(HaveOccurred())
		Expect(created.CreateRevision).To(Equal(created.ModRevision))
		Expect(created.Version).To(Equal(int64(1)))

		got, err := s.Get(ctx, "/jobs/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value).To(Equal(job{Phase: "new"}))
		Expect(got.Meta).To(Equal(created.Meta))

		_, err = s.Create(ctx, "/jobs/a", &job{Phase: "again"})
		Expect(err).To(MatchError(store.ErrExists))
		_, err = s.Get(ctx, "/jobs/missing")
		Expect(err).To(MatchError(store.ErrNotFound))
		Expect(err).To(MatchError(ContainSubstring("/jobs/missing")))
	})

	It("updates only from the revision it read and reports a conflict with the current state", func(ctx SpecContext) {
		v1, err := s.Create(ctx, "/jobs/u", &job{Phase: "new"})
		Expect(err).NotTo(HaveOccurred())
		v2, err := s.Update(ctx, "/jobs/u", &job{Phase: "running"}, v1.ModRevision)
		Expect(err).NotTo(HaveOccurred())
		Expect(v2.Version).To(Equal(int64(2)))

		_, err = s.Update(ctx, "/jobs/u", &job{Phase: "stale"}, v1.ModRevision)
		Expect(err).To(MatchError(store.ErrConflict))
		var ce *store.ConflictError[job]
		Expect(errors.As(err, &ce)).To(BeTrue())
		Expect(ce.Expected).To(Equal(v1.ModRevision))
		Expect(ce.Current.ModRevision).To(Equal(v2.ModRevision))
		Expect(ce.Current.Value.Phase).To(Equal("running"))

		got, err := s.Get(ctx, "/jobs/u")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value.Phase).To(Equal("running"), "a conflicting update writes nothing")
	})

	It("deletes with a precondition", func(ctx SpecContext) {
		v1, err := s.Create(ctx, "/jobs/d", &job{})
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Delete(ctx, "/jobs/d", v1.ModRevision+100)).To(MatchError(store.ErrConflict))
		Expect(s.Delete(ctx, "/jobs/d", v1.ModRevision)).To(Succeed())
		_, err = s.Get(ctx, "/jobs/d")
		Expect(err).To(MatchError(store.ErrNotFound))
		Expect(s.Delete(ctx, "/jobs/d", 0)).To(Succeed(), "an unconditional delete of a missing key")
	})

	It("Mutate converges under concurrent writers: no increment lost", func(ctx SpecContext) {
		_, err := s.Create(ctx, "/jobs/counter", &job{})
		Expect(err).NotTo(HaveOccurred())
		const writers, each = 6, 15
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				for i := 0; i < each; i++ {
					_, err := s.Mutate(ctx, "/jobs/counter", func(j *job) error { j.Count++; return nil })
					Expect(err).NotTo(HaveOccurred())
				}
			}()
		}
		wg.Wait()
		got, err := s.Get(ctx, "/jobs/counter")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value.Count).To(Equal(writers * each))
	})

	It("Mutate writes nothing when fn leaves the value as it was", func(ctx SpecContext) {
		v, err := s.Create(ctx, "/jobs/same", &job{Phase: "a"})
		Expect(err).NotTo(HaveOccurred())
		got, err := s.Mutate(ctx, "/jobs/same", func(j *job) error { j.Phase = "a"; return nil })
		Expect(err).NotTo(HaveOccurred())
		Expect(got.ModRevision).To(Equal(v.ModRevision))
	})

	It("Mutate stops at fn's error and writes nothing", func(ctx SpecContext) {
		v, err := s.Create(ctx, "/jobs/m", &job{Phase: "a"})
		Expect(err).NotTo(HaveOccurred())
		boom := errors.New("boom")
		_, err = s.Mutate(ctx, "/jobs/m", func(j *job) error { j.Phase = "b"; return boom })
		Expect(err).To(MatchError(boom))
		got, err := s.Get(ctx, "/jobs/m")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.ModRevision).To(Equal(v.ModRevision))
	})

	It("refuses every write once the fence no longer holds", func(ctx SpecContext) {
		var fencedCount atomic.Int32
		fs, err := store.New[job](cli, "/jobs/", store.Options[job]{OnFenced: func() { fencedCount.Add(1) }})
		Expect(err).NotTo(HaveOccurred())
		lease, err := cli.Grant(ctx, 30)
		Expect(err).NotTo(HaveOccurred())
		owner, err := cli.Put(ctx, "/owners/0", "me", clientv3.WithLease(lease.ID))
		Expect(err).NotTo(HaveOccurred())
		token := owner.Header.Revision
		fctx := fence.With(ctx, fence.Fence{
			Cmps:   []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/owners/0"), "=", token)},
			Holder: fmt.Sprintf("shard 0 (token %d)", token),
		})

		v, err := fs.Create(fctx, "/jobs/f", &job{Phase: "owned"})
		Expect(err).NotTo(HaveOccurred())

		_, err = cli.Revoke(ctx, lease.ID) // the owner's session ends
		Expect(err).NotTo(HaveOccurred())
		_, err = fs.Update(fctx, "/jobs/f", &job{Phase: "stale owner"}, v.ModRevision)
		Expect(err).To(MatchError(fence.ErrFenced))
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("token %d", token))))
		Expect(fs.Delete(fctx, "/jobs/f", 0)).To(MatchError(fence.ErrFenced))
		_, err = fs.Create(fctx, "/jobs/g", &job{})
		Expect(err).To(MatchError(fence.ErrFenced))
		Expect(fencedCount.Load()).To(Equal(int32(3)))

		// Another owner of the same shard has a new token; the old token stays refused.
		_, err = cli.Put(ctx, "/owners/0", "other")
		Expect(err).NotTo(HaveOccurred())
		_, err = fs.Update(fctx, "/jobs/f", &job{Phase: "stale owner"}, v.ModRevision)
		Expect(err).To(MatchError(fence.ErrFenced))
		got, err := fs.Get(ctx, "/jobs/f")
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Value.Phase).To(Equal("owned"))
	})

	It("names the key and revision of a value that does not decode, and lists the others", func(ctx SpecContext) {
		put, err := cli.Put(ctx, "/jobs/bad", "{not json")
		Expect(err).NotTo(HaveOccurred())
		_, err = s.Create(ctx, "/jobs/good", &job{Phase: "ok"})
		Expect(err).NotTo(HaveOccurred())

		_, err = s.Get(ctx, "/jobs/bad")
		Expect(err).To(MatchError(store.ErrDecode))
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("/jobs/bad at mod revision %d", put.Header.Revision))))

		objs, err := s.List(ctx)
		Expect(err).To(MatchError(store.ErrDecode))
		Expect(objs).To(HaveLen(1))
		Expect(objs[0].Key).To(Equal("/jobs/good"))

		_, err = s.Mutate(ctx, "/jobs/bad", func(*job) error { return nil })
		Expect(err).To(MatchError(store.ErrDecode))
	})

	It("reads from a source's cache", func(ctx SpecContext) {
		src, err := source.New(cli, "/jobs/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		cs, err := store.New[job](cli, "/jobs/", store.Options[job]{Cache: src})
		Expect(err).NotTo(HaveOccurred())
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = src.Run(rctx, func(source.Event) {}) }()
		defer func() { cancel(); <-done }()
		Expect(src.WaitForSync(ctx)).To(Succeed())

		_, err = cs.Create(ctx, "/jobs/c", &job{Phase: "cached"})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() (string, error) {
			o, err := cs.Cached("/jobs/c")
			if err != nil {
				return "", err
			}
			return o.Value.Phase, nil
		}).Should(Equal("cached"))
		objs, err := cs.CachedList()
		Expect(err).NotTo(HaveOccurred())
		Expect(objs).To(HaveLen(1))
		_, err = s.Cached("/jobs/c")
		Expect(err).To(MatchError(ContainSubstring("no cache configured")))
	})

	It("rejects bad input with clear errors", func(ctx SpecContext) {
		_, err := store.New[job](cli, "", store.Options[job]{})
		Expect(err).To(MatchError(ContainSubstring("prefix must not be empty")))
		_, err = store.New[job](nil, "/x/", store.Options[job]{})
		Expect(err).To(MatchError(ContainSubstring("client must not be nil")))
		_, err = s.Get(ctx, "/other/a")
		Expect(err).To(MatchError(ContainSubstring(`key "/other/a" is not under the store's prefix "/jobs/"`)))
		_, err = s.Update(ctx, "/jobs/a", &job{}, 0)
		Expect(err).To(MatchError(ContainSubstring("needs the mod revision that was read, got 0")))
		_, err = s.Create(ctx, "/jobs/a", nil)
		Expect(err).To(MatchError(ContainSubstring("value must not be nil")))
	})
})
