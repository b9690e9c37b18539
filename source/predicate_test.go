package source_test

import (
	"context"
	"sort"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// kv is the state of key k in its life created at revision create, written at mod.
func kv(k, v string, create, mod int64) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), CreateRevision: create, ModRevision: mod}
}

// The kinds of events a predicate meets, as a source and a controller make them.
var catalogue = map[string]source.Event{
	// From the watch.
	"live create":         {Type: source.Put, Key: "/k", KV: kv("/k", "1", 5, 5)},
	"live update":         {Type: source.Put, Key: "/k", KV: kv("/k", "2", 5, 6), PrevKV: kv("/k", "1", 5, 5)},
	"live rewrite":        {Type: source.Put, Key: "/k", KV: kv("/k", "1", 5, 6), PrevKV: kv("/k", "1", 5, 5)},
	"live delete":         {Type: source.Delete, Key: "/k", KV: &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: 7}, PrevKV: kv("/k", "1", 5, 5)},
	"live delete, prev ?": {Type: source.Delete, Key: "/k", KV: &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: 7}},
	// From a list: the initial one, and a relist's differences after a compaction.
	"list":            {Type: source.Put, Key: "/k", KV: kv("/k", "1", 5, 5), Initial: true},
	"relist update":   {Type: source.Put, Key: "/k", KV: kv("/k", "2", 5, 9), PrevKV: kv("/k", "1", 5, 5), Initial: true},
	"relist rewrite":  {Type: source.Put, Key: "/k", KV: kv("/k", "1", 5, 9), PrevKV: kv("/k", "1", 5, 5), Initial: true},
	"relist recreate": {Type: source.Put, Key: "/k", KV: kv("/k", "1", 8, 9), PrevKV: kv("/k", "1", 5, 5), Initial: true},
	"relist delete":   {Type: source.Delete, Key: "/k", KV: &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: 9}, PrevKV: kv("/k", "1", 5, 5), Initial: true},
	// A controller's resync of a cached key (Controller.Resync, ResyncWhere).
	"resync": {Type: source.Put, Key: "/k", KV: kv("/k", "1", 5, 6), Initial: true},
}

// passed returns the kinds of the catalogue that p passes, sorted.
func passed(p source.Predicate) []string {
	var out []string
	for kind, e := range catalogue {
		if p(e) {
			out = append(out, kind)
		}
	}
	sort.Strings(out)
	return out
}

var (
	yes = source.Predicate(func(source.Event) bool { return true })
	no  = source.Predicate(func(source.Event) bool { return false })
)

