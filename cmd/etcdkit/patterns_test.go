package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/discovery"
	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/lock"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("locks, elections and services", Ordered, func() {
	var (
		c   *etcdtest.Cluster
		cli *clientv3.Client
		// waiters holds the calls that wait (a lock, a campaign) until cleanup cancels them.
		waiters sync.WaitGroup
		stop    context.CancelFunc
		wctx    context.Context

		report           *lock.Lock
		reader1, reader2 *lock.RWLock
		leader           *election.Election
	)
	ctx := context.Background()

	// wait runs fn, which blocks until wctx ends, in the background.
	wait := func(fn func(context.Context) error) {
		waiters.Add(1)
		go func() {
			defer GinkgoRecover()
			defer waiters.Done()
			_ = fn(wctx)
		}()
	}
	// closeAtEnd closes what the suite made, after the waiters have ended.
	closeAtEnd := func(closers ...func() error) {
		DeferCleanup(func() {
			for _, cl := range closers {
				Expect(cl()).To(Succeed())
			}
		})
	}
	// queued waits until n keys exist under prefix.
	queued := func(prefix string, n int) {
		GinkgoHelper()
		Eventually(func(g Gomega) {
			resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.Count).To(BeEquivalentTo(n))
		}).Should(Succeed())
	}

	BeforeAll(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
		wctx, stop = context.WithCancel(ctx)
		// An exclusive lock, held, and a writer waiting for it.
		var err error
		report, err = lock.New(cli, "/locks/report", lock.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(report.Lock(ctx)).To(Succeed())
		next, err := lock.New(cli, "/locks/report", lock.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())

		// A read-write lock held by two readers, with a writer and then a reader waiting.
		reader1, err = lock.NewRW(cli, "/locks/catalog", lock.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		reader2, err = lock.NewRW(cli, "/locks/catalog", lock.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		writer, err := lock.NewRW(cli, "/locks/catalog", lock.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		lateReader, err := lock.NewRW(cli, "/locks/catalog", lock.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(reader1.RLock(ctx)).To(Succeed())
		Expect(reader2.RLock(ctx)).To(Succeed())

		// An election with a leader and one candidate in line.
		leader, err = election.New(cli, "/elections/billing/", election.Options{ID: "node-1", TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(leader.Campaign(ctx)).To(Succeed())
		second, err := election.New(cli, "/elections/billing/", election.Options{ID: "node-2", TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())

		// Discovery: three instances of two services.
		reg, err := discovery.NewRegistry(cli, "/services", discovery.Options{TTL: 30 * time.Second})
		Expect(err).NotTo(HaveOccurred())
		for _, in := range []discovery.ServiceInfo{
			{Name: "api", ID: "api-1", Address: "10.0.0.1", Port: 8080, Metadata: map[string]string{"zone": "a"}},
			{Name: "api", ID: "api-2", Address: "10.0.0.2", Port: 8080},
			{Name: "db", ID: "db-1", Address: "10.0.1.1", Port: 5432},
		} {
			Expect(reg.Register(ctx, in)).To(Succeed())
		}

		closeAtEnd(report.Close, next.Close, reader1.Close, reader2.Close, writer.Close, lateReader.Close,
			leader.Close, second.Close, reg.Close)
		DeferCleanup(func() { stop(); waiters.Wait() })

		wait(next.Lock)
		queued("/locks/report/", 2)
		wait(writer.Lock)
		queued("/locks/catalog/", 3)
		wait(lateReader.RLock)
		queued("/locks/catalog/", 4)
		wait(second.Campaign)
		queued("/elections/billing/", 2)
	})

	It("shows each lock's holder, its lease and fencing token, and who waits", func() {
		out := etcdkitJSON[locksOutput](c, "locks", "/locks/")
		Expect(out.Prefix).To(Equal("/locks/"))
		Expect(out.Locks).To(HaveLen(2))
		catalog, rep := out.Locks[0], out.Locks[1]

		Expect(rep.Key).To(Equal("/locks/report"))
		Expect(rep.Mode).To(Equal(exclusive))
		Expect(rep.Token).To(Equal(report.Token()))
		Expect(rep.Holders).To(HaveLen(1))
		h := rep.Holders[0]
		Expect(h.Token).To(Equal(report.Token()))
		rev, lease := createRevision(cli, h.Entry)
		Expect(rev).To(Equal(h.Token))
		Expect(h.Entry).To(Equal("/locks/report/" + leaseHex(lease)))
		Expect(h.Lease).To(Equal(leaseHex(lease)))
		Expect(h.TTL).To(BeNumerically("~", 30, 5))
		Expect(rep.WaitingWriters).To(Equal(1))
		Expect(rep.WaitingReaders).To(Equal(0))
		Expect(rep.Waiting).To(ConsistOf(HaveField("Kind", exclusive)))

		Expect(catalog.Key).To(Equal("/locks/catalog"))
		Expect(catalog.Mode).To(Equal(shared))
		Expect(catalog.Token).To(BeZero())
		Expect(catalog.Holders).To(HaveLen(2))
		for _, h := range catalog.Holders {
			Expect(h.Kind).To(Equal(shared))
			rev, lease := createRevision(cli, h.Entry)
			Expect(h.Token).To(Equal(rev))
			Expect(h.Lease).To(Equal(leaseHex(lease)))
		}
		Expect(catalog.WaitingWriters).To(Equal(1))
		Expect(catalog.WaitingReaders).To(Equal(1))
		Expect(catalog.Waiting[0].Kind).To(Equal(exclusive), "the writer came first")

		r := etcdkit(c, "locks", "/locks/")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^LOCK\s+MODE\s+HOLDER LEASE\s+TOKEN\s+TTL\s+WRITERS WAITING\s+READERS WAITING$`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^/locks/report\s+exclusive\s+%s\s+%d\s+\d+s\s+1\s+0$`, h.Lease, report.Token()))
		Expect(r.stdout).To(MatchRegexp(`(?m)^/locks/catalog\s+shared\s+%s,%s\s+%d,%d\s+\S+\s+1\s+1$`,
			catalog.Holders[0].Lease, catalog.Holders[1].Lease, catalog.Holders[0].Token, catalog.Holders[1].Token))

		// A lock's own key is a prefix too; the election's keys are no locks.
		one := etcdkitJSON[locksOutput](c, "locks", "/locks/report")
		Expect(one.Locks).To(HaveLen(1))
		Expect(one.Locks[0].Token).To(Equal(report.Token()))
		Expect(etcdkitJSON[locksOutput](c, "locks", "/elections/").Locks).To(BeEmpty())
	})

	It("shows each election's leader, its token and the candidates in line", func() {
		out := etcdkitJSON[electionsOutput](c, "elections", "/elections/")
		Expect(out.Elections).To(HaveLen(1))
		el := out.Elections[0]
		Expect(el.Prefix).To(Equal("/elections/billing/"))
		Expect(el.Leader.ID).To(Equal("node-1"))
		Expect(el.Leader.Token).To(Equal(leader.Token()))
		Expect(el.Leader.TTL).To(BeNumerically(">", 0))
		Expect(el.Candidates).To(ConsistOf(HaveField("ID", "node-2")))
		Expect(el.Candidates[0].Token).To(BeNumerically(">", el.Leader.Token))

		r := etcdkit(c, "elections", "/elections/")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^/elections/billing/\s+node-1\s+%d\s+%s\s+\d+s\s+node-2$`, leader.Token(), el.Leader.Lease))

		// Lock queues are no elections.
		Expect(etcdkitJSON[electionsOutput](c, "elections", "/locks/").Elections).To(BeEmpty())
	})

	It("shows each discovery instance with its address and the TTL its lease has left", func() {
		out := etcdkitJSON[servicesOutput](c, "services", "/services")
		Expect(out.Instances).To(HaveLen(3))
		Expect(out.Instances[0]).To(MatchFields(IgnoreExtras, Fields{
			"Service": Equal("api"), "ID": Equal("api-1"), "Address": Equal("10.0.0.1"), "Port": Equal(8080),
			"Metadata": Equal(map[string]string{"zone": "a"}),
		}))
		Expect(out.Instances[1].ID).To(Equal("api-2"))
		Expect(out.Instances[2].Service).To(Equal("db"))
		for _, in := range out.Instances {
			_, lease := createRevision(cli, in.Key)
			Expect(in.Lease).To(Equal(leaseHex(lease)))
			Expect(in.TTL).To(BeNumerically("~", 30, 5))
		}
		// One service's prefix.
		db := etcdkitJSON[servicesOutput](c, "services", "/services/db/")
		Expect(db.Instances).To(ConsistOf(HaveField("ID", "db-1")))

		r := etcdkit(c, "services", "/services")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^SERVICE\s+ID\s+ADDRESS\s+LEASE\s+TTL$`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^api\s+api-1\s+10\.0\.0\.1:8080\s+%s\s+\d+s$`, out.Instances[0].Lease))
		Expect(r.stdout).To(MatchRegexp(`(?m)^db\s+db-1\s+10\.0\.1\.1:5432\s`))
	})

	It("says so plainly, and succeeds, when nothing is under a prefix", func() {
		for _, cmd := range []string{"locks", "elections", "services"} {
			r := etcdkit(c, cmd, "/nothing/here/")
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stderr).To(ContainSubstring(fmt.Sprintf("etcdkit: no %s under /nothing/here/", map[string]string{
				"locks": "locks", "elections": "elections", "services": "discovery instances"}[cmd])))
			Expect(r.stdout).To(HavePrefix(map[string]string{"locks": "LOCK ", "elections": "ELECTION ", "services": "SERVICE "}[cmd]))
			Expect(r.stdout).To(HaveSuffix("\n"))
			Expect(r.stdout).NotTo(ContainSubstring("\n/"), "no rows")
		}
		out := etcdkitJSON[locksOutput](c, "locks", "/nothing/here/")
		Expect(out.Locks).NotTo(BeNil())
		Expect(out.Locks).To(BeEmpty())
	})
})
