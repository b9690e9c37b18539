package lock_test

import (
	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
)

var _ = Describe("bad input", func() {
	DescribeTable("New rejects",
		func(key string, ttl int, nilClient bool, want string) {
			var cli *clientv3.Client
			if !nilClient {
				cli = cluster.Client()
			}
			l, err := lock.New(cli, lock.Config{Key: key, TTL: ttl}, logr.Logger{})
			Expect(err).To(MatchError(want))
			Expect(l).To(BeNil())
		},
		Entry("an empty key", "", 5, false, "lock: Key must not be empty"),
		Entry("a TTL of 1", "/k", 1, false, "lock: TTL must be at least 2 seconds, got 1"),
		Entry("a negative TTL", "/k", -5, false, "lock: TTL must be at least 2 seconds, got -5"),
		Entry("a nil client", "/k", 5, true, "lock: client must not be nil"),
	)

	It("NewRW and NewManager reject the same mistakes, and Get an empty name", func() {
		_, err := lock.NewRW(cluster.Client(), "", 5, logr.Logger{})
		Expect(err).To(MatchError("lock: key must not be empty"))
		_, err = lock.NewRW(cluster.Client(), "/k", 1, logr.Logger{})
		Expect(err).To(MatchError("lock: TTL must be at least 2 seconds, got 1"))
		_, err = lock.NewRW(nil, "/k", 5, logr.Logger{})
		Expect(err).To(MatchError("lock: client must not be nil"))

		_, err = lock.NewManager(cluster.Client(), "", 5, logr.Logger{})
		Expect(err).To(MatchError("lock: prefix must not be empty"))
		_, err = lock.NewManager(cluster.Client(), "/p", -1, logr.Logger{})
		Expect(err).To(MatchError("lock: TTL must be at least 2 seconds, got -1"))
		m, err := lock.NewManager(cluster.Client(), "/p", 0, logr.Logger{})
		Expect(err).NotTo(HaveOccurred())
		_, err = m.Get("")
		Expect(err).To(MatchError("lock: name must not be empty"))
		Expect(m.Close()).To(Succeed())
	})

	It("works with a zero logger, and answers Unlock without a hold with ErrNotLocked", specTimeout, func(ctx SpecContext) {
		l, err := lock.New(cluster.Client(), lock.Config{Key: uniqueKey("zero-log")}, logr.Logger{})
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Unlock(ctx)).To(MatchError(lock.ErrNotLocked))
		Expect(l.Token()).To(BeZero())
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(l.Unlock(ctx)).To(Succeed())
		Expect(l.Close()).To(Succeed())
	})
})
