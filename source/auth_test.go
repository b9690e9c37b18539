package source_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/source"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("a source on a secured etcd", func() {
	It("returns a denied read at once, naming the prefix, and syncs once the role is mended", func(ctx SpecContext) {
		c := etcdtest.New(GinkgoT(), etcdtest.WithAuth("rootpw"))
		Expect(c.AddUser(ctx, "jobs", "pw", etcdtest.ReadWrite("/other/"))).To(Succeed())
		cli, err := c.UserClient("jobs", "pw")
		Expect(err).NotTo(HaveOccurred())
		defer cli.Close()
		_, err = c.Client().Put(ctx, "/jobs/a", "1")
		Expect(err).NotTo(HaveOccurred())

		s, err := source.New(cli, "/jobs/", source.Options{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		rec := newRecorder()
		stop := run(s, rec.handle)
		defer stop()

		// The wait is bounded far beyond the time a refusal takes: an error naming the
		// refusal, not the deadline, shows that it was not retried in silence.
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err = s.WaitForSync(wctx)
		Expect(err).To(MatchError(ContainSubstring("permission denied")))
		Expect(err.Error()).To(ContainSubstring("/jobs/"))
		Expect(err.Error()).To(ContainSubstring("listing"))
		Expect(etcderr.IsPermanent(err)).To(BeTrue())
		Expect(wctx.Err()).NotTo(HaveOccurred())
		Expect(s.Err()).To(MatchError(ContainSubstring("permission denied")))
		Expect(s.HasSynced()).To(BeFalse())

		// The refusal stands until the next retry (every MaxBackoff) finds it mended.
		Expect(c.Grant(ctx, "jobs", etcdtest.Read("/jobs/"))).To(Succeed())
		Eventually(func() error { return s.WaitForSync(wctx) }).Should(Succeed())
		Expect(s.Err()).NotTo(HaveOccurred())
		Eventually(func() map[string]string { st, _ := rec.snapshot(); return st }).Should(Equal(map[string]string{"/jobs/a": "1"}))
	})

})