var _ = Describe("predicates", func() {
	It("tell resyncs from other events", func() {
		var resyncs []string
		for kind, e := range catalogue {
			if e.IsResync() {
				resyncs = append(resyncs, kind)
			}
		}
		Expect(resyncs).To(ConsistOf("list", "relist update", "relist rewrite", "relist recreate", "resync"))
	})

	DescribeTable("built-in change filters, on live events and resyncs",
		func(p source.Predicate, want []string) {
			Expect(passed(p)).To(ConsistOf(want))
		},
		Entry("ValueChanged drops only a live put of the same value", source.ValueChanged(),
			[]string{"live create", "live update", "live delete", "live delete, prev ?",
				"list", "relist update", "relist rewrite", "relist recreate", "relist delete", "resync"}),
		Entry("CreateOnly passes puts of keys not known before, resyncs from a cache included", source.CreateOnly(),
			[]string{"live create", "list", "relist recreate", "resync"}),
		Entry("UpdateOnly passes updates and every resync", source.UpdateOnly(),
			[]string{"live update", "live rewrite", "list", "relist update", "relist rewrite", "relist recreate", "resync"}),
		Entry("DeleteOnly passes deletes only, no resync", source.DeleteOnly(),
			[]string{"live delete", "live delete, prev ?", "relist delete"}),
		Entry("Not(ValueChanged) passes only a live put of the same value", source.Not(source.ValueChanged()),
			[]string{"live rewrite"}),
	)

	It("judges keys the same way live and on a resync", func() {
		glob, err := source.KeyGlob("/jobs/*/spec")
		Expect(err).NotTo(HaveOccurred())
		preds := map[string]source.Predicate{
			"KeyHasPrefix": source.KeyHasPrefix("/jobs/a"),
			"KeyGlob":      glob,
			"KeyMatches":   source.KeyMatches(func(k string) bool { return len(k) == len("/jobs/a/spec") }),
		}
		want := map[string][]string{
			"KeyHasPrefix": {"/jobs/a/spec", "/jobs/a/b/spec"},
			"KeyGlob":      {"/jobs/a/spec", "/jobs/b/spec"},
			"KeyMatches":   {"/jobs/a/spec", "/jobs/b/spec"},
		}
		keys := []string{"/jobs/a/spec", "/jobs/b/spec", "/jobs/a/b/spec", "/jobs/b/status", "/other"}
		for name, p := range preds {
			var live, resync, del []string
			for _, k := range keys {
				if p(source.Event{Type: source.Put, Key: k, KV: kv(k, "x", 3, 4), PrevKV: kv(k, "w", 3, 3)}) {
					live = append(live, k)
				}
				if p(source.Event{Type: source.Put, Key: k, KV: kv(k, "x", 3, 4), Initial: true}) {
					resync = append(resync, k)
				}
				if p(source.Event{Type: source.Delete, Key: k, KV: &mvccpb.KeyValue{Key: []byte(k), ModRevision: 5}}) {
					del = append(del, k)
				}
			}
			Expect(live).To(ConsistOf(want[name]), name)
			Expect(resync).To(Equal(live), name)
			Expect(del).To(Equal(live), name)
		}
	})

	It("judge a value by the new state of a put, live or resync, and the deleted state of a delete", func() {
		on := source.NewPredicateFuncs(func(kv *mvccpb.KeyValue) bool { return string(kv.Value) == "on" })
		for _, tc := range []struct {
			e    source.Event
			want bool
		}{
			{source.Event{Type: source.Put, Key: "/k", KV: kv("/k", "on", 3, 3)}, true},
			{source.Event{Type: source.Put, Key: "/k", KV: kv("/k", "off", 3, 4), PrevKV: kv("/k", "on", 3, 3)}, false},
			{source.Event{Type: source.Put, Key: "/k", KV: kv("/k", "on", 3, 4), PrevKV: kv("/k", "off", 3, 3)}, true},
			{source.Event{Type: source.Put, Key: "/k", KV: kv("/k", "on", 3, 4), Initial: true}, true},
			{source.Event{Type: source.Put, Key: "/k", KV: kv("/k", "off", 3, 4), Initial: true}, false},
			{source.Event{Type: source.Delete, Key: "/k", KV: &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: 5}, PrevKV: kv("/k", "on", 3, 4)}, true},
			{source.Event{Type: source.Delete, Key: "/k", KV: &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: 5}, PrevKV: kv("/k", "off", 3, 4)}, false},
			{source.Event{Type: source.Delete, Key: "/k", KV: &mvccpb.KeyValue{Key: []byte("/k"), ModRevision: 5}}, false},
		} {
			Expect(on(tc.e)).To(Equal(tc.want), "%+v", tc.e)
		}
		// A delete whose deleted state is unknown shows the filter its key.
		byKey := source.NewPredicateFuncs(func(kv *mvccpb.KeyValue) bool { return string(kv.Key) == "/k" })
		Expect(byKey(catalogue["live delete, prev ?"])).To(BeTrue())
	})

	DescribeTable("And, Or and Not",
		func(p source.Predicate, want bool) {
			for kind, e := range catalogue {
				Expect(p(e)).To(Equal(want), kind)
			}
		},
		Entry("And() is true", source.And(), true),
		Entry("And(T) is T", source.And(yes), true),
		Entry("And(F) is F", source.And(no), false),
		Entry("And(T, T) is T", source.And(yes, yes), true),
		Entry("And(T, F) is F", source.And(yes, no), false),
		Entry("And(F, T) is F", source.And(no, yes), false),
		Entry("And(F, F) is F", source.And(no, no), false),
		Entry("And(T, T, F) is F", source.And(yes, yes, no), false),
		Entry("Or() is false", source.Or(), false),
		Entry("Or(T) is T", source.Or(yes), true),
		Entry("Or(F) is F", source.Or(no), false),
		Entry("Or(T, T) is T", source.Or(yes, yes), true),
		Entry("Or(T, F) is T", source.Or(yes, no), true),
		Entry("Or(F, T) is T", source.Or(no, yes), true),
		Entry("Or(F, F) is F", source.Or(no, no), false),
		Entry("Or(F, F, T) is T", source.Or(no, no, yes), true),
		Entry("Not(T) is F", source.Not(yes), false),
		Entry("Not(F) is T", source.Not(no), true),
		Entry("Not(Not(T)) is T", source.Not(source.Not(yes)), true),
		Entry("Not(And(T, F)) is T", source.Not(source.And(yes, no)), true),
		Entry("And(Or(F, T), Not(F)) is T", source.And(source.Or(no, yes), source.Not(no)), true),
	)

	It("And and Or stop at the first answer that decides, in order", func() {
		var asked []string
		ask := func(name string, answer bool) source.Predicate {
			return func(source.Event) bool { asked = append(asked, name); return answer }
		}
		e := catalogue["live create"]
		Expect(source.And(ask("a", true), ask("b", false), ask("c", true))(e)).To(BeFalse())
		Expect(asked).To(Equal([]string{"a", "b"}))
		asked = nil
		Expect(source.Or(ask("a", false), ask("b", true), ask("c", false))(e)).To(BeTrue())
		Expect(asked).To(Equal([]string{"a", "b"}))
	})

	It("keep their members when the caller's slice changes", func() {
		ps := []source.Predicate{yes, yes}
		and := source.And(ps...)
		ps[1] = no
		Expect(and(catalogue["resync"])).To(BeTrue())
	})

	It("turn a nil member into a nil predicate, and a bad glob into an error naming it", func() {
		Expect(source.And(yes, nil)).To(BeNil())
		Expect(source.Or(nil)).To(BeNil())
		Expect(source.Not(nil)).To(BeNil())
		Expect(source.Not(source.And(nil))).To(BeNil())
		Expect(source.KeyMatches(nil)).To(BeNil())
		Expect(source.NewPredicateFuncs(nil)).To(BeNil())
		p, err := source.KeyGlob("/jobs/[a")
		Expect(p).To(BeNil())
		Expect(err).To(MatchError(ContainSubstring(`KeyGlob("/jobs/[a"): syntax error in pattern`)))
	})
})

