// Package chaos is a fault campaign in the manner of Jepsen: workloads run as real
// processes (the package's test binary started again) against a three-member etcd cluster
// of processes, under a random schedule of overlapping faults drawn from one seed; every
// event of etcd's history is recorded, and checkers read it afterwards with the processes'
// own histories.
//
// # Workloads
//
//   - A sharded controller: a manager with Sharding in two or three member processes,
//     copying every /items/<n> to /out/<n> through store writes fenced by the shard. Each
//     member logs the outcome of every write (key, revision, shard, token).
//   - Lock holders: two or three processes that take lock.New(...) in turn and, under it,
//     read the counter and write counter+1 in a transaction guarded by the lock (Guard) and
//     the counter's mod revision, logging each accepted write with its token and revision.
//   - A writer in the driver that keeps changing the items.
//
// # Faults
//
// kill -9 and restart of a workload process (as a new incarnation with a new ID), SIGSTOP
// of a workload process past its lease TTL then SIGCONT, kill -9 and restart of an etcd
// member (sometimes the leader), SIGSTOP and SIGCONT of an etcd member (sometimes the
// leader), and compaction below the revision the recorder has confirmed. At most two
// faults run at once, at most one of them on etcd (quorum is kept), with quiet windows
// between groups. The schedule is drawn from SEED alone, before the run: the same seed
// replays the same schedule (which member is etcd's leader is resolved when the fault
// starts).
//
// # Checkers
//
// From the recorder's history (a watch of the whole keyspace from revision 1, on a client
// of its own that no fault touches) replayed revision by revision:
//
//  1. fencing: every accepted write of /out/ was made while owners/<shard> had the
//     writer as its value and the writer's token as its create revision, and a shard's
//     tokens never go back;
//  2. counter: the counter's writes form one chain (each value the previous plus one, no
//     value twice), tokens never go back, and each was made while its token headed the
//     lock's queue;
//  3. records: every write a process logged as accepted is in etcd's history as logged;
//  4. convergence: once the faults end and the writer stops, every item's latest value
//     reaches its output within a bound (the time it took is reported);
//  5. leases: none is left once the workloads have stopped;
//  6. no report of the race detector in a workload's output.
//
// TestChaosNegative runs a short campaign whose workloads write without the fence and
// ignore a lost lock, and asserts that the checkers catch it.
package chaos
