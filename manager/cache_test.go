package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// keySet records the keys a controller reconciled.
type keySet struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (k *keySet) reconciler() reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		k.mu.Lock()
		k.keys[req.Key] = true
		k.mu.Unlock()
		return reconcile.Result{}, nil
	})
}

func (k *keySet) get() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for key := range k.keys {
		out = append(out, key)
	}
	return out
}

func keys(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

type job struct {
	Owner string `json:"owner"`
	Phase string `json:"phase"`
}

var _ = Describe("the manager's shared cache", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
	})
	newManager := func(name string) *manager.Manager {
		mgr, err := manager.New(manager.Options{Client: cli, Name: name, DisableLeaderElection: true})
		Expect(err).NotTo(HaveOccurred())
		return mgr
	}
	put := func(ctx context.Context, k, v string) int64 {
		resp, err := cli.Put(ctx, k, v)
		Expect(err).NotTo(HaveOccurred())
		return resp.Header.Revision
	}

	It("gives two controllers on one prefix one source: one list, one watch, one cache", func(ctx SpecContext) {
		put(ctx, "/jobs/a", "1")
		mgr := newManager("share")
		one, two := &keySet{keys: map[string]bool{}}, &keySet{keys: map[string]bool{}}
		c1, err := manager.NewControllerManagedBy(mgr).Named("one").For(source.Prefix("/jobs/")).Build(one.reconciler())
		Expect(err).NotTo(HaveOccurred())
		c2, err := manager.NewControllerManagedBy(mgr).Named("two").For(source.Prefix("/jobs/")).Build(two.reconciler())
		Expect(err).NotTo(HaveOccurred())
		Expect(c1.Sources()[0]).To(BeIdenticalTo(c2.Sources()[0]))
		Expect(mgr.GetCache().Sources()).To(HaveLen(1))

		r := startReplica(mgr)
		defer r.shutdown()
		put(ctx, "/jobs/b", "1")
		Eventually(one.get).Should(ConsistOf("/jobs/a", "/jobs/b"))
		Eventually(two.get).Should(ConsistOf("/jobs/a", "/jobs/b"))
		st := c1.Sources()[0].Stats()
		Expect(st.Lists).To(Equal(1), "one list for both controllers")
		Expect(st.Resumes).To(Equal(0), "one watch, never reopened")
		kv, ok := mgr.GetCache().Get("/jobs/b")
		Expect(ok).To(BeTrue())
		Expect(string(kv.Value)).To(Equal("1"))
	})

	It("lets a reconciler read typed objects from the cache in one line", func(ctx SpecContext) {
		mgr := newManager("typed")
		jobs, err := store.New[job](cli, "/jobs/", store.Options[job]{Cache: mgr.GetCache()})
		Expect(err).NotTo(HaveOccurred())
		seen := make(chan job, 10)
		err = manager.NewControllerManagedBy(mgr).Named("typed").For(source.Prefix("/jobs/")).
			Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
				obj, err := jobs.Cached(req.Key)
				if err != nil {
					return reconcile.Result{}, err
				}
				seen <- obj.Value
				return reconcile.Result{}, nil
			}))
		Expect(err).NotTo(HaveOccurred())
		Expect(mgr.GetCache().Sources()).To(HaveLen(1), "the store and the controller share the source")
		r := startReplica(mgr)
		defer r.shutdown()
		_, err = jobs.Create(ctx, "/jobs/x", &job{Owner: "ann", Phase: "Running"})
		Expect(err).NotTo(HaveOccurred())
		Eventually(seen).Should(Receive(Equal(job{Owner: "ann", Phase: "Running"})))

		By("sharing one decoding per revision, each read a copy of its top level")
		a, err := jobs.Cached("/jobs/x")
		Expect(err).NotTo(HaveOccurred())
		a.Value.Phase = "changed by the caller"
		b, err := jobs.Cached("/jobs/x")
		Expect(err).NotTo(HaveOccurred())
		Expect(b.Value.Phase).To(Equal("Running"))
		_, err = jobs.Cached("/jobs/missing")
		Expect(err).To(MatchError(store.ErrNotFound))
	})

	It("serves a narrower prefix from a wider source, each watch seeing its own keys and predicates", func(ctx SpecContext) {
		mgr := newManager("wide")
		all, narrow := &keySet{keys: map[string]bool{}}, &keySet{keys: map[string]bool{}}
		wide, err := manager.NewControllerManagedBy(mgr).Named("all").For(source.Prefix("/jobs/")).Build(all.reconciler())
		Expect(err).NotTo(HaveOccurred())
		sub, err := manager.NewControllerManagedBy(mgr).Named("narrow").
			For(source.Prefix("/jobs/a/").WithPredicates(source.KeyMatches(func(k string) bool { return !strings.HasSuffix(k, "-skip") }))).
			Build(narrow.reconciler())
		Expect(err).NotTo(HaveOccurred())
		Expect(sub.Sources()[0]).To(BeIdenticalTo(wide.Sources()[0]))
		src, err := mgr.GetCache().Source("/jobs/a/b/")
		Expect(err).NotTo(HaveOccurred())
		Expect(src.Prefix()).To(Equal("/jobs/"))

		r := startReplica(mgr)
		defer r.shutdown()
		put(ctx, "/jobs/a/1", "x")
		put(ctx, "/jobs/a/2-skip", "x")
		put(ctx, "/jobs/b/1", "x")
		Eventually(all.get).Should(ConsistOf("/jobs/a/1", "/jobs/a/2-skip", "/jobs/b/1"), "a watch's predicates filter no other watch")
		Eventually(narrow.get).Should(ConsistOf("/jobs/a/1"))
		Consistently(narrow.get, "300ms").Should(ConsistOf("/jobs/a/1"))
		Expect(keys(mgr.GetCache().List("/jobs/a/"))).To(Equal([]string{"/jobs/a/1", "/jobs/a/2-skip"}))
	})

	It("starts a source asked for after Start, and reports what it cannot serve", func(ctx SpecContext) {
		mgr := newManager("late")
		r := startReplica(mgr)
		defer r.shutdown()
		put(ctx, "/late/a", "1")
		Expect(mgr.GetCache().Covers("/late/")).To(BeFalse())
		_, ok := mgr.GetCache().Get("/late/a")
		Expect(ok).To(BeFalse(), "no source covers it yet")
		_, err := mgr.GetCache().Source("/late/")
		Expect(err).NotTo(HaveOccurred())
		Expect(mgr.GetCache().WaitForSync(ctx)).To(Succeed())
		kv, ok := mgr.GetCache().Get("/late/a")
		Expect(ok).To(BeTrue())
		Expect(string(kv.Value)).To(Equal("1"))
		rev := put(ctx, "/late/b", "2")
		src, _ := mgr.GetCache().Source("/late/")
		Expect(src.WaitForRevision(ctx, rev)).To(Succeed())
		Expect(keys(mgr.GetCache().List("/late/"))).To(Equal([]string{"/late/a", "/late/b"}))
	})

	It("refuses a watch whose source options differ from the shared source's, naming the prefix", func() {
		mgr := newManager("opts")
		_, err := mgr.GetCache().Source("/jobs/")
		Expect(err).NotTo(HaveOccurred())
		err = manager.NewControllerManagedBy(mgr).Named("paged").
			For(source.Prefix("/jobs/a/").WithOptions(source.Options{PageSize: 10})).
			Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }))
		Expect(err).To(MatchError(And(ContainSubstring("/jobs/a/ is served by the source of /jobs/"), ContainSubstring("PageSize 1000"), ContainSubstring("cannot ask for 10"))))
		err = manager.NewControllerManagedBy(mgr).Named("default").
			For(source.Prefix("/jobs/").WithOptions(source.Options{PageSize: source.DefaultPageSize})).
			Complete(reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) { return reconcile.Result{}, nil }))
		Expect(err).NotTo(HaveOccurred(), "an option set to the source's value is no conflict")
		_, err = mgr.GetCache().Source("")
		Expect(err).To(MatchError(ContainSubstring("prefix must not be empty")))
		_, err = store.New[job](cli, "", store.Options[job]{Cache: mgr.GetCache()})
		Expect(err).To(HaveOccurred())
	})

	It("keeps an index right through puts and deletes (relists: see package source)", func(ctx SpecContext) {
		mgr := newManager("index")
		cache := mgr.GetCache()
		owner := func(key string, value []byte) []string {
			var j job
			if json.Unmarshal(value, &j) != nil || j.Owner == "" {
				return nil
			}
			return []string{j.Owner}
		}
		put(ctx, "/jobs/1", `{"owner":"ann"}`)
		put(ctx, "/jobs/2", `{"owner":"bob"}`)
		src, err := cache.Source("/jobs/")
		Expect(err).NotTo(HaveOccurred())
		r := startReplica(mgr)
		defer r.shutdown()
		Expect(cache.WaitForSync(ctx)).To(Succeed())
		byOwner := func(o string) func() []string {
			return func() []string {
				kvs, err := cache.ByIndex("/jobs/", "owner", o)
				Expect(err).NotTo(HaveOccurred())
				return keys(kvs)
			}
		}

		By("indexing the keys cached already")
		Expect(cache.IndexField("/jobs/", "owner", owner)).To(Succeed())
		Expect(byOwner("ann")()).To(Equal([]string{"/jobs/1"}))

		By("following puts and deletes")
		put(ctx, "/jobs/3", `{"owner":"ann"}`)
		put(ctx, "/jobs/2", `{"owner":"ann"}`) // moves from bob to ann
		Eventually(byOwner("ann")).Should(Equal([]string{"/jobs/1", "/jobs/2", "/jobs/3"}))
		Expect(byOwner("bob")()).To(BeEmpty())
		_, err = cli.Delete(ctx, "/jobs/1")
		Expect(err).NotTo(HaveOccurred())
		Eventually(byOwner("ann")).Should(Equal([]string{"/jobs/2", "/jobs/3"}))
		Expect(src.Prefix()).To(Equal("/jobs/"))
	})

	It("reports bad index input", func() {
		mgr := newManager("badindex")
		cache := mgr.GetCache()
		fn := func(string, []byte) []string { return nil }
		Expect(cache.IndexField("/x/", "n", nil)).To(MatchError(ContainSubstring("index function must not be nil")))
		Expect(cache.IndexField("/x/", "", fn)).To(MatchError(ContainSubstring("index name must not be empty")))
		Expect(cache.IndexField("", "n", fn)).To(MatchError(ContainSubstring("prefix must not be empty")))
		Expect(cache.IndexField("/x/", "n", fn)).To(Succeed())
		Expect(cache.IndexField("/x/", "n", fn)).To(MatchError(ContainSubstring(`IndexField("n"): an index of that name exists already`)))
		_, err := cache.ByIndex("/x/", "other", "v")
		Expect(errors.Is(err, source.ErrNoIndex)).To(BeTrue())
		_, err = cache.ByIndex("/y/", "n", "v")
		Expect(errors.Is(err, source.ErrNoIndex)).To(BeTrue())
	})
})
