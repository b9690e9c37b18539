package lock_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/lock"
)

var _ = Describe("bad input", func() {
	DescribeTable("New rejects",
		func(key string, ttl time.Duration, nilClient bool, want string) {
			var cli *clientv3.Client
			if !nilClient {
				cli = cluster.Client()
			}
			l, err := lock.New(cli, key, lock.Options{TTL: ttl})
			Expect(err).To(MatchError(want))
			Expect(l).To(BeNil())
		},
		Entry("an empty key", "", 5*time.Second, false, "lock: key must not be empty"),
		Entry("a TTL of 1 s", "/k", time.Second, false, "lock: TTL must be at least 2s, got 1s"),
		Entry("a negative TTL", "/k", -5*time.Second, false, "lock: TTL must be at least 2s, got -5s"),
		Entry("a TTL that is not whole seconds", "/k", 1500*time.Millisecond, false,
			"lock: TTL must be a whole number of seconds (etcd leases count seconds), got 1.5s"),
		Entry("a TTL past etcd's longest lease", "/k", 9_000_000_001*time.Second, false,
			"lock: TTL must be at most 2500000h0m0s (etcd's longest lease), got 2500000h0m1s"),
		Entry("a nil client", "/k", 5*time.Second, true, "lock: client must not be nil"),
	)

	It("NewRW and NewManager reject the same mistakes, and Get an empty name", func() {
		_, err := lock.NewRW(cluster.Client(), "", lock.Options{})
		Expect(err).To(MatchError("lock: key must not be empty"))
		_, err = lock.NewRW(cluster.Client(), "/k", lock.Options{TTL: time.Second})
		Expect(err).To(MatchError("lock: TTL must be at least 2s, got 1s"))
		_, err = lock.NewRW(cluster.Client(), "/k", lock.Options{TTL: 2500 * time.Millisecond})
		Expect(err).To(MatchError("lock: TTL must be a whole number of seconds (etcd leases count seconds), got 2.5s"))
		_, err = lock.NewRW(nil, "/k", lock.Options{})
		Expect(err).To(MatchError("lock: client must not be nil"))

		_, err = lock.NewManager(cluster.Client(), "", lock.Options{})
		Expect(err).To(MatchError("lock: prefix must not be empty"))
		_, err = lock.NewManager(cluster.Client(), "/p", lock.Options{TTL: -time.Second})
		Expect(err).To(MatchError("lock: TTL must be at least 2s, got -1s"))
		m, err := lock.NewManager(cluster.Client(), "/p", lock.Options{})
		Expect(err).NotTo(HaveOccurred())
		_, err = m.Get("")
		Expect(err).To(MatchError("lock: name must not be empty"))
		Expect(m.Close()).To(Succeed())
	})

	It("works with zero Options, and answers Unlock without a hold with ErrNotLocked", specTimeout, func(ctx SpecContext) {
		l, err := lock.New(cluster.Client(), uniqueKey("zero-options"), lock.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Unlock(ctx)).To(MatchError(lock.ErrNotLocked))
		Expect(l.Token()).To(BeZero())
		Expect(l.Lock(ctx)).To(Succeed())
		Expect(l.Unlock(ctx)).To(Succeed())
		Expect(l.Close()).To(Succeed())
	})
})
