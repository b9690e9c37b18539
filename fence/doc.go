// Package fence carries the ownership a write depends on.
//
// A controller's reconcile runs with a Fence in its context (With): comparisons that hold
// only while its process still owns the work, such as the create revision of a shard's
// owner key or the leader key. Every store write made with that context adds the
// comparisons to its transaction, so a process paused or partitioned past its lease can
// never have a write accepted: it gets an error that wraps ErrFenced. Code that builds its
// own transactions adds From(ctx)'s comparisons the same way.
//
// The package is a leaf: store, reconcile and manager share it without depending on one
// another for it.
package fence
