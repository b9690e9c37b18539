// Package lease keeps one etcd lease alive and knows, from the local clock, until when it
// certainly lives on etcd: a holder stops acting on it at that deadline even when etcd
// cannot be reached to say so. The election and the manager's shard ownership hold their
// keys on such a session.
package lease
