package source_test

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/source"
)

// Predicates combine with And, Or and Not. A resync (a key replayed from a list or a
// cache, Initial set) is judged by the key and value filters as a live put is, and passes
// the change filters.
func Example_predicates() {
	spec, err := source.KeyGlob("/jobs/*/spec")
	if err != nil {
		fmt.Println(err)
		return
	}
	enabled := source.NewPredicateFuncs(func(kv *mvccpb.KeyValue) bool { return string(kv.Value) != "disabled" })
	p := source.And(spec, enabled, source.ValueChanged())

	state := func(key, value string, mod int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(key), Value: []byte(value), CreateRevision: 2, ModRevision: mod}
	}
	for _, ev := range []struct {
		what string
		e    source.Event
	}{
		{"live create", source.Event{Type: source.Put, Key: "/jobs/a/spec", KV: state("/jobs/a/spec", "run", 2)}},
		{"live write of the same value", source.Event{Type: source.Put, Key: "/jobs/a/spec", KV: state("/jobs/a/spec", "run", 3), PrevKV: state("/jobs/a/spec", "run", 2)}},
		{"live update to disabled", source.Event{Type: source.Put, Key: "/jobs/a/spec", KV: state("/jobs/a/spec", "disabled", 4), PrevKV: state("/jobs/a/spec", "run", 3)}},
		{"resync of an enabled spec", source.Event{Type: source.Put, Key: "/jobs/b/spec", KV: state("/jobs/b/spec", "run", 3), Initial: true}},
		{"resync of a disabled spec", source.Event{Type: source.Put, Key: "/jobs/c/spec", KV: state("/jobs/c/spec", "disabled", 3), Initial: true}},
		{"resync of a status", source.Event{Type: source.Put, Key: "/jobs/b/status", KV: state("/jobs/b/status", "done", 3), Initial: true}},
	} {
		fmt.Printf("%-30s resync=%-5v passes=%v\n", ev.what, ev.e.IsResync(), p(ev.e))
	}
	// Output:
	// live create                    resync=false passes=true
	// live write of the same value   resync=false passes=false
	// live update to disabled        resync=false passes=false
	// resync of an enabled spec      resync=true  passes=true
	// resync of a disabled spec      resync=true  passes=false
	// resync of a status             resync=true  passes=false
}
