package store_test

import (
	"context"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// set is a parent object with finalizers, as a controller's input is.
type set struct {
	store.Lifecycle
	Replicas int `json:"replicas"`
}

var _ = Describe("finalizers", func() {
	var (
		cli  *clientv3.Client
		sets *store.Store[set]
	)
	BeforeEach(func() {
		cli = etcdtest.New(GinkgoT()).Client()
		var err error
		sets, err = store.New[set](cli, "/sets/", store.Options[set]{MutateAttempts: 200})
		Expect(err).NotTo(HaveOccurred())
	})

	exists := func(ctx context.Context, key string) bool {
		resp, err := cli.Get(ctx, key)
		Expect(err).NotTo(HaveOccurred())
		return len(resp.Kvs) == 1
	}

	It("marks an object with finalizers instead of deleting it, and the last removal deletes it", func(ctx SpecContext) {
		Expect(sets.Finalizable()).To(BeTrue())
		_, err := sets.Create(ctx, "/sets/a", &set{Replicas: 3})
		Expect(err).NotTo(HaveOccurred())
		_, err = sets.AddFinalizer(ctx, "/sets/a", "pods")
		Expect(err).NotTo(HaveOccurred())
		again, err := sets.AddFinalizer(ctx, "/sets/a", "pods") // already there: nothing written
		Expect(err).NotTo(HaveOccurred())
		Expect(again.Value.Finalizers).To(Equal([]string{"pods"}))
		_, err = sets.AddFinalizer(ctx, "/sets/a", "audit")
		Expect(err).NotTo(HaveOccurred())

		Expect(sets.Delete(ctx, "/sets/a", 0)).To(Succeed())
		marked, err := sets.Get(ctx, "/sets/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(marked.Value.Deleting()).To(BeTrue())
		Expect(marked.Value.Replicas).To(Equal(3))
		// A second delete changes nothing; no finalizer may be added any more.
		Expect(sets.Delete(ctx, "/sets/a", 0)).To(Succeed())
		again, err = sets.Get(ctx, "/sets/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(again.ModRevision).To(Equal(marked.ModRevision))
		_, err = sets.AddFinalizer(ctx, "/sets/a", "late")
		Expect(err).To(MatchError(store.ErrDeleting))
		Expect(err).To(MatchError(ContainSubstring(`/sets/a: finalizer "late" cannot be added`)))

		// Mutate keeps the mark even when fn clears it.
		_, err = sets.Mutate(ctx, "/sets/a", func(v *set) error { v.DeletionRequested = nil; v.Replicas = 0; return nil })
		Expect(err).NotTo(HaveOccurred())
		now, err := sets.Get(ctx, "/sets/a")
		Expect(err).NotTo(HaveOccurred())
		Expect(now.Value.Deleting()).To(BeTrue())

		Expect(sets.RemoveFinalizer(ctx, "/sets/a", "pods")).To(Succeed())
		Expect(exists(ctx, "/sets/a")).To(BeTrue())
		Expect(sets.RemoveFinalizer(ctx, "/sets/a", "audit")).To(Succeed())
		Expect(exists(ctx, "/sets/a")).To(BeFalse())
		// Removing from a key that is gone succeeds: a retried cleanup is idempotent.
		Expect(sets.RemoveFinalizer(ctx, "/sets/a", "audit")).To(Succeed())
	})

	It("deletes at once an object without finalizers, and honours the revision given", func(ctx SpecContext) {
		created, err := sets.Create(ctx, "/sets/b", &set{Replicas: 1})
		Expect(err).NotTo(HaveOccurred())
		Expect(sets.Delete(ctx, "/sets/b", created.ModRevision+100)).To(MatchError(store.ErrConflict))
		Expect(sets.Delete(ctx, "/sets/b", created.ModRevision)).To(Succeed())
		Expect(exists(ctx, "/sets/b")).To(BeFalse())
		Expect(sets.Delete(ctx, "/sets/b", 0)).To(Succeed())
	})

	It("deletes an object being deleted when an Update leaves no finalizer, and never creates one being deleted", func(ctx SpecContext) {
		_, err := sets.Create(ctx, "/sets/c", &set{Lifecycle: store.Lifecycle{Finalizers: []string{"pods"}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(sets.Delete(ctx, "/sets/c", 0)).To(Succeed())
		cur, err := sets.Get(ctx, "/sets/c")
		Expect(err).NotTo(HaveOccurred())
		cur.Value.Finalizers = nil
		gone, err := sets.Update(ctx, "/sets/c", &cur.Value, cur.ModRevision)
		Expect(err).NotTo(HaveOccurred())
		Expect(gone).To(BeNil())
		Expect(exists(ctx, "/sets/c")).To(BeFalse())

		_, err = sets.Create(ctx, "/sets/c", &cur.Value)
		Expect(err).To(MatchError(ContainSubstring("DeletionRequested set")))
	})

	It("fences the removal of a finalizer: a lost ownership deletes nothing", func(ctx SpecContext) {
		_, err := sets.Create(ctx, "/sets/d", &set{Lifecycle: store.Lifecycle{Finalizers: []string{"pods"}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(sets.Delete(ctx, "/sets/d", 0)).To(Succeed())
		owner, err := cli.Put(ctx, "/owner", "me")
		Expect(err).NotTo(HaveOccurred())
		fctx := fence.With(ctx, fence.Fence{
			Cmps:   []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/owner"), "=", owner.Header.Revision)},
			Holder: "the owner",
		})
		_, err = cli.Delete(ctx, "/owner") // the ownership ends
		Expect(err).NotTo(HaveOccurred())
		Expect(sets.RemoveFinalizer(fctx, "/sets/d", "pods")).To(MatchError(fence.ErrFenced))
		Expect(exists(ctx, "/sets/d")).To(BeTrue())
	})

	It("loses no finalizer to a delete that races with its addition", func(ctx SpecContext) {
		for i := range 20 {
			key := sets.Key("race-" + string(rune('a'+i)))
			_, err := sets.Create(ctx, key, &set{})
			Expect(err).NotTo(HaveOccurred())
			var wg sync.WaitGroup
			var addErr error
			wg.Add(2)
			go func() { defer wg.Done(); defer GinkgoRecover(); _, addErr = sets.AddFinalizer(ctx, key, "pods") }()
			go func() { defer wg.Done(); defer GinkgoRecover(); Expect(sets.Delete(ctx, key, 0)).To(Succeed()) }()
			wg.Wait()
			obj, err := sets.Get(ctx, key)
			switch {
			case addErr == nil && err == nil:
				// The finalizer came first: the delete only marked the object.
				Expect(obj.Value.Finalizers).To(Equal([]string{"pods"}))
				Expect(obj.Value.Deleting()).To(BeTrue())
			case addErr == nil:
				Fail("AddFinalizer succeeded on an object that was then deleted outright: " + err.Error())
			default:
				// The delete came first: the object is gone and the addition says so.
				Expect(err).To(MatchError(store.ErrNotFound))
				Expect(addErr).To(MatchError(store.ErrNotFound))
			}
		}
	})

	It("refuses finalizers on a type that has none, naming it", func(ctx SpecContext) {
		names, err := store.New[string](cli, "/names/", store.Options[string]{})
		Expect(err).NotTo(HaveOccurred())
		Expect(names.Finalizable()).To(BeFalse())
		_, err = names.AddFinalizer(ctx, "/names/a", "x")
		Expect(err).To(MatchError(ContainSubstring("string has no finalizers: embed store.Lifecycle")))
		_, err = sets.AddFinalizer(ctx, "/sets/a", "")
		Expect(err).To(MatchError(ContainSubstring("finalizer name must not be empty")))
	})
})
