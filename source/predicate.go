package source

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Predicate decides whether an event goes on: a source's predicates (Options.Predicates,
// Spec.WithPredicates) stand between its events and its handler, a controller's event
// filters (reconcile.Options.EventFilters, manager.Builder.WithEventFilter) between the
// events of all its sources and its event handlers. The same predicates judge a
// controller's resyncs (see Event.IsResync), so that a filter drops the same keys whether
// they come from the watch or from a resync.
//
// A predicate must be quick and must not block: it runs on the source's goroutine and on
// the goroutine of a resync, possibly at the same time, so it must also be safe for
// concurrent use. A nil Predicate is an error wherever predicates are given, and And, Or,
// Not, KeyMatches and NewPredicateFuncs return nil when they are given a nil argument, so
// that a mistake inside a combination is reported where the combination is used. Package
// source's documentation says how each built-in treats a resync.
type Predicate func(Event) bool

// IsResync reports whether e is a resync: a Put that states what the key is now rather than
// what changed, with Initial set. A source's initial list and its relists after a
// compaction deliver one for every new or changed key (PrevKV is the cached state for a
// key the source knew, nil otherwise), and a controller replays every cached key as one
// (PrevKV nil) when it starts to lead, claims a shard, or is asked to (Controller.Resync).
// A resync may stand for changes that no one has reconciled yet (the previous owner of a
// shard may have stopped before it got to them), so change filters pass it.
func (e Event) IsResync() bool { return e.Initial && e.Type == Put }

// ValueChanged passes deletes and puts whose value differs from the previous one, dropping
// writes that changed only the revision. Live events: a put passes when PrevKV is nil (a
// create) or its value differs. Resyncs: passed, whatever PrevKV holds.
func ValueChanged() Predicate {
	return func(e Event) bool {
		return e.Type == Delete || e.IsResync() || e.PrevKV == nil || !bytes.Equal(e.PrevKV.Value, e.KV.GetValue())
	}
}

// CreateOnly passes puts of a key the event does not show to have existed before: PrevKV
// nil, or a PrevKV of an earlier life of the key (another CreateRevision: the key was
// deleted and created again while a relist's history was compacted away). Live events:
// creates pass, updates and deletes are dropped. Resyncs: those from a controller's cache
// and a source's initial list pass (PrevKV nil); a relist's put of a key the source held
// in the same life is an update and is dropped. Deletes, a relist's included, are dropped.
func CreateOnly() Predicate {
	return func(e Event) bool {
		return e.Type == Put && (e.PrevKV == nil || e.PrevKV.CreateRevision != e.KV.GetCreateRevision())
	}
}

// UpdateOnly passes puts of a key that existed before. Live events: a put with PrevKV
// passes; creates and deletes are dropped. Resyncs: passed, PrevKV or not (a resync may
// stand for updates no one has reconciled). Deletes, a relist's included, are dropped.
func UpdateOnly() Predicate {
	return func(e Event) bool {
		return e.Type == Put && (e.IsResync() || e.PrevKV != nil)
	}
}

// DeleteOnly passes deletes: live ones, and the deletes a relist delivers for keys that
// vanished while the watch's history was compacted away. Every put is dropped, resyncs
// included. A resync replays the keys that exist, so it cannot bring back a delete that a
// previous owner of the key missed.
func DeleteOnly() Predicate {
	return func(e Event) bool { return e.Type == Delete }
}

// KeyMatches passes the events whose key fn returns true for, live events and resyncs
// alike. It returns nil when fn is nil.
func KeyMatches(fn func(key string) bool) Predicate {
	if fn == nil {
		return nil
	}
	return func(e Event) bool { return fn(e.Key) }
}

// KeyHasPrefix passes the events whose key starts with prefix, live events and resyncs
// alike.
func KeyHasPrefix(prefix string) Predicate {
	return func(e Event) bool { return strings.HasPrefix(e.Key, prefix) }
}

// KeyGlob passes the events whose whole key matches pattern, in the syntax of path.Match
// (a '*' or '?' does not match '/': "/jobs/*/spec" matches "/jobs/a/spec" but not
// "/jobs/a/b/spec"), live events and resyncs alike. A malformed pattern is an error that
// names it.
func KeyGlob(pattern string) (Predicate, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("source: KeyGlob(%q): %w", pattern, err)
	}
	return func(e Event) bool {
		ok, _ := path.Match(pattern, e.Key)
		return ok
	}, nil
}

// NewPredicateFuncs passes the events whose state filter returns true for, as
// controller-runtime's predicate.NewPredicateFuncs does with an event's object: a key or
// value filter. A put is judged by its new state (KV), a live put and a resync alike, so a
// key whose value leaves the filter is dropped like one that never matched; a delete by the
// state it deleted (PrevKV, or a KeyValue that holds only the key when that is unknown). It
// returns nil when filter is nil. filter must not modify the KeyValue.
func NewPredicateFuncs(filter func(kv *mvccpb.KeyValue) bool) Predicate {
	if filter == nil {
		return nil
	}
	return func(e Event) bool {
		kv := e.KV
		if e.Type == Delete {
			kv = e.PrevKV
		}
		if kv == nil {
			kv = &mvccpb.KeyValue{Key: []byte(e.Key)}
		}
		return filter(kv)
	}
}

// And passes the events that every one of ps passes (every event when ps is empty),
// asking them in order until one drops it. It returns nil when any of ps is nil.
func And(ps ...Predicate) Predicate {
	if hasNil(ps) {
		return nil
	}
	ps = slices.Clone(ps)
	return func(e Event) bool {
		for _, p := range ps {
			if !p(e) {
				return false
			}
		}
		return true
	}
}

// Or passes the events that at least one of ps passes (none when ps is empty), asking them
// in order until one passes it. It returns nil when any of ps is nil.
func Or(ps ...Predicate) Predicate {
	if hasNil(ps) {
		return nil
	}
	ps = slices.Clone(ps)
	return func(e Event) bool {
		for _, p := range ps {
			if p(e) {
				return true
			}
		}
		return false
	}
}

// Not passes the events that p drops, resyncs included: Not of a change filter
// (ValueChanged, UpdateOnly) drops every resync. It returns nil when p is nil.
func Not(p Predicate) Predicate {
	if p == nil {
		return nil
	}
	return func(e Event) bool { return !p(e) }
}

// Accepts reports whether e passes the source's predicates (Options.Predicates). A
// controller asks it about the events of its resyncs, which do not come from the source,
// so that they are filtered as the source filters its own.
func (s *Source) Accepts(e Event) bool {
	for _, p := range s.opts.Predicates {
		if !p(e) {
			return false
		}
	}
	return true
}

// WithPredicates returns the spec with ps added to its Options.Predicates: the predicates
// of one watch, applied to its live events and to the controller's resyncs of its keys
// alike. Call it after WithOptions, which replaces the options. A nil predicate is reported
// when the source is made.
func (s Spec) WithPredicates(ps ...Predicate) Spec {
	s.Options.Predicates = append(slices.Clip(s.Options.Predicates), ps...)
	return s
}

// hasNil reports whether any of ps is nil.
func hasNil(ps []Predicate) bool {
	return slices.ContainsFunc(ps, func(p Predicate) bool { return p == nil })
}

// checkPredicates returns an error naming the first nil predicate of ps.
func checkPredicates(what string, ps []Predicate) error {
	for i, p := range ps {
		if p == nil {
			return fmt.Errorf("%s[%d] is nil (a nil predicate, or an And, Or, Not, KeyMatches or NewPredicateFuncs given a nil argument)", what, i)
		}
	}
	return nil
}
