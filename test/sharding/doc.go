// Package sharding is the multi-process suite of a sharded manager. Each member of the
// manager runs in its own OS process (the suite's test binary started again) against a
// three-member etcd cluster of processes, so that a member can be killed with -9, paused
// with SIGSTOP past its lease or stopped with SIGTERM, and etcd's own leader can be killed
// while items are written.
//
// # What a member records
//
// A member reconciles the items under /items/ and writes /out/<item> through store, fenced
// by its shard's token. Around each reconcile it appends a "start" and an "end" record to
// its history file (JSON lines: member, key, shard, token, wall time, and the outcome of its
// write). The reconcile takes 20 to 50 ms, so that two members working on one key at once
// would show as overlapping intervals; its write, once begun, ignores the end of the
// reconcile's context (it keeps the fence), as a write already on the wire would, so that
// only the fence stands between a member that lost its shard and etcd.
//
// # What the checkers read
//
// Every spec ends with checkers over both histories: the members' records and etcd's own
// revisions of /out/. The fencing checker reads every accepted write of /out/ and asks etcd
// whether, at that revision, owners/<shard> had the write's token as its create revision
// (invariant I3), and whether each shard's tokens grow with the revisions. The overlap
// checker finds two members reconciling the same key at once (I4, and I2 when a member's
// reconciles must stop with its lease). The record checker matches every write a member
// recorded as accepted with etcd's history, and the other way round. Convergence compares
// every /out/<item> with the item's latest value and its shard's current owner, and a
// settled assignment is one where every member serves, by its /debug/shards, exactly the
// shards etcd says it owns. Members run the test binary, so under -race the race detector
// watches them too: a report in a member's output fails the spec.
package sharding
