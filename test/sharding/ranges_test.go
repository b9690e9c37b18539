//go:build unix

package sharding_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/test/rangecheck"
)

var _ = Describe("a range-sharded manager, one process per member", func() {
	var h *harness
	BeforeEach(func() {
		h = newHarness()
		h.ranges = true
	})

	// rangeSettled holds when, as m sees it, every slice is owned by its assignee, none
	// retired, and exactly the members ids own slices.
	rangeSettled := func(m *member, ids ...string) func(g Gomega) {
		return func(g Gomega) {
			st, err := h.status(m)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(st.Slices).NotTo(BeEmpty())
			g.Expect(st.Settled()).To(BeTrue(), "slices %+v", st.Slices)
			owners := map[string]bool{}
			for _, s := range st.Slices {
				owners[s.Owner] = true
			}
			g.Expect(owners).To(HaveLen(len(ids)), "owners of the slices %+v", st.Slices)
			for _, id := range ids {
				g.Expect(owners).To(HaveKey(id))
			}
		}
	}
	// caughtUp holds when every item's output holds the item's latest value.
	caughtUp := func(g Gomega) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		items, err := h.cli.Get(ctx, itemsPrefix, clientv3.WithPrefix())
		g.Expect(err).NotTo(HaveOccurred())
		outs, err := h.cli.Get(ctx, outPrefix, clientv3.WithPrefix(), clientv3.WithRev(items.Header.Revision))
		g.Expect(err).NotTo(HaveOccurred())
		got := map[string]string{}
		for _, kv := range outs.Kvs {
			var o output
			g.Expect(json.Unmarshal(kv.Value, &o)).To(Succeed())
			got[string(kv.Key)] = o.Item
		}
		for _, kv := range items.Kvs {
			g.Expect(got[outKey(string(kv.Key))]).To(Equal(string(kv.Value)), string(kv.Key))
		}
	}

	It("writes every key only from the owner of its slice through a kill -9, a pause past the TTL, a join and a leave, and converges", func(ctx SpecContext) {
		h.putItems(ctx, 300, "v0")
		m1, m2, m3 := h.start("m1"), h.start("m2"), h.start("m3")
		Eventually(rangeSettled(m1, "m1", "m2", "m3")).WithTimeout(60 * time.Second).Should(Succeed())
		Eventually(caughtUp).WithTimeout(30 * time.Second).Should(Succeed())
		w := h.startWriter(300, 20*time.Millisecond)

		By("kill -9 of a member: its slices go to the others")
		m2.kill()
		Eventually(rangeSettled(m1, "m1", "m3")).WithTimeout(60 * time.Second).Should(Succeed())

		By("SIGSTOP of a member past its TTL: etcd drops it, and it comes back after SIGCONT")
		m3.Signal(syscall.SIGSTOP)
		Eventually(func(g Gomega) {
			reg, err := h.registered(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(reg).NotTo(HaveKey("m3"))
		}).WithTimeout(30 * time.Second).Should(Succeed())
		m3.Signal(syscall.SIGCONT)
		Eventually(rangeSettled(m1, "m1", "m3")).WithTimeout(60 * time.Second).Should(Succeed())

		By("a member joins, and another leaves gracefully")
		h.start("m4")
		Eventually(rangeSettled(m1, "m1", "m3", "m4")).WithTimeout(60 * time.Second).Should(Succeed())
		m3.Terminate()
		Eventually(m3.Session).WithTimeout(30 * time.Second).Should(gexec.Exit(0))
		Eventually(rangeSettled(m1, "m1", "m4")).WithTimeout(60 * time.Second).Should(Succeed())
		w.stop()
		Eventually(caughtUp).WithTimeout(30 * time.Second).Should(Succeed())

		By("etcd's history: no two members owned one key at once, and every output came from its slice's owner")
		rep, err := rangecheck.Check(ctx, h.cli, "/etcdkit/"+managerName+"/", func(key string, value []byte) (string, string, bool) {
			if !strings.HasPrefix(key, outPrefix) {
				return "", "", false
			}
			var o output
			if json.Unmarshal(value, &o) != nil {
				return "", "", false
			}
			return strings.TrimPrefix(key, outPrefix), o.Member, true
		})
		Expect(err).NotTo(HaveOccurred())
		Expect(rep.Violations).To(BeEmpty())
		Expect(rep.Writes).To(BeNumerically(">", 300))
		AddReportEntry("range mode: outputs checked against their slice's owner", fmt.Sprintf("%d writes, %d slices", rep.Writes, rep.Slices))
	})
})
