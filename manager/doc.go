// Package manager runs controllers and other long-running work against etcd: it connects,
// elects a leader among its replicas, feeds controllers from prefix watches, serves health
// probes and metrics, and shuts down gracefully.
//
// # Lifecycle
//
// New validates the Options (every default is documented on its field) and checks that
// etcd answers within the dial timeout. Start then starts, in order: the HTTP servers
// (/healthz, /readyz, /metrics), the controllers' sources and their initial lists, the
// runnables that do not need leader election, the election, and, while this replica
// leads, the leader runnables. When Start's context ends it stops in reverse, within
// GracefulShutdownTimeout: controllers stop taking work and wait for the reconciles in
// flight, leader runnables end, the replica resigns and revokes its lease, the servers
// close. No goroutine outlives Start.
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
// # Keyspace
//
// Everything the manager writes lives under RootPrefix, "/etcdkit/<name>/" by default:
// "election/" holds the candidates' keys.
package manager
