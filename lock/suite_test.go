package lock_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestLock(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "lock")
}

func TestMain(m *testing.M) {
	etcdtest.VerifyTestMain(m)
}

// cluster is the suite's etcd; every spec works under keys of its own (uniqueKey).
var cluster *etcdtest.Cluster

// specTimeout bounds every spec: its context ends then, and so does every lock call in it.
var specTimeout = SpecTimeout(30 * time.Second)

var _ = BeforeSuite(func() {
	// An Eventually given the spec's context still gives up after this long.
	SetDefaultEventuallyTimeout(10 * time.Second)
	EnforceDefaultTimeoutsWhenUsingContexts()
	cluster = etcdtest.New(GinkgoT())
})

var keySeq atomic.Int64

// uniqueKey returns a lock key that no other spec uses.
func uniqueKey(name string) string {
	return fmt.Sprintf("/locktest/%d/%s", keySeq.Add(1), name)
}

// newClient returns a client of its own, as another process would have; closed after the spec.
func newClient() *clientv3.Client {
	cli, err := cluster.NewClient()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cli.Close)
	return cli
}

// queue returns the keys under key/ with their leases, oldest first.
func queue(ctx context.Context, key string) []entry {
	resp, err := cluster.Client().Get(ctx, key+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	Expect(err).NotTo(HaveOccurred())
	var es []entry
	for _, kv := range resp.Kvs {
		es = append(es, entry{key: string(kv.Key), lease: clientv3.LeaseID(kv.Lease), rev: kv.CreateRevision})
	}
	return es
}

type entry struct {
	key   string
	lease clientv3.LeaseID
	rev   int64
}

// queueLen is a polling function for Eventually: how many keys are under key/.
func queueLen(key string) func(ctx context.Context) int {
	return func(ctx context.Context) int { return len(queue(ctx, key)) }
}

// revoke ends the lease of a queue entry from outside, as etcd does when its holder stops
// answering for longer than the TTL.
func revoke(ctx context.Context, e entry) {
	_, err := cluster.Client().Revoke(ctx, e.lease)
	Expect(err).NotTo(HaveOccurred())
}

// async runs fn in a goroutine and delivers its error on the returned channel.
func async(fn func() error) <-chan error {
	done := make(chan error, 1)
	// The goroutine belongs to the spec: every fn given here waits with the spec's context
	// or on a lock that the spec closes, so it returns by the end of the spec.
	go func() {
		defer GinkgoRecover()
		done <- fn()
	}()
	return done
}
