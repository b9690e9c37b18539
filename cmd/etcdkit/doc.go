// Command etcdkit shows what etcdkit's components hold in etcd, for an operator who needs
// to know now who leads, who holds which shard and which locks are taken, without writing
// code. It only reads: it never writes to etcd.
//
//	etcdkit [flags] status NAME       a manager: members, leader, and its shard map
//	etcdkit [flags] locks PREFIX      the locks under PREFIX: holders, tokens, waiters
//	etcdkit [flags] elections PREFIX  the elections under PREFIX: leader, token, candidates
//	etcdkit [flags] services PREFIX   the discovery instances under PREFIX
//
// Flags may come before or after the command and its argument:
//
//	go run ./cmd/etcdkit status jobs --endpoints 10.0.0.1:2379 --members
//	go run ./cmd/etcdkit locks /locks/ -o json | jq '.locks[] | select(.waitingWriters > 0)'
//
// # Connecting
//
// The connection flags are etcdctl's: --endpoints (comma-separated, default
// 127.0.0.1:2379), --cacert, --cert, --key, --user user:password and --dial-timeout
// (default 2s). An http:// endpoint with TLS files is refused, and a password that would go
// to etcd unencrypted is warned about on stderr, as the examples program does.
// --command-timeout (default 5s) bounds the reads once connected.
//
// # status NAME
//
// Reads the keys of the manager NAME under its root prefix, /etcdkit/NAME/ unless --root
// gives another (the manager's Options.RootPrefix):
//
//   - members/<id>: the registered members (sharded managers register; a leader-only
//     manager's replicas show as the election's candidates);
//   - election/<lease>: the leader (the oldest candidate) and the candidates in line;
//   - shards, assignments/<shard>, owners/<shard>: for a sharded manager, every shard's
//     assigned member, owning member and owner token (the create revision of
//     owners/<shard>, the fence of every write made for the shard), with the shards that
//     are assigned but not owned, owned by a member they are not assigned to, or not
//     assigned at all.
//
// With --members it also asks each member that publishes an address for its
// /debug/shards (within --member-timeout, default 2s), for what only the member knows: the
// requests queued per shard, the shards it is draining, the reconciles in flight. A
// member that does not answer is shown as unreachable. The address is the member's
// manager.Options.AdvertiseAddress, by default the one it bound for its HealthProbeAddr
// with an unspecified host (":8081") replaced by its host name.
//
// # locks PREFIX
//
// A lock on key K keeps a queue of entries K/<lease in hex> (exclusive) and
// K/r-<lease in hex>-<n> (shared, a read hold of a read-write lock), ordered by create
// revision. The holder is the first entry, or, when the first entries are shared, every
// shared entry before the first exclusive one. The fencing token of a hold is its entry's
// create revision, what lock.Token returns. Entries are recognised by their names, which
// must name their own lease, and by their empty values, so that election keys (named the
// same way, but holding an ID) are not taken for locks.
//
// # elections PREFIX
//
// An election under prefix P keeps one key P<lease in hex> per candidate, holding the
// candidate's ID; the oldest key leads, and its create revision is the leader's token.
//
// # services PREFIX
//
// A discovery instance is the key <registry prefix>/<service>/<id>, holding the JSON of a
// discovery.ServiceInfo, on a lease; PREFIX may be the registry's prefix or one service's.
//
// # Output
//
// Tables by default; -o json prints one JSON document whose field names are stable:
//
//	status:    name, root, revision,
//	           leader {id, token, lease, key, ttl} (null: no leader),
//	           candidates [{id, token, lease, key, ttl}] (in line behind the leader),
//	           members [{id, address, started, state, lease, assigned, owned,
//	             debug {reachable, error, leader, queueDepth, inFlight, draining, owned}}],
//	           sharding {shards, settled, shardMap [{shard, assigned, owner, token, lease,
//	             state, queueDepth, draining}], assignedNotOwned, ownedNotAssigned,
//	             unassigned} (null: not sharded)
//	locks:     prefix, revision, locks [{key, mode, token, holders [{entry, kind, lease,
//	           token, ttl}], waiting [...same...], waitingWriters, waitingReaders}]
//	elections: prefix, revision, elections [{prefix, leader {id, token, lease, key, ttl},
//	           candidates [...same...]}]
//	services:  prefix, revision, services [{service, id, address, port, metadata, key,
//	           lease, ttl}]
//
// revision is the etcd revision the listing was read at (one consistent snapshot). A lease
// is written in hex, as etcdctl writes it; ttl is the seconds the lease has left, -1 when
// it has expired or could not be read (stderr says why when a read failed). A token is a create
// revision: an election's leader's (election.Token), a lock holder's (lock.Token), a
// shard owner's (the fence of its writes; shards claimed in one transaction share one);
// it is 0 where there is no holder or owner. A lock's mode is "exclusive" or "shared" (read
// holds: each holder has its own token, and the lock's token is 0). A shard's state is "ok"
// (owned by its assignee), "unowned" (assigned, not owned), "moving" (owned by another
// member than its assignee: a handoff in progress) or "unassigned"; settled is true when
// every shard is owned by its assignee and the assignment is balanced. debug, and a
// shard's queueDepth and draining, appear with --members only; debug.error says why a
// member is not reachable.
//
// # Exit codes
//
// 0 when the command ran, also when nothing was found under a prefix (the table is then
// empty and stderr says so); 1 when it failed: etcd did not answer (the error names the
// endpoints), etcd refused to let the user read a prefix (the error names it), or status
// found no key at all under the manager's root; 2 for a usage error.
package main
