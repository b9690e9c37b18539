// Command examples runs the etcd patterns of etcdkit, one story at a time.
//
//	go run ./examples --example=all              # every example on an embedded etcd
//	go run ./examples --example=txn --endpoints=127.0.0.1:2379
//
// With no --endpoints the program starts an embedded single-member etcd in a temporary
// directory and removes it on exit. With --endpoints it connects like etcdctl does
// (--cacert/--cert/--key for TLS, --user=name:password for authentication) and keeps every
// key it writes under a prefix of its own run, which it deletes again when it is done.
//
// Each example prints what it does and checks what etcd answered: an example whose outcome
// differs from what the guide shows fails with a message that says what was expected.
package main
