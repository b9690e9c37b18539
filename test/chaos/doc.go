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
//     member logs the outcome of every write (key, revision, shard, token). In the range
//     mode (TestChaosRanges, or MODE=ranges) the members shard by slices
//     (manager.RangeShards) and a write's shard is its slice.
//   - Lock holders: two or three processes that take lock.New(...) in turn and, under it,
//     read the counter and write counter+1 in a transaction guarded by the lock (Guard) and
//     the counter's mod revision, logging each accepted write with its token and revision.
//   - Leader-only work: two or three candidates of one election (election.New and a
//     LeaderTask); at the start of each leadership the leader writes /leader/out/<n>, one
//     key after another, through store writes fenced by its term (fence.With and the
//     term's Guard, as a manager fences its leader-only writes), until the leadership
//     ends. Each candidate logs its leaderships (token) and every write (token, revision).
//   - Discovery and config: a registrar registers and deregisters instances of one service
//     (discovery.Registry, on leases of the TTL) and sets and deletes configuration values
//     (config.Manager) in a loop; two viewers in other processes follow both, with a
//     Registry.Watch and a config Manager's cache (GetAll), and log each view when it
//     changes and at exit. Once the faults end the registrar stops changing anything
//     (SIGUSR1) and keeps its instances registered.
//   - A writer in the driver that keeps changing the items.
//
// The lock holders also log each read of the counter and, before sending it, each write
// (its call), so that the linearizability checker knows every operation's call and return
// times, including those of a write cut short by kill -9.
//
// # Faults
//
// kill -9 and restart of a workload process (as a new incarnation with a new ID), SIGSTOP
// of a workload process past its lease TTL then SIGCONT, kill -9 and restart of an etcd
// member (sometimes the leader), SIGSTOP and SIGCONT of an etcd member (sometimes the
// leader), defragmentation of an etcd member (Maintenance.Defragment on its endpoint,
// sometimes the leader's; the evidence gives its database's size before and after and
// how long it took), compaction below the revision the recorder has confirmed, and faults
// of the network between a workload process and etcd. Each workload slot reaches etcd
// through proxies of its own (etcdtest.SilentProxy, one per etcd member, kept across the
// slot's incarnations; the recorder and the driver connect directly), which keep every
// connection open while they stop forwarding:
//
//   - partition workload: the process is cut off from every member, both ways, past its
//     lease TTL (TTL + 0.5-2.5 s), then let back;
//   - one-way partition: likewise, but only one direction is held, half the time etcd's
//     answers (the requests reach etcd), half the time the requests;
//   - partial partition: the proxy to one member only (half the time etcd's leader) stops
//     both ways for 2-5 s, so that the client must fail over to another member.
//
// A pause's or a partition's evidence gives how long it lasted against the TTL, whether
// etcd expired the process's lease meanwhile (keys of its deleted during the fault), and
// for a partition how many reads the proxies held back (for a partial one, also how many
// answers came through the other members meanwhile). A partition's failover is measured
// as a pause's of the same role; a partial partition's, until etcd answers (through
// another member) an operation of the process's begun after the cut. Latency is not
// injected: the proxies forward at once or not at all.
//
// The workload faults hit any workload's process, drawn evenly among the workloads: a
// lock holder's half the time whichever holds the lock, a candidate's half the time
// whichever leads. At most two faults run at once, at most one of them on etcd (quorum is kept),
// with quiet windows between groups. The schedule is drawn from SEED alone, before the
// run: the same seed replays the same schedule (which member is etcd's leader, which
// process holds the lock or leads, is resolved when the fault starts).
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
//  3. linearizable: the lock holders' reads and writes of the counter, with their call
//     and return times (the processes' wall clocks, on one machine), are linearizable as
//     one register, by Porcupine. A write is one compare-and-set from the value read to
//     the next; one whose outcome is unknown (no answer, or its process killed) counts as
//     applied, returning when the recorder received it, if etcd's history has its value
//     (values are unique), and is left out otherwise; refused writes are left out. The
//     history is checked in windows of at least 200 operations cut where none is in flight,
//     each starting from the value the windows before left; a window not decided within
//     5 s counts as a failure;
//  4. leader: every accepted write of /leader/out/ was made while the oldest key under the
//     election's prefix (the leader key) had the writer as its value and the write's token
//     as its create revision, and tokens of accepted writes never go back: no two
//     leaderships overlap in accepted writes;
//  5. records: every write a process logged as accepted is in etcd's history as logged;
//  6. views: once the registrar has stopped, every running viewer's last discovery and
//     config views equal etcd's content within a bound (the time it took is reported);
//  7. convergence: once the faults end and the writer stops, every item's latest value
//     reaches its output within a bound (the time it took is reported);
//  8. leases: none is left once the workloads have stopped;
//  9. no report of the race detector in a workload's output.
//
// In the range mode the fencing checker also follows the slice map (test/rangecheck): no
// two owned slices may overlap at the end of a revision, and each write's item must lie
// in the slice its token is of.
//
// TestChaosNegative runs a short campaign of pauses (a partition may leave an unsafe
// holder nothing to write once it is back, so it does not always make a violation) whose
// workloads write without the fence, ignore a lost lock, ignore a lost
// leadership (the leader goes on writing, unfenced, under its old token) and whose viewer
// reads once and never follows, and asserts that the fencing, counter, leader and views
// checkers catch it. TestLinearCheckerCatches feeds the linearizability checker the
// histories of a broken counter (a stale read, a lost update, a read of a value not yet
// written) and of a correct one, and asserts its verdicts.
package chaos
