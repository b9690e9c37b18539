package manager_test

import (
	"context"
	"errors"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("deletes with their last state", func() {
	It("hands a delete that the old leader left unreconciled, with its last value, to the next leader", func(ctx SpecContext) {
		cli := etcdtest.New(GinkgoT()).Client()
		type replica struct {
			mgr  *manager.Manager
			ctrl *reconcile.Controller
			stop func()
		}
		var mu sync.Mutex
		got := map[string][]string{} // per replica: the tombstone values its reconciles saw
		start := func(id string, cleanupWorks bool) replica {
			mgr, err := manager.New(manager.Options{Client: cli, Name: "tombs", ID: id, LeaseTTL: 2 * time.Second})
			Expect(err).NotTo(HaveOccurred())
			ctrl, err := manager.NewControllerManagedBy(mgr).Named("jobs").
				For(source.Prefix("/jobs/")).
				Build(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
					t, ok := reconcile.TombstoneFrom(ctx)
					if !ok {
						return reconcile.Result{}, nil
					}
					mu.Lock()
					got[id] = append(got[id], string(t.KV.Value))
					mu.Unlock()
					if !cleanupWorks {
						return reconcile.Result{}, errors.New("cleanup fails on this replica")
					}
					return reconcile.Result{}, nil
				}))
			Expect(err).NotTo(HaveOccurred())
			rctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- mgr.Start(rctx) }()
			return replica{mgr: mgr, ctrl: ctrl, stop: func() {
				cancel()
				Eventually(done).Should(Receive(BeNil()))
			}}
		}
		seen := func(id string) []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), got[id]...)
		}

		a := start("a", false)
		Eventually(a.mgr.Elected()).Should(BeClosed())
		b := start("b", true)
		Eventually(b.ctrl.HasSynced).Should(BeTrue()) // b's cache sees the key come and go
		_, err := cli.Put(ctx, "/jobs/x", "last words")
		Expect(err).NotTo(HaveOccurred())
		_, err = cli.Delete(ctx, "/jobs/x")
		Expect(err).NotTo(HaveOccurred())

		// The leader fails to clean up; the follower keeps the tombstone meanwhile.
		Eventually(func() []string { return seen("a") }).ShouldNot(BeEmpty())
		Eventually(func() bool { _, ok := b.ctrl.Tombstone("/jobs/x"); return ok }).Should(BeTrue())
		Expect(seen("b")).To(BeEmpty())

		a.stop() // resigns: b leads, and its resync hands it the delete
		Eventually(b.mgr.Elected()).Should(BeClosed())
		Eventually(func() []string { return seen("b") }).Should(Equal([]string{"last words"}))
		Eventually(func() bool { _, ok := b.ctrl.Tombstone("/jobs/x"); return ok }).Should(BeFalse())
		b.stop()
	})
})
