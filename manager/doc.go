// Package manager runs controllers and other long-running work against etcd: it connects,
// elects a leader among its replicas, feeds controllers from prefix watches, serves health
// probes and metrics, and shuts down gracefully.
//
// # Lifecycle
//
// New validates the Options (every default is documented on its field) and checks that
// etcd answers within the dial timeout. Start then starts, in order: the HTTP servers
// (/healthz, /readyz, /metrics, /debug/shards), the controllers' sources and their
// initial lists, the sharding member, the runnables that do not need leader election,
// the election, and, while this replica leads, the leader runnables. When Start's context
// ends it stops within GracefulShutdownTimeout: a sharding member hands over its shards,
// leader runnables end, controllers stop taking work and wait for the reconciles in
// flight, the other runnables end, the replica resigns, revokes its leases, and the
// servers close. No goroutine outlives Start.
//
// Elected returns a channel closed when the replica is first elected (at once with
// DisableLeaderElection), as controller-runtime's Manager.Elected.
//
// # Probes
//
// HealthProbeAddr serves /healthz for a liveness probe and /readyz for a readiness probe.
// /healthz checks the process only: with no check added (AddHealthzCheck) it serves a
// "ping" that passes whenever the server answers, so that an etcd outage, which every
// replica sees at once, does not restart them all. /readyz runs the built-in checks
// "etcd" (etcd answers within 800 ms), "session" (the replica's session is alive, with
// leader election), "caches" (the controllers have their initial lists) and "refusals"
// (etcd refuses no component for good, see Refusals), then those added with
// AddReadyzCheck. Each answers 200 "ok" when its checks pass, and otherwise 500 (/healthz)
// or 503 (/readyz) with a line per check, "[+]name ok" or "[-]name failed: error", as
// Kubernetes does; ?verbose lists the checks when they pass too, ?exclude=name skips one,
// and /healthz/<name> and /readyz/<name> run one check.
//
// # Leader-only controllers
//
// With leader election on, a controller reconciles only on the leader: its sources run and
// sync on every replica (a new leader starts with a warm cache), its workers drop what
// they take while the replica does not lead, and when it becomes the leader every cached
// key is queued again (a level-triggered resync). Each reconcile runs under a context
// that ends when the leadership does and that carries the leader key as its fence, so a
// store write from a replica that lost its leadership, even one that has not noticed yet,
// is refused by etcd.
//
// # Sharded controllers
//
// With Options.Sharding, the keys of the manager's controllers are spread over its
// replicas. Key k belongs to shard fnv1a64(ShardKey(k)) % Shards. Every replica (member)
// registers under "members/<id>" on its own session lease. The leader assigns shards to
// the active members, balanced (floor or ceil of S/N each), sticky and by rendezvous
// hashing, so a leave moves only the leaver's shards and a join only what the newcomer
// takes; it writes only the assignments that change, guarded by its leader key. A member
// claims a shard assigned to it once no one owns it, by creating "owners/<shard>" on its
// lease; that key's create revision is the shard's token. It then queues every cached key
// of the shard (a level-triggered resync) and reconciles them in a context that carries
// the fence CreateRevision(owners/<shard>) == token and ends when the ownership does. A
// shard assigned elsewhere is drained: its keys are no longer handed out, the reconciles
// in flight finish (up to DrainTimeout, then they are cancelled), and the owner key is
// deleted, guarded by the token; only then can the next owner claim it, so no key is
// reconciled by two members at once.
//
// A member stops handing out work when its lease may have expired by its own clock (the
// last keep-alive answer plus the TTL, less a margin), before etcd hands its shards to
// another member; a write it still attempts after that carries a stale token and etcd
// refuses it (fence.ErrFenced). A member that crashes loses its lease after LeaseTTL:
// etcd deletes its member and owner keys and the leader reassigns them, so its shards are
// owned again about one TTL after the crash. A member that stops marks itself leaving,
// hands over its shards, then revokes its lease. If the leader dies, assignments stay and
// owners keep working; the next leader continues from the stored state.
//
// /debug/shards (on the health probe address) serves ShardStatus as JSON; the metrics
// etcdkit_shards_owned, etcdkit_shard_handoffs_total, etcdkit_fenced_writes_total and
// etcdkit_leader follow the sharding.
//
// # Keyspace
//
// Everything the manager writes lives under RootPrefix, "/etcdkit/<name>/" by default:
// "election/" holds the candidates' keys; with Sharding, "members/<id>" the members (JSON
// MemberInfo, on the member's lease), "assignments/<shard>" the assigned member (written
// by the leader only), "owners/<shard>" the owner (on its lease) and "shards" the shard
// count, which must not change between runs. In the range mode (RangeShards) the units are
// slices: "slices" holds the slice map (JSON, written by the leader only), "assignments/<id>"
// and "owners/<id>" are per slice ID, "reports/<id>" each member's report of its slices (on
// its lease), and "shards" holds "ranges".
package manager
