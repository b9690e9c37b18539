package main

import (
	"context"
	"fmt"
	"strings"
)

// example is one story of the guide.
type example struct {
	name    string
	section string // the guide's section; "" for what goes beyond the guide
	summary string
	run     func(ctx context.Context, e *env) error
}

// examples lists every example in the order --example=all runs them.
func examples() []example {
	return []example{
		{"lock", "1", "distributed locks: lock, WithLock, TryLock, fencing, lock manager", runLock},
		{"rwlock", "1", "read-write lock: shared readers, a waiting writer, no starvation", runRWLock},
		{"discovery", "2", "service discovery: register, discover, watch, load balancing, health checks, expiry", runDiscovery},
		{"config", "3", "configuration: typed values, watch, feature flags, snapshots", runConfig},
		{"election", "4", "leader election: campaign, fencing, resign, lost session, observe, callbacks", runElection},
		{"txn", "5", "transactions: compare-and-swap, multi-key transfer, compare targets", runTxn},
		{"lease", "6", "leases: grant, keep-alive, time-to-live, revoke, use cases", runLease},
		{"watch", "7", "watches: key, prefix, history replay, previous values, progress", runWatch},
		{"ha", "8", "high availability: active-passive failover, active-active with a lock, a leader per shard", runHA},
		{"controller", "", "a jobs controller: reconcile, optimistic writes, RequeueAfter", runController},
		{"sharded", "", "sharded controllers: three managers share the keys, one leaves and hands its shards over", runSharded},
		{"ranges", "", "range-sharded controllers: slices of keys, a hot range split and spread over the members", runRanges},
		{"replicaset", "", "replica sets own pods: cached reads, an owner index, scaling, a finalizer and a tombstone", runReplicaSet},
	}
}

func exampleNames() []string {
	var names []string
	for _, ex := range examples() {
		names = append(names, ex.name)
	}
	return names
}

// selectExamples returns the examples a --example value names.
func selectExamples(name string) ([]example, error) {
	if name == "all" {
		return examples(), nil
	}
	for _, ex := range examples() {
		if ex.name == name {
			return []example{ex}, nil
		}
	}
	return nil, fmt.Errorf("unknown example %q: valid ones are all, %s", name, strings.Join(exampleNames(), ", "))
}
