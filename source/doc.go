// Package source feeds controllers from an etcd prefix: a consistent, paged list at
// revision R, then a watch from R+1 that resumes where it stopped after any break, and a
// local cache that reconcilers read instead of etcd.
//
// # Guarantees
//
//   - The initial list is one snapshot at revision R, read in pages (WithRev(R)), never one
//     giant range.
//   - The watch starts at R+1 with WithPrevKV, WithProgressNotify and WithRequireLeader. The
//     last seen revision advances with events and with progress notifications.
//   - A broken watch resumes from the last seen revision + 1, with backoff.
//   - After ErrCompacted the source relists at the current revision and diffs the result
//     against its cache: a Put for every new or changed key, a Delete for every key that
//     vanished. No change of the final state is lost.
//   - An event at or below the ModRevision the cache holds for its key is a duplicate and is
//     dropped.
//
// Handlers run on the source's own goroutine, in revision order, after the cache has taken
// the event: a handler that reads the cache sees at least the state of its event. Handlers
// must not block; a controller's handler only adds keys to its work queue.
//
// # Predicates
//
// A Predicate drops events before they reach a handler: a source's own (Options.Predicates,
// Spec.WithPredicates), or a controller's for all its sources (reconcile.Options.EventFilters,
// manager.Builder.WithEventFilter). And, Or and Not combine them; the built-ins are
// ValueChanged, CreateOnly, UpdateOnly, DeleteOnly, the key filters KeyHasPrefix, KeyGlob
// and KeyMatches, and NewPredicateFuncs, a filter over the state of an event's key.
//
// Keys are judged again, as resyncs, when a source lists (at its start, and after a
// compaction) and when a controller starts to lead or claims a shard (it replays its
// caches: Controller.Resync, ResyncWhere), so that no key that a previous owner left
// unreconciled is skipped. A resync (Event.IsResync: a Put with Initial set) tells what the
// key is now, not what changed:
//
//   - key and value filters (KeyHasPrefix, KeyGlob, KeyMatches, NewPredicateFuncs) judge it
//     as any put, so they drop the same keys on a resync as live;
//   - change filters (ValueChanged, UpdateOnly) let it through;
//   - CreateOnly lets it through unless it is a relist's put of a key the source held
//     already, in the same life: that is an update;
//   - DeleteOnly drops it;
//   - Not inverts its predicate, resyncs included: Not(ValueChanged()) drops every resync.
package source