// tape records what a predicate passes, and counts every event it judges.
type tape struct {
	mu     sync.Mutex
	p      source.Predicate
	passed []string
	judged int
}

// predicate judges with t.p, recording the event first when it passes.
func (t *tape) predicate(e source.Event) bool {
	ok := t.p(e)
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		v := ""
		if e.Type == source.Put {
			v = " " + string(e.KV.Value)
		}
		t.passed = append(t.passed, e.Type.String()+" "+e.Key+v)
	}
	t.judged++
	return ok
}

func (t *tape) read() ([]string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.passed...), t.judged
}

var _ = Describe("a source with predicates", func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
	})

	put := func(ctx context.Context, k, v string) {
		_, err := cli.Put(ctx, k, v)
		Expect(err).NotTo(HaveOccurred())
	}
	del := func(ctx context.Context, k string) {
		_, err := cli.Delete(ctx, k)
		Expect(err).NotTo(HaveOccurred())
	}

	It("passes the live events, the initial list and a relist's differences as each built-in says", func(ctx SpecContext) {
		put(ctx, "/e/gone", "1")
		put(ctx, "/e/old", "1")
		put(ctx, "/e/r", "1")
		tapes := map[string]*tape{
			"ValueChanged": {p: source.ValueChanged()},
			"CreateOnly":   {p: source.CreateOnly()},
			"UpdateOnly":   {p: source.UpdateOnly()},
			"DeleteOnly":   {p: source.DeleteOnly()},
		}
		srcs := map[string]*source.Source{}
		runAll := func() (stop func()) {
			var stops []func()
			for name, t := range tapes {
				if srcs[name] == nil {
					s, err := source.New(cli, "/e/", source.Options{Predicates: []source.Predicate{t.predicate}})
					Expect(err).NotTo(HaveOccurred())
					srcs[name] = s
				}
				stops = append(stops, run(srcs[name], func(source.Event) {}))
			}
			return func() {
				for _, s := range stops {
					s()
				}
			}
		}
		// judged waits until every source has judged n events, and returns what each passed.
		judged := func(n int) map[string][]string {
			out := map[string][]string{}
			for name, t := range tapes {
				Eventually(func() int { _, j := t.read(); return j }).Should(Equal(n), name)
				out[name], _ = t.read()
			}
			return out
		}

		stop := runAll()
		for _, s := range srcs {
			Expect(s.WaitForSync(ctx)).To(Succeed())
		}
		put(ctx, "/e/new", "1") // a create
		put(ctx, "/e/new", "1") // the same value again
		put(ctx, "/e/new", "2") // an update
		del(ctx, "/e/new")
		got := judged(3 + 4)
		list := []string{"PUT /e/gone 1", "PUT /e/old 1", "PUT /e/r 1"}
		Expect(got["ValueChanged"]).To(Equal(append(list, "PUT /e/new 1", "PUT /e/new 2", "DELETE /e/new")))
		Expect(got["CreateOnly"]).To(Equal(append(list, "PUT /e/new 1")))
		Expect(got["UpdateOnly"]).To(Equal(append(list, "PUT /e/new 1", "PUT /e/new 2")))
		Expect(got["DeleteOnly"]).To(Equal([]string{"DELETE /e/new"}))
		stop()

		// While the sources are stopped: the same value again, a new key, a key deleted and
		// created again, a key deleted; then the history is compacted, and the sources relist.
		put(ctx, "/e/old", "1")
		put(ctx, "/e/x", "1")
		del(ctx, "/e/r")
		put(ctx, "/e/r", "1")
		del(ctx, "/e/gone")
		_, err := c.Compact(ctx)
		Expect(err).NotTo(HaveOccurred())
		stop = runAll()
		defer stop()
		relisted := func(name string, before int) []string {
			all := judged(3 + 4 + 4)[name]
			return all[before:]
		}
		Expect(relisted("ValueChanged", 6)).To(ConsistOf("PUT /e/old 1", "PUT /e/r 1", "PUT /e/x 1", "DELETE /e/gone"))
		Expect(relisted("CreateOnly", 4)).To(ConsistOf("PUT /e/r 1", "PUT /e/x 1"))
		Expect(relisted("UpdateOnly", 5)).To(ConsistOf("PUT /e/old 1", "PUT /e/r 1", "PUT /e/x 1"))
		Expect(relisted("DeleteOnly", 1)).To(ConsistOf("DELETE /e/gone"))
		for name, s := range srcs {
			Expect(s.Stats().Relists).To(Equal(1), name)
		}
	})

	It("reports a nil predicate when it is made, naming the prefix and the place", func() {
		_, err := source.New(cli, "/n/", source.Options{Predicates: []source.Predicate{source.ValueChanged(), nil}})
		Expect(err).To(MatchError(ContainSubstring("source /n/: Options.Predicates[1] is nil")))
		_, err = source.Prefix("/n/").WithPredicates(source.And(source.ValueChanged(), nil)).New(cli)
		Expect(err).To(MatchError(ContainSubstring("source /n/: Options.Predicates[0] is nil")))
		_, err = source.Prefix("/n/").WithPredicates(source.KeyMatches(nil)).New(cli)
		Expect(err).To(MatchError(ContainSubstring("a nil argument")))
	})

	It("Spec.WithPredicates adds to the spec's predicates without touching the spec it came from", func() {
		base := source.Prefix("/s/").WithPredicates(yes)
		a := base.WithPredicates(no)
		b := base.WithPredicates(yes)
		Expect(base.Options.Predicates).To(HaveLen(1))
		Expect(a.Options.Predicates).To(HaveLen(2))
		Expect(b.Options.Predicates).To(HaveLen(2))
		e := catalogue["live create"]
		Expect(a.Options.Predicates[1](e)).To(BeFalse())
		Expect(b.Options.Predicates[1](e)).To(BeTrue())
		s, err := b.New(cli)
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Accepts(e)).To(BeTrue())
		s, err = a.New(cli)
		Expect(err).NotTo(HaveOccurred())
		Expect(s.Accepts(e)).To(BeFalse())
	})
})
