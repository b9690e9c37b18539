// Package bench holds etcdkit's benchmarks (make bench). Every figure is a ratio against a
// baseline measured in the same run on the same etcd: raw clientv3 calls, a raw watch, or
// etcd's concurrency.Mutex. No benchmark asserts a time; the figures go in the README.
package bench
