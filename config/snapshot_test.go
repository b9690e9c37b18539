package config_test

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/config"
)

// rawState returns every key under prefix with its stored bytes.
func rawState(ctx context.Context, prefix string) map[string]string {
	resp, err := cluster.Client().Get(ctx, prefix, clientv3.WithPrefix())
	Expect(err).NotTo(HaveOccurred())
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	return out
}

var _ = Describe("Snapshots", func() {
	var (
		prefix string
		m      *config.Manager
	)
	BeforeEach(func(ctx SpecContext) {
		prefix = uniquePrefix()
		m = newManager(ctx, cluster.Client(), prefix)
	})
	newSnapshots := func(opts ...config.SnapshotOption) *config.Snapshots {
		s, err := config.NewSnapshots(m, opts...)
		Expect(err).NotTo(HaveOccurred())
		return s
	}

	It("restores a configuration exactly as it was saved", func(ctx SpecContext) {
		s := newSnapshots()
		Expect(m.Set(ctx, "database/host", "db-1")).To(Succeed())
		Expect(m.Set(ctx, "database/port", 5432)).To(Succeed())
		Expect(m.Set(ctx, "api/timeout", 30)).To(Succeed())
		_, err := cluster.Client().Put(ctx, prefix+"raw", "\xff not json") // kept byte for byte
		Expect(err).NotTo(HaveOccurred())
		saved := rawState(ctx, prefix)

		info, err := s.CreateSnapshot(ctx, "v1")
		Expect(err).NotTo(HaveOccurred())
		Expect(info.ID).To(Equal("v1"))
		Expect(info.Keys).To(Equal(4))
		Expect(info.Revision).To(BeNumerically(">", 0))
		snapKey := strings.TrimSuffix(prefix, "/") + ".snapshots/v1"
		Expect(rawState(ctx, snapKey)).To(HaveLen(1), "the snapshot lives outside the configuration")
		Expect(rawState(ctx, prefix)).To(Equal(saved))

		Expect(m.Set(ctx, "database/host", "db-2")).To(Succeed())
		Expect(m.Delete(ctx, "api/timeout")).To(Succeed())
		Expect(m.Set(ctx, "new/key", true)).To(Succeed())
		Expect(m.Delete(ctx, "raw")).To(Succeed())

		Expect(s.RestoreSnapshot(ctx, "v1")).To(Succeed())
		Expect(rawState(ctx, prefix)).To(Equal(saved))
		Expect(m.GetString(ctx, "database/host")).To(Equal("db-1"), "this manager reads the restore at once")
		_, err = m.GetBool(ctx, "new/key")
		Expect(err).To(MatchError(config.ErrNotFound))

		Expect(s.CreateSnapshot(ctx, "v2")).Error().NotTo(HaveOccurred())
		list, err := s.ListSnapshots(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(list).To(HaveLen(2))
		Expect(list[0].ID).To(Equal("v1"))
		Expect(list[1].ID).To(Equal("v2"))
		Expect(list[0].Keys).To(Equal(4))

		_, err = s.CreateSnapshot(ctx, "v1")
		Expect(err).To(MatchError(config.ErrSnapshotExists))
		Expect(s.DeleteSnapshot(ctx, "v1")).To(Succeed())
		Expect(s.DeleteSnapshot(ctx, "v1")).To(MatchError(config.ErrSnapshotNotFound))
		Expect(s.RestoreSnapshot(ctx, "v1")).To(MatchError(config.ErrSnapshotNotFound))
		list, err = s.ListSnapshots(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(list).To(HaveLen(1))
	})

	It("refuses to restore, changing nothing, when another writer got in between", func(ctx SpecContext) {
		s := newSnapshots()
		other := newManager(ctx, cluster.Client(), prefix)
		Expect(m.Set(ctx, "a", 1)).To(Succeed())
		Expect(m.Set(ctx, "b", 2)).To(Succeed())
		Expect(s.CreateSnapshot(ctx, "v1")).Error().NotTo(HaveOccurred())
		Expect(m.Set(ctx, "a", 10)).To(Succeed())
		Expect(m.Delete(ctx, "b")).To(Succeed())

		for _, write := range []func(){
			func() { Expect(other.Set(ctx, "a", 11)).To(Succeed()) },           // a key the restore reads
			func() { Expect(other.Set(ctx, "brand-new", true)).To(Succeed()) }, // a key the restore does not know
		} {
			config.SetBeforeRestoreCommit(s, write)
			before := rawState(ctx, prefix)
			err := s.RestoreSnapshot(ctx, "v1")
			Expect(err).To(MatchError(config.ErrConcurrentChange))
			Expect(err.Error()).To(ContainSubstring("nothing was restored"))
			after := rawState(ctx, prefix)
			Expect(after).NotTo(Equal(before), "the concurrent write went in")
			Expect(after).NotTo(HaveKey("b"), "b is not restored")
		}

		config.SetBeforeRestoreCommit(s, nil)
		Expect(s.RestoreSnapshot(ctx, "v1")).To(Succeed())
		Expect(rawState(ctx, prefix)).To(Equal(map[string]string{"a": "1", "b": "2"}))
	})

	It("refuses a restore larger than one transaction, changing nothing", func(ctx SpecContext) {
		for i := 0; i < 6; i++ {
			Expect(m.Set(ctx, fmt.Sprintf("k%d", i), i)).To(Succeed())
		}
		small := newSnapshots(config.WithMaxTxnOps(5))
		Expect(small.CreateSnapshot(ctx, "six")).Error().NotTo(HaveOccurred())

		By("only keys that differ from the snapshot count")
		Expect(m.Set(ctx, "k0", "changed")).To(Succeed())
		Expect(m.Set(ctx, "extra", 1)).To(Succeed())
		Expect(small.RestoreSnapshot(ctx, "six")).To(Succeed())
		Expect(rawState(ctx, prefix)).NotTo(HaveKey("extra"))

		By("a restore that must write more than the limit")
		for i := 0; i < 6; i++ {
			Expect(m.Set(ctx, fmt.Sprintf("k%d", i), "changed")).To(Succeed())
		}
		Expect(m.Set(ctx, "extra", 1)).To(Succeed())
		before := rawState(ctx, prefix)
		err := small.RestoreSnapshot(ctx, "six")
		Expect(err).To(MatchError(config.ErrSnapshotTooLarge))
		Expect(err).To(MatchError(ContainSubstring(`snapshot "six" needs 7 operations (6 puts, 1 deletes) but one transaction may hold 5`)))
		Expect(rawState(ctx, prefix)).To(Equal(before))

		By("etcd's own limit, when the option is set higher than the cluster's")
		for i := 6; i < 130; i++ {
			Expect(m.Set(ctx, fmt.Sprintf("k%d", i), i)).To(Succeed())
		}
		loose := newSnapshots(config.WithMaxTxnOps(1000))
		Expect(loose.CreateSnapshot(ctx, "many")).Error().NotTo(HaveOccurred())
		for i := 0; i < 130; i++ {
			Expect(m.Set(ctx, fmt.Sprintf("k%d", i), "changed again")).To(Succeed())
		}
		before = rawState(ctx, prefix)
		err = loose.RestoreSnapshot(ctx, "many")
		Expect(err).To(MatchError(config.ErrSnapshotTooLarge))
		Expect(err).To(MatchError(ContainSubstring("more than etcd's --max-txn-ops allows")))
		Expect(rawState(ctx, prefix)).To(Equal(before))
	})

	It("rejects bad options and IDs", func(ctx SpecContext) {
		_, err := config.NewSnapshots(nil)
		Expect(err).To(MatchError(ContainSubstring("need a Manager")))
		_, err = config.NewSnapshots(m, config.WithMaxTxnOps(0))
		Expect(err).To(MatchError("config: max transaction operations must be at least 1, got 0"))
		_, err = config.NewSnapshots(m, config.WithSnapshotPrefix(prefix+"snaps/"))
		Expect(err).To(MatchError(ContainSubstring("must not overlap the configuration prefix")))
		_, err = config.NewSnapshots(m, config.WithSnapshotPrefix(""))
		Expect(err).To(MatchError(ContainSubstring("snapshot prefix must not be empty")))
		s := newSnapshots(config.WithSnapshotPrefix(strings.TrimSuffix(prefix, "/") + "-snaps"))
		_, err = s.CreateSnapshot(ctx, "")
		Expect(err).To(MatchError("config: snapshot ID must not be empty"))
		_, err = s.CreateSnapshot(ctx, "a/b")
		Expect(err).To(MatchError(`config: snapshot ID must not contain "/", got "a/b"`))
		Expect(s.RestoreSnapshot(ctx, "")).To(MatchError(ContainSubstring("must not be empty")))
		Expect(s.DeleteSnapshot(ctx, "")).To(MatchError(ContainSubstring("must not be empty")))

		_, err = cluster.Client().Put(ctx, strings.TrimSuffix(prefix, "/")+"-snaps/broken", "{")
		Expect(err).NotTo(HaveOccurred())
		Expect(s.RestoreSnapshot(ctx, "broken")).To(MatchError(ContainSubstring("does not decode")))
		list, err := s.ListSnapshots(ctx)
		Expect(err).To(MatchError(ContainSubstring("does not decode")))
		Expect(list).To(BeEmpty())
	})
})
