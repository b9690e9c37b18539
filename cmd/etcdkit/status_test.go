package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

var _ = Describe("status", Ordered, func() {
	const (
		shards = 8
		root   = "/etcdkit/jobs/"
	)
	var (
		c       *etcdtest.Cluster
		cli     *clientv3.Client
		members map[string]*manager.Manager
	)

	// start runs a replica of a manager until the suite's cleanup stops it.
	start := func(opts manager.Options) *manager.Manager {
		GinkgoHelper()
		mc, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		opts.Client = mc
		opts.GracefulShutdownTimeout = 10 * time.Second
		mgr, err := manager.New(opts)
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mgr.Start(ctx) }()
		DeferCleanup(func() {
			cancel()
			Eventually(done, time.Minute).Should(Receive(BeNil()))
			Expect(mc.Close()).To(Succeed())
		})
		return mgr
	}

	// settled succeeds once every member sees every shard owned by its assignee, with
	// shards on every member.
	settled := func(g Gomega) {
		for id, m := range members {
			st, ok := m.ShardStatus(context.Background())
			g.Expect(ok).To(BeTrue())
			g.Expect(st.Members).To(HaveLen(len(members)), "members as %s sees them", id)
			g.Expect(st.Settled()).To(BeTrue(), "%s: assignment %v, owners %v", id, st.Assignment, st.Owners)
			g.Expect(st.Owned).NotTo(BeEmpty(), "%s owns no shard", id)
			g.Expect(m.HealthProbeAddr()).NotTo(BeEmpty())
		}
	}

	leader := func() (id string, token int64) {
		for id, m := range members {
			if m.IsLeader() {
				return id, m.Election().Token()
			}
		}
		return "", 0
	}

	BeforeAll(func() {
		c = etcdtest.New(GinkgoT())
		cli = c.Client()
		members = map[string]*manager.Manager{}
		for _, id := range []string{"a", "b"} {
			members[id] = start(manager.Options{
				Name: "jobs", ID: id, Sharding: &manager.ShardingOptions{Shards: shards},
				HealthProbeAddr: "127.0.0.1:0",
			})
		}
		Eventually(settled).Should(Succeed())
		Eventually(func() string { id, _ := leader(); return id }).ShouldNot(BeEmpty())
	})

	It("reports the leader, the members and every shard's owner and token as etcd holds them", func() {
		out := etcdkitJSON[statusOutput](c, "status", "jobs")
		lid, ltok := leader()
		Expect(out.Name).To(Equal("jobs"))
		Expect(out.Root).To(Equal(root))
		Expect(out.Leader).NotTo(BeNil())
		Expect(out.Leader.ID).To(Equal(lid))
		Expect(out.Leader.Token).To(Equal(ltok))
		Expect(out.Leader.TTL).To(BeNumerically(">", 0))
		other := map[string]string{"a": "b", "b": "a"}[lid]
		Expect(out.Candidates).To(ConsistOf(HaveField("ID", other)))

		Expect(out.Members).To(HaveLen(2))
		for _, m := range out.Members {
			Expect(m.State).To(Equal(manager.MemberActive))
			Expect(m.Address).To(Equal(members[m.ID].HealthProbeAddr()))
			Expect(m.Owned).To(Equal(m.Assigned))
			Expect(m.Owned).To(BeNumerically(">", 0))
			Expect(m.Debug).To(BeNil())
		}

		Expect(out.Sharding).NotTo(BeNil())
		sh := out.Sharding
		Expect(sh.Shards).To(Equal(shards))
		Expect(sh.Settled).To(BeTrue())
		Expect(sh.AssignedNotOwned).To(BeEmpty())
		Expect(sh.OwnedNotAssigned).To(BeEmpty())
		Expect(sh.Unassigned).To(BeEmpty())
		Expect(sh.ShardMap).To(HaveLen(shards))
		// Every member's own view: the token of each shard it holds.
		held := map[int]string{}
		tokens := map[int]int64{}
		for id, m := range members {
			st, _ := m.ShardStatus(context.Background())
			for _, o := range st.Owned {
				held[o.Shard], tokens[o.Shard] = id, o.Token
			}
		}
		for s, r := range sh.ShardMap {
			Expect(r.Shard).To(Equal(s))
			Expect(r.State).To(Equal(shardOK), "shard %d", s)
			Expect(r.Owner).To(Equal(r.Assigned), "shard %d", s)
			Expect(members).To(HaveKey(r.Owner), "shard %d is owned by a live member", s)
			rev, lease := createRevision(cli, root+"owners/"+strconv.Itoa(s))
			Expect(r.Token).To(Equal(rev), "shard %d: token is the owner key's create revision", s)
			Expect(r.Lease).To(Equal(leaseHex(lease)))
			Expect(r.Owner).To(Equal(held[s]), "shard %d: its owner holds it", s)
			Expect(r.Token).To(Equal(tokens[s]), "shard %d: the owner's own token", s)
			Expect(r.QueueDepth).To(BeNil())
		}
	})

	It("prints the same in its table", func() {
		out := etcdkitJSON[statusOutput](c, "status", "jobs")
		r := etcdkit(c, "status", "jobs")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^LEADER\s+%s \(token %d, lease %s`, out.Leader.ID, out.Leader.Token, out.Leader.Lease))
		Expect(r.stdout).To(MatchRegexp(`(?m)^SHARDING\s+8 shards, settled$`))
		for _, m := range out.Members {
			Expect(r.stdout).To(MatchRegexp(`(?m)^%s\s+active\s+%s\s+\S+\s+%s\s+%d\s+%d$`,
				m.ID, regexp.QuoteMeta(m.Address), m.Lease, m.Assigned, m.Owned))
		}
		for _, s := range out.Sharding.ShardMap {
			Expect(r.stdout).To(MatchRegexp(`(?m)^%d\s+%s\s+%s\s+%d\s+ok$`, s.Shard, s.Assigned, s.Owner, s.Token))
		}
		Expect(r.stdout).To(MatchRegexp(`(?m)^assigned but not owned:\s+none$`))
	})

	It("asks the members for their queues and drains with --members", func() {
		out := etcdkitJSON[statusOutput](c, "status", "jobs", "--members")
		for _, m := range out.Members {
			Expect(m.Debug).NotTo(BeNil())
			Expect(m.Debug.Reachable).To(BeTrue(), m.Debug.Error)
			Expect(m.Debug.Owned).To(HaveLen(m.Owned))
			Expect(m.Debug.Draining).To(BeEmpty())
		}
		for _, s := range out.Sharding.ShardMap {
			Expect(s.QueueDepth).To(HaveValue(Equal(0)))
			Expect(s.Draining).To(HaveValue(BeFalse()))
		}
		r := etcdkit(c, "status", "jobs", "--members")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^MEMBER\s+STATE.*DEBUG\s+QUEUED\s+IN FLIGHT\s+DRAINING$`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^a\s+active\s.*\sok\s+0\s+0\s+none$`))
	})

	It("keeps the documented JSON field names", func() {
		r := etcdkit(c, "status", "jobs", "--members", "-o", "json")
		Expect(r.code).To(Equal(0), r.stderr)
		var doc map[string]any
		Expect(json.Unmarshal([]byte(r.stdout), &doc)).To(Succeed())
		Expect(doc).To(HaveKey("name"))
		Expect(keys(doc)).To(ConsistOf("name", "root", "revision", "leader", "candidates", "members", "sharding"))
		Expect(keys(doc["leader"])).To(ConsistOf("id", "token", "lease", "key", "ttl"))
		Expect(keys(doc["members"].([]any)[0])).To(ConsistOf("id", "address", "started", "state", "lease", "assigned", "owned", "debug"))
		Expect(keys(doc["members"].([]any)[0].(map[string]any)["debug"])).To(ConsistOf("reachable", "leader", "queueDepth", "inFlight", "draining", "owned"))
		sh := doc["sharding"]
		Expect(keys(sh)).To(ConsistOf("shards", "settled", "shardMap", "assignedNotOwned", "ownedNotAssigned", "unassigned"))
		Expect(keys(sh.(map[string]any)["shardMap"].([]any)[0])).To(ConsistOf("shard", "assigned", "owner", "token", "lease", "state", "queueDepth", "draining"))
	})

	It("finds a manager under another root with --root, and says when there is none", func() {
		out := etcdkitJSON[statusOutput](c, "status", "whatever", "--root", "/etcdkit/jobs")
		Expect(out.Root).To(Equal(root))
		Expect(out.Sharding.ShardMap).To(HaveLen(shards))

		r := etcdkit(c, "status", "nosuch")
		Expect(r.code).To(Equal(1))
		Expect(r.stdout).To(BeEmpty())
		Expect(r.stderr).To(ContainSubstring("no manager named nosuch under /etcdkit/nosuch/"))
	})

	It("shows a leader-only manager's leader and candidates, and no shard map", func() {
		var solo []*manager.Manager
		for _, id := range []string{"s1", "s2"} {
			solo = append(solo, start(manager.Options{Name: "solo", ID: id}))
		}
		// At rest once both campaign and one leads.
		Eventually(func(g Gomega) {
			resp, err := cli.Get(context.Background(), "/etcdkit/solo/election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.Count).To(BeEquivalentTo(2))
			g.Expect(solo[0].IsLeader() || solo[1].IsLeader()).To(BeTrue())
		}).Should(Succeed())
		out := etcdkitJSON[statusOutput](c, "status", "solo")
		Expect(out.Sharding).To(BeNil())
		Expect(out.Members).To(BeEmpty())
		rev, _ := createRevision(cli, out.Leader.Key)
		Expect(out.Leader.Token).To(Equal(rev))
		Expect([]string{out.Leader.ID, out.Candidates[0].ID}).To(ConsistOf("s1", "s2"))
		r := etcdkit(c, "status", "solo")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^SHARDING\s+off`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^IN LINE\s+%s$`, out.Candidates[0].ID))
	})

	It("shows a range-sharded manager's slices, their assignees, owners and tokens", func() {
		for _, id := range []string{"r1", "r2"} {
			start(manager.Options{Name: "ranged", ID: id, Sharding: &manager.ShardingOptions{Mode: manager.RangeShards}})
		}
		// At rest once a member owns the slice and both have reported: a report is written
		// again only when its figures change.
		Eventually(func(g Gomega) {
			resp, err := cli.Get(context.Background(), "/etcdkit/ranged/", clientv3.WithPrefix())
			g.Expect(err).NotTo(HaveOccurred())
			reports, owners := map[string]string{}, 0
			for _, kv := range resp.Kvs {
				if id, ok := strings.CutPrefix(string(kv.Key), "/etcdkit/ranged/reports/"); ok {
					reports[id] = string(kv.Value)
				}
				if strings.HasPrefix(string(kv.Key), "/etcdkit/ranged/owners/") {
					owners++
				}
			}
			g.Expect(owners).To(Equal(1))
			g.Expect(reports).To(HaveLen(2))
			g.Expect(reports).To(ContainElement(ContainSubstring(`"keys":0`)), "the owner's report of its slice")
		}).Should(Succeed())
		out := etcdkitJSON[statusOutput](c, "status", "ranged")
		Expect(out.Mode).To(Equal("ranges"))
		Expect(out.Slices).To(HaveLen(1))
		Expect(out.Slices[0].Owner).To(Equal(out.Slices[0].Assigned))
		Expect(out.Sharding).To(BeNil())
		first := out.Slices[0]
		rev, _ := createRevision(cli, fmt.Sprintf("/etcdkit/ranged/owners/%d", first.ID))
		Expect(first.Token).To(Equal(rev))
		Expect(first.From).To(BeEmpty())
		r := etcdkit(c, "status", "ranged")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^SHARDING\s+range mode, %d slices$`, len(out.Slices)))
		Expect(r.stdout).To(MatchRegexp(`(?m)^SLICE\s+FROM\s+TO\s+ASSIGNED\s+OWNER\s+TOKEN\s+STATE$`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^%d\s+""\s.*\s%s\s+%s\s+%d\s+ok$`, first.ID, first.Assigned, first.Owner, first.Token))
	})

	It("shows the shard map before and after a member leaves", func() {
		mc, err := c.NewClient()
		Expect(err).NotTo(HaveOccurred())
		third, err := manager.New(manager.Options{
			Client: mc, Name: "jobs", ID: "c", Sharding: &manager.ShardingOptions{Shards: shards},
			HealthProbeAddr: "127.0.0.1:0", GracefulShutdownTimeout: 10 * time.Second,
		})
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- third.Start(ctx) }()
		members["c"] = third
		Eventually(settled).Should(Succeed())
		ownedBy := func(out statusOutput, id string) (n int) {
			for _, r := range out.Sharding.ShardMap {
				if r.Owner == id {
					n++
				}
			}
			return n
		}
		before := etcdkitJSON[statusOutput](c, "status", "jobs")
		Expect(before.Members).To(HaveLen(3))
		Expect(ownedBy(before, "c")).To(BeNumerically(">", 0))
		fmt.Fprintln(GinkgoWriter, etcdkit(c, "status", "jobs").stdout)

		cancel() // c leaves: it drains, releases its shards and deregisters
		Eventually(done, time.Minute).Should(Receive(BeNil()))
		Expect(mc.Close()).To(Succeed())
		delete(members, "c")
		Eventually(settled).Should(Succeed())
		Eventually(func(g Gomega) {
			after := etcdkitJSON[statusOutput](c, "status", "jobs")
			g.Expect(after.Members).To(HaveLen(2))
			g.Expect(ownedBy(after, "c")).To(BeZero())
			g.Expect(after.Sharding.Settled).To(BeTrue())
			g.Expect(ownedBy(after, "a") + ownedBy(after, "b")).To(Equal(shards))
		}).Should(Succeed())
		fmt.Fprintln(GinkgoWriter, etcdkit(c, "status", "jobs").stdout)
	})

	It("shows the shards of a member that registered but never claims them, and marks it unreachable", func() {
		ctx := context.Background()
		grant, err := cli.Grant(ctx, 60)
		Expect(err).NotTo(HaveOccurred())
		ghost, _ := json.Marshal(manager.MemberInfo{ID: "ghost", Address: "127.0.0.1:1", Started: time.Now().UTC(), State: manager.MemberActive})
		_, err = cli.Put(ctx, root+"members/ghost", string(ghost), clientv3.WithLease(grant.ID))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			_, err := cli.Revoke(context.Background(), grant.ID)
			Expect(err).NotTo(HaveOccurred())
			Eventually(settled).Should(Succeed())
		})
		// At rest once the ghost's shards are assigned to it and released by their owners.
		var ghostShards []int
		Eventually(func(g Gomega) {
			st, _ := members["a"].ShardStatus(ctx)
			ghostShards = nil
			for s := range shards {
				if st.Assignment[s] == "ghost" {
					ghostShards = append(ghostShards, s)
					g.Expect(st.Owners[s]).To(BeEmpty())
				} else {
					g.Expect(st.Owners[s]).To(Equal(st.Assignment[s]))
				}
			}
			g.Expect(ghostShards).NotTo(BeEmpty())
		}).Should(Succeed())

		out := etcdkitJSON[statusOutput](c, "status", "jobs", "--members", "--member-timeout", "500ms")
		Expect(out.Sharding.Settled).To(BeFalse())
		Expect(out.Sharding.AssignedNotOwned).To(Equal(ghostShards))
		Expect(out.Sharding.OwnedNotAssigned).To(BeEmpty())
		for _, s := range ghostShards {
			Expect(out.Sharding.ShardMap[s].State).To(Equal(shardUnowned))
			Expect(out.Sharding.ShardMap[s].Token).To(BeZero())
			Expect(out.Sharding.ShardMap[s].QueueDepth).To(BeNil())
		}
		Expect(out.Members).To(HaveLen(3))
		for _, m := range out.Members {
			Expect(m.Debug).NotTo(BeNil())
			if m.ID == "ghost" {
				Expect(m.Debug.Reachable).To(BeFalse())
				Expect(m.Debug.Error).To(HavePrefix("unreachable: "))
				Expect(m.Owned).To(BeZero())
				Expect(m.Assigned).To(Equal(len(ghostShards)))
			} else {
				Expect(m.Debug.Reachable).To(BeTrue(), m.Debug.Error)
			}
		}
		r := etcdkit(c, "status", "jobs", "--members", "--member-timeout", "500ms")
		Expect(r.code).To(Equal(0), r.stderr)
		Expect(r.stdout).To(MatchRegexp(`(?m)^SHARDING\s+8 shards, not settled$`))
		Expect(r.stdout).To(MatchRegexp(`(?m)^ghost\s+active\s+127\.0\.0\.1:1\s.*unreachable: `))
		Expect(r.stdout).To(MatchRegexp(`(?m)^%d\s+ghost\s+-\s+-\s+unowned\s+-\s+-$`, ghostShards[0]))
		Expect(r.stdout).To(MatchRegexp(`(?m)^assigned but not owned:\s+%s$`, ints(ghostShards)))
	})
})

// keys returns the keys of a JSON object.
func keys(v any) []string {
	m, ok := v.(map[string]any)
	if !ok {
		Fail(fmt.Sprintf("not a JSON object: %v", v))
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
