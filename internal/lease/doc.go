// Package lease keeps one etcd lease alive and knows, from the local clock, until when it
// certainly lives on etcd: a holder stops acting on it at that deadline even when etcd
// cannot be reached to say so. The election and the manager's shard ownership hold their
// keys on such a session.
//
// A lease is renewed every fifth of its TTL, and a renewal that one etcd member keeps
// without answering (paused, or forwarding it to a leader that is gone) gets further
// attempts at the other members within a fraction of a second, so a session outlives an
// etcd election (1-2 s with etcd's default timing) when its TTL is 5 s or more. A Grant's
// attempts wait at most a third of the TTL each, so the lease it returns has most of its
// TTL to live.
package lease
