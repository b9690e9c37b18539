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
//
// # Faults of etcd itself
//
// One ordered set of specs (etcdfaults_test.go) runs a manager whose members have a
// LeaseTTL of 5 s, with three lock holders in the suite's process (lockers_test.go) that
// take one lock in turn and increment a counter under it with a write fenced by the lock,
// through a rolling restart of etcd, a kill -9 of etcd's leader and a SIGSTOP of it past an
// election. Through each, no member's record or candidacy is made again (no session lost),
// no owner key changes (no shard moved), no lock round fails, and etcd's history of the
// counter goes up by one at every write, each made while its hold headed the lock's queue
// (a retried write applied at most once). etcd 3.7 may revoke every lease when its paused
// leader resumes (its own flaw, detected from the member's count of expired leases): the
// spec then holds the pause itself to the same rules and accepts the losses at the resume.
package sharding
