package source_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// recorder keeps every event a source delivers and the state they add up to.
type recorder struct {
	mu     sync.Mutex
	events []source.Event
	state  map[string]string
}

func newRecorder() *recorder { return &recorder{state: map[string]string{}} }

func (r *recorder) handle(e source.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if e.Type == source.Delete {
		delete(r.state, e.Key)
	} else {
		r.state[e.Key] = string(e.KV.Value)
	}
}

func (r *recorder) snapshot() (map[string]string, []source.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := make(map[string]string, len(r.state))
	for k, v := range r.state {
		st[k] = v
	}
	return st, append([]source.Event(nil), r.events...)
}

// etcdState reads the prefix from etcd.
func etcdState(ctx context.Context, cli *clientv3.Client, prefix string) map[string]string {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	Expect(err).NotTo(HaveOccurred())
	st := map[string]string{}
	for _, kv := range resp.Kvs {
		st[string(kv.Key)] = string(kv.Value)
	}
	return st
}

// run starts the source on its own goroutine and returns a stop function that waits for it.
func run(s *source.Source, h source.Handler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, h) }()
	return func() {
		cancel()
		Eventually(done).Should(Receive(MatchError(context.Canceled)))
	}
}

var _ = Describe("a prefix source", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
	})

	It("lists in pages at one revision, then delivers every change with its previous value", func(ctx SpecContext) {
		for i := 0; i < 250; i++ {
			_, err := cli.Put(ctx, fmt.Sprintf("/jobs/%04d", i), "v0")
			Expect(err).NotTo(HaveOccurred())
		}
		_, err := cli.Put(ctx, "/jobsx", "outside the prefix")
		Expect(err).NotTo(HaveOccurred())
		s, err := source.New(cli, "/jobs/", source.Options{PageSize: 100})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		Expect(s.HasSynced()).To(BeTrue())
		Expect(s.Len()).To(Equal(250))
		_, initial := rec.snapshot()
		Expect(initial).To(HaveLen(250))
		Expect(initial[0].Initial).To(BeTrue())

		_, err = cli.Put(ctx, "/jobs/0001", "v1")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Delete(ctx, "/jobs/0002")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { _, evs := rec.snapshot(); return len(evs) }).Should(Equal(252))
		_, evs := rec.snapshot()
		Expect(evs[250].Type).To(Equal(source.Put))
		Expect(string(evs[250].PrevKV.Value)).To(Equal("v0"))
		Expect(string(evs[250].KV.Value)).To(Equal("v1"))
		Expect(evs[251].Type).To(Equal(source.Delete))
		Expect(evs[251].Key).To(Equal("/jobs/0002"))
		Expect(string(evs[251].PrevKV.Value)).To(Equal("v0"))

		kv, ok := s.Get("/jobs/0001")
		Expect(ok).To(BeTrue())
		Expect(string(kv.Value)).To(Equal("v1"))
		_, ok = s.Get("/jobs/0002")
		Expect(ok).To(BeFalse())
		Expect(s.List("/jobs/000")).To(HaveLen(9))
		Expect(s.Stats().Lists).To(Equal(1))
	})

	It("ends with etcd's state while a concurrent writer runs through the list and watch", func(ctx SpecContext) {
		writerDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(writerDone)
			for i := 0; i < 2000; i++ {
				k := fmt.Sprintf("/w/%03d", i%300)
				var err error
				if i%7 == 0 {
					_, err = cli.Delete(ctx, k)
				} else {
					_, err = cli.Put(ctx, k, fmt.Sprint(i))
				}
				Expect(err).NotTo(HaveOccurred())
			}
		}()
		s, err := source.New(cli, "/w/", source.Options{PageSize: 50})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		<-writerDone
		want := etcdState(ctx, cli, "/w/")
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(want))
		Expect(s.List("")).To(HaveLen(len(want)))
	})

	It("relists and diffs after a compaction, with one relist and no change lost", func(ctx SpecContext) {
		for _, k := range []string{"a", "b", "c"} {
			_, err := cli.Put(ctx, "/p/"+k, "1")
			Expect(err).NotTo(HaveOccurred())
		}
		s, err := source.New(cli, "/p/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		Expect(s.WaitForSync(ctx)).To(Succeed())
		stop() // the controller is down

		_, err = cli.Delete(ctx, "/p/a")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/p/b", "2")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/p/d", "1")
		Expect(err).NotTo(HaveOccurred())
		_, err = c.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())

		stop = run(s, rec.handle) // resumes from the last seen revision, finds it compacted
		defer stop()
		want := etcdState(ctx, cli, "/p/")
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(want))
		Expect(s.Stats().Relists).To(Equal(1))
		Expect(s.Stats().Lists).To(Equal(2))
		_, evs := rec.snapshot()
		var diff []string
		for _, e := range evs[3:] {
			diff = append(diff, e.Type.String()+" "+e.Key)
		}
		Expect(diff).To(ConsistOf("DELETE /p/a", "PUT /p/b", "PUT /p/d"), "the relist delivers exactly the differences")
	})

	It("goes on after etcd restarts without a relist and without losing changes", func(ctx SpecContext) {
		s, err := source.New(cli, "/r/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		_, err = cli.Put(ctx, "/r/before", "1")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() int { _, evs := rec.snapshot(); return len(evs) }).Should(Equal(1))

		Expect(c.Restart(ctx, 0)).To(Succeed())
		Eventually(func() error { _, err := cli.Put(ctx, "/r/after", "2"); return err }).Should(Succeed())
		want := etcdState(ctx, cli, "/r/")
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(want))
		Expect(s.Stats().Lists).To(Equal(1), "a break resumes the watch, it does not relist")
		_, evs := rec.snapshot()
		Expect(evs).To(HaveLen(2), "no event delivered twice")
	})

	It("replays history from a start revision", func(ctx SpecContext) {
		first, err := cli.Put(ctx, "/h/k", "1")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/h/k", "2")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/h/k", "3")
		Expect(err).NotTo(HaveOccurred())
		s, err := source.New(cli, "/h/", source.Options{StartRevision: first.Header.Revision})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Eventually(func() []string {
			_, evs := rec.snapshot()
			var vs []string
			for _, e := range evs {
				vs = append(vs, string(e.KV.Value))
			}
			return vs
		}).Should(Equal([]string{"1", "2", "3"}))
	})

	It("replays the whole history from revision 1, and refuses a start in the future", func(ctx SpecContext) {
		_, err := cli.Put(ctx, "/h1/a", "1")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Put(ctx, "/h1/b", "1")
		Expect(err).NotTo(HaveOccurred())
		last, err := cli.Delete(ctx, "/h1/a")
		Expect(err).NotTo(HaveOccurred())
		s, err := source.New(cli, "/h1/", source.Options{StartRevision: 1})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Eventually(func() []string {
			_, evs := rec.snapshot()
			var out []string
			for _, e := range evs {
				out = append(out, e.Type.String()+" "+e.Key)
			}
			return out
		}).Should(Equal([]string{"PUT /h1/a", "PUT /h1/b", "DELETE /h1/a"}))

		future, err := source.New(cli, "/h1/", source.Options{StartRevision: last.Header.Revision + 1000})
		Expect(err).NotTo(HaveOccurred())
		Expect(future.Run(ctx, func(source.Event) {})).To(MatchError(ContainSubstring("beyond etcd's current revision")))
	})

	It("never reports a revision whose transaction is only half in its cache", func(ctx SpecContext) {
		s, err := source.New(cli, "/txn/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		var mu sync.Mutex
		var torn []string
		var txnRev atomic.Int64
		// The handler runs between the events of one response: whenever the revision says
		// the transaction is seen, all of its keys must be in the cache.
		stop := run(s, func(e source.Event) {
			if rev := txnRev.Load(); rev > 0 && s.Revision() >= rev && s.Len() < 50 {
				mu.Lock()
				torn = append(torn, fmt.Sprintf("revision %d seen with %d of 50 keys cached", s.Revision(), s.Len()))
				mu.Unlock()
			}
		})
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		ops := make([]clientv3.Op, 50)
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("/txn/%02d", i), "v")
		}
		// The revision the transaction will get: the next one.
		resp, err := cli.Get(ctx, "/txn/none")
		Expect(err).NotTo(HaveOccurred())
		txnRev.Store(resp.Header.Revision + 1)
		tr, err := cli.Txn(ctx).Then(ops...).Commit()
		Expect(err).NotTo(HaveOccurred())
		Expect(tr.Header.Revision).To(Equal(txnRev.Load()))
		Eventually(s.Len).Should(Equal(50))
		Eventually(s.Revision).Should(Equal(tr.Header.Revision))
		mu.Lock()
		defer mu.Unlock()
		Expect(torn).To(BeEmpty())
	})

	It("WaitForRevision returns once a write is in the cache, and honours its context", func(ctx SpecContext) {
		s, err := source.New(cli, "/wait/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		stop := run(s, func(source.Event) {})
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		resp, err := cli.Put(ctx, "/wait/a", "1")
		Expect(err).NotTo(HaveOccurred())
		Expect(s.WaitForRevision(ctx, resp.Header.Revision)).To(Succeed())
		kv, ok := s.Get("/wait/a")
		Expect(ok).To(BeTrue())
		Expect(kv.ModRevision).To(Equal(resp.Header.Revision))

		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		Expect(s.WaitForRevision(short, resp.Header.Revision+1000)).To(MatchError(context.DeadlineExceeded))
	})

	It("filters events with predicates", func(ctx SpecContext) {
		s, err := source.New(cli, "/f/", source.Options{Predicates: []source.Predicate{source.ValueChanged()}})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()
		Expect(s.WaitForSync(ctx)).To(Succeed())
		for _, v := range []string{"x", "x", "y"} {
			_, err := cli.Put(ctx, "/f/k", v)
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() string { st, _ := rec.snapshot(); return st["/f/k"] }).Should(Equal("y"))
		_, evs := rec.snapshot()
		Expect(evs).To(HaveLen(2), "the write that did not change the value is filtered")
	})

	It("rejects bad options with clear errors", func() {
		_, err := source.New(cli, "", source.Options{})
		Expect(err).To(MatchError(ContainSubstring("prefix must not be empty")))
		_, err = source.New(nil, "/x/", source.Options{})
		Expect(err).To(MatchError(ContainSubstring("client must not be nil")))
		_, err = source.New(cli, "/x/", source.Options{PageSize: -1})
		Expect(err).To(MatchError(ContainSubstring("PageSize must not be negative, got -1")))
		s, err := source.New(cli, "/x/", source.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Run(context.Background(), nil)).To(MatchError(ContainSubstring("handler must not be nil")))
	})
})
