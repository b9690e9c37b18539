// Package etcdutil holds the connection machinery that every etcdkit entry point shares:
// building a TLS configuration from etcdctl-style file flags, and checking that etcd answers,
// because clientv3.New no longer blocks until a connection is made.
package etcdutil
