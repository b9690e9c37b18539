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
package source
