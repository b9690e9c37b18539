package store_test

import (
	"context"
	"errors"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// lossyLink is a client link to etcd that fails the next transactions with etcd's
// "leader changed", either after etcd applied them (the answer is lost) or before they
// reach etcd.
type lossyLink struct {
	loseAnswers, dropRequests atomic.Int32                  // how many of the next Txns to treat so
	txns                      atomic.Int32                  // Txns that reached etcd
	holdReads                 atomic.Pointer[chan struct{}] // when set, reads wait until it is closed
}

func (l *lossyLink) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == "/etcdserverpb.KV/Range" {
		if hold := l.holdReads.Load(); hold != nil {
			<-*hold
		}
	}
	if method != "/etcdserverpb.KV/Txn" {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if l.dropRequests.Add(-1) >= 0 {
		return rpctypes.ErrGRPCLeaderChanged
	}
	l.txns.Add(1)
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil && l.loseAnswers.Add(-1) >= 0 {
		return rpctypes.ErrGRPCTimeoutDueToLeaderFail
	}
	return err
}

var _ = Describe("a store whose writes etcd does not answer", func() {
	var (
		c    *etcdtest.Cluster
		link *lossyLink
		s    *store.Store[job]
	)
	BeforeEach(func() {
		c = etcdtest.New(GinkgoT())
		link = &lossyLink{}
		cfg := c.ClientConfig()
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(link.intercept))
		cli, err := clientv3.New(cfg)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cli.Close)
		s, err = store.New[job](cli, "/jobs/", store.Options[job]{})
		Expect(err).NotTo(HaveOccurred())
	})

	It("reports an applied write whose answer was lost as done, never as a conflict, and applies it once", func(ctx SpecContext) {
		link.loseAnswers.Store(1)
		created, err := s.Create(ctx, s.Key("a"), &job{Phase: "new"})
		Expect(err).NotTo(HaveOccurred())
		Expect(created.Version).To(Equal(int64(1)))

		link.loseAnswers.Store(1)
		updated, err := s.Update(ctx, s.Key("a"), &job{Phase: "running"}, created.ModRevision)
		Expect(err).NotTo(HaveOccurred())
		Expect(updated.Version).To(Equal(int64(2)))
		Expect(updated.Value.Phase).To(Equal("running"))

		link.loseAnswers.Store(1)
		Expect(s.Delete(ctx, s.Key("a"), updated.ModRevision)).To(Succeed())

		Expect(link.txns.Load()).To(Equal(int32(3)), "a write sent twice")
		resp, err := c.Client().Get(ctx, s.Key("a"), clientv3.WithRev(updated.ModRevision))
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Kvs[0].Version).To(Equal(int64(2)))
	})

	It("sends a write again when etcd certainly did not apply it", func(ctx SpecContext) {
		link.dropRequests.Store(2)
		created, err := s.Create(ctx, s.Key("b"), &job{Phase: "new"})
		Expect(err).NotTo(HaveOccurred())
		Expect(link.txns.Load()).To(Equal(int32(1)))
		got, err := s.Get(ctx, s.Key("b"))
		Expect(err).NotTo(HaveOccurred())
		Expect(got.ModRevision).To(Equal(created.ModRevision))
	})

	It("says the outcome is unknown when the key moved before it could be read back", func(ctx SpecContext) {
		created, err := s.Create(ctx, s.Key("c"), &job{Phase: "new"})
		Expect(err).NotTo(HaveOccurred())
		// The write is applied, its answer lost, and another writer moves the key before
		// the store reads it back: no one can tell whether the write was among the moves.
		hold := make(chan struct{})
		link.holdReads.Store(&hold)
		link.loseAnswers.Store(1)
		other, err := store.New[job](c.Client(), "/jobs/", store.Options[job]{})
		Expect(err).NotTo(HaveOccurred())
		done := make(chan error, 1)
		go func() {
			_, err := s.Update(ctx, s.Key("c"), &job{Phase: "mine"}, created.ModRevision)
			done <- err
		}()
		Eventually(link.txns.Load).Should(Equal(int32(2)))
		_, err = other.Mutate(ctx, s.Key("c"), func(j *job) error { j.Phase = "theirs"; return nil })
		Expect(err).NotTo(HaveOccurred())
		close(hold)
		var werr error
		Eventually(done).Should(Receive(&werr))
		Expect(werr).To(MatchError(store.ErrOutcomeUnknown))
		Expect(errors.Is(werr, store.ErrConflict)).To(BeFalse())
		Expect(werr.Error()).To(ContainSubstring("/jobs/c"))
	})
})
