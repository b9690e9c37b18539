//go:build unix

package sharding_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/shard"
	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// harness is one spec's world: an etcd cluster of three processes (fresh for each spec, so
// that its history starts at revision 1), the member processes, and their history files.
type harness struct {
	c       *etcdtest.Cluster
	cli     *clientv3.Client
	dir     string
	web     *http.Client
	members []*member
	// memberTTL is the LeaseTTL of the members started from now on; ttl when 0.
	memberTTL time.Duration
	// ranges starts the members from now on in the range mode.
	ranges bool
}

func newHarness() *harness {
	GinkgoHelper()
	c := etcdtest.NewProcesses(GinkgoT(), etcdtest.WithMembers(3))
	tr := &http.Transport{DisableKeepAlives: true}
	DeferCleanup(tr.CloseIdleConnections)
	return &harness{c: c, cli: c.Client(), dir: GinkgoT().TempDir(), web: &http.Client{Transport: tr, Timeout: 2 * time.Second}}
}

// member is one member process.
type member struct {
	*gexec.Session
	id      string
	history string // its history file
	url     string // its /debug/shards
	// What a spec did to it: when it was killed with -9, paused and resumed.
	killed, paused, resumed time.Time
}

var shardsURL = regexp.MustCompile(`shards=(\S+)\n`)

// start starts a member process; it is killed when the spec ends.
func (h *harness) start(id string) *member {
	GinkgoHelper()
	m := &member{id: id, history: filepath.Join(h.dir, id+".jsonl")}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		memberEnv+"="+id,
		endpointsEnv+"="+strings.Join(h.c.Endpoints(), ","),
		historyEnv+"="+m.history,
	)
	if h.memberTTL != 0 {
		cmd.Env = append(cmd.Env, ttlEnv+"="+h.memberTTL.String())
	}
	if h.ranges {
		cmd.Env = append(cmd.Env, rangesEnv+"=1")
	}
	s, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { s.Kill().Wait(10 * time.Second) })
	m.Session = s
	Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(shardsURL.String()))
	m.url = string(shardsURL.FindSubmatch(s.Out.Contents())[1])
	h.members = append(h.members, m)
	return m
}

// kill ends m with SIGKILL, as a crash would, and waits for the process to be gone.
func (m *member) kill() {
	GinkgoHelper()
	m.killed = time.Now()
	m.Kill()
	Eventually(m.Session).Should(gexec.Exit())
}

// status reads m's /debug/shards.
func (h *harness) status(m *member) (manager.ShardStatus, error) {
	var st manager.ShardStatus
	resp, err := h.web.Get(m.url)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: %s", m.url, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// leader returns the member of ms that leads, as the /debug/shards of the first tells.
func (h *harness) leader(ms ...*member) *member {
	GinkgoHelper()
	var lead *member
	Eventually(func(g Gomega) {
		st, err := h.status(ms[0])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(st.Leader).NotTo(BeEmpty())
		lead = nil
		for _, m := range ms {
			if m.id == st.Leader {
				lead = m
			}
		}
		g.Expect(lead).NotTo(BeNil(), "leader %q", st.Leader)
	}).Should(Succeed())
	return lead
}

// itemKey names item i.
func itemKey(i int) string { return fmt.Sprintf("%s%03d", itemsPrefix, i) }

// outKey is where the output of an item goes.
func outKey(item string) string { return outPrefix + strings.TrimPrefix(item, itemsPrefix) }

// putItems writes items 0..n-1 with value v, 100 to a transaction.
func (h *harness) putItems(ctx context.Context, n int, v string) {
	GinkgoHelper()
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, clientv3.OpPut(itemKey(j), v))
		}
		_, err := h.cli.Txn(ctx).Then(ops...).Commit()
		Expect(err).NotTo(HaveOccurred())
	}
}

// owner is owners/<shard> as etcd has it: the member, its token (the key's create
// revision) and the key's mod revision.
type owner struct {
	Member     string
	Token, Mod int64
}

func shardOfKey(key, prefix string) (int, bool) {
	s, err := strconv.Atoi(strings.TrimPrefix(key, prefix))
	return s, err == nil && s >= 0 && s < shards
}

// owners reads owners/ from etcd.
func (h *harness) owners(ctx context.Context, opts ...clientv3.OpOption) (map[int]owner, error) {
	resp, err := h.cli.Get(ctx, root+"owners/", append(opts, clientv3.WithPrefix())...)
	if err != nil {
		return nil, err
	}
	out := map[int]owner{}
	for _, kv := range resp.Kvs {
		if s, ok := shardOfKey(string(kv.Key), root+"owners/"); ok {
			out[s] = owner{Member: string(kv.Value), Token: kv.CreateRevision, Mod: kv.ModRevision}
		}
	}
	return out, nil
}

// assignment is assignments/<shard> as etcd has it.
type assignment struct {
	Member string
	Mod    int64
}

// assignments is assignments/ as etcd has it at revision rev.
type assignments struct {
	rev    int64
	shards map[int]assignment
}

// assignments reads assignments/ from etcd.
func (h *harness) assignments(ctx context.Context) (assignments, error) {
	resp, err := h.cli.Get(ctx, root+"assignments/", clientv3.WithPrefix())
	if err != nil {
		return assignments{}, err
	}
	out := assignments{rev: resp.Header.Revision, shards: map[int]assignment{}}
	for _, kv := range resp.Kvs {
		if s, ok := shardOfKey(string(kv.Key), root+"assignments/"); ok {
			out.shards[s] = assignment{Member: string(kv.Value), Mod: kv.ModRevision}
		}
	}
	return out, nil
}

// registered reads members/ from etcd.
func (h *harness) registered(ctx context.Context) (map[string]manager.MemberInfo, error) {
	resp, err := h.cli.Get(ctx, root+"members/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]manager.MemberInfo{}
	for _, kv := range resp.Kvs {
		var info manager.MemberInfo
		if err := json.Unmarshal(kv.Value, &info); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), root+"members/")] = info
	}
	return out, nil
}

// shardsOf returns the shards m owns, as etcd has them.
func shardsOf(owners map[int]owner, id string) []int {
	var out []int
	for s := 0; s < shards; s++ {
		if o, ok := owners[s]; ok && o.Member == id {
			out = append(out, s)
		}
	}
	return out
}

// settled holds when exactly the members ms are registered and active, every shard is
// assigned to one of them and owned by its assignee, the assignment is balanced, and each
// member's /debug/shards shows it serving the very shards etcd says it owns, with the
// same tokens, none of them draining.
func (h *harness) settled(ms ...*member) func(g Gomega) {
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.id)
	}
	return func(g Gomega) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reg, err := h.registered(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(reg).To(HaveLen(len(ids)), "registered members")
		for _, id := range ids {
			g.Expect(reg).To(HaveKey(id))
			g.Expect(reg[id].State).To(Equal(manager.MemberActive), id)
		}
		as, err := h.assignments(ctx)
		g.Expect(err).NotTo(HaveOccurred())
		owners, err := h.owners(ctx, clientv3.WithRev(as.rev))
		g.Expect(err).NotTo(HaveOccurred())
		count := map[string]int{}
		for s := 0; s < shards; s++ {
			g.Expect(as.shards[s].Member).To(BeElementOf(ids), "assignee of shard %d", s)
			g.Expect(owners[s].Member).To(Equal(as.shards[s].Member), "owner of shard %d", s)
			count[owners[s].Member]++
		}
		for _, id := range ids {
			g.Expect(count[id]).To(BeNumerically(">=", shards/len(ids)), "shards of %s", id)
			g.Expect(count[id]).To(BeNumerically("<=", (shards+len(ids)-1)/len(ids)), "shards of %s", id)
		}
		for _, m := range ms {
			st, err := h.status(m)
			g.Expect(err).NotTo(HaveOccurred())
			var owned []int
			for _, o := range st.Owned {
				owned = append(owned, o.Shard)
				g.Expect(o.Token).To(Equal(owners[o.Shard].Token), "token of shard %d on %s", o.Shard, m.id)
				g.Expect(o.Draining).To(BeFalse(), "shard %d on %s draining", o.Shard, m.id)
			}
			g.Expect(owned).To(Equal(shardsOf(owners, m.id)), "the shards %s serves against those etcd says it owns", m.id)
		}
	}
}

// converged holds when every item's output holds the item's latest value and was written
// by the current owner of the item's shard, under its current token.
func (h *harness) converged(g Gomega) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	items, err := h.cli.Get(ctx, itemsPrefix, clientv3.WithPrefix())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(items.Kvs).NotTo(BeEmpty())
	outs, err := h.cli.Get(ctx, outPrefix, clientv3.WithPrefix(), clientv3.WithRev(items.Header.Revision))
	g.Expect(err).NotTo(HaveOccurred())
	owners, err := h.owners(ctx, clientv3.WithRev(items.Header.Revision))
	g.Expect(err).NotTo(HaveOccurred())
	byKey := map[string]output{}
	for _, kv := range outs.Kvs {
		var o output
		g.Expect(json.Unmarshal(kv.Value, &o)).To(Succeed(), string(kv.Key))
		byKey[string(kv.Key)] = o
	}
	for _, kv := range items.Kvs {
		item := string(kv.Key)
		s := shard.Of(item, shards)
		g.Expect(byKey).To(HaveKey(outKey(item)))
		got := byKey[outKey(item)]
		g.Expect(got).To(Equal(output{Member: owners[s].Member, Shard: s, Token: owners[s].Token, Item: string(kv.Value)}),
			"%s (shard %d): its output against its value and its shard's owner", item, s)
	}
}

// writer updates random items among the first n, one every `every`, until stopped.
type writer struct {
	cancel context.CancelFunc
	done   chan struct{}
	writes atomic.Int64 // accepted
}

func (h *harness) startWriter(n int, every time.Duration) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel, done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(uint64(GinkgoRandomSeed()), uint64(n)))
	go func() { // the writer: ends when stop cancels ctx
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := h.cli.Put(pctx, itemKey(rng.IntN(n)), "v"+strconv.Itoa(seq))
			pcancel()
			if err == nil {
				w.writes.Add(1)
			}
		}
	}()
	DeferCleanup(w.stop)
	return w
}

// stop stops the writer and waits for it; it may be called again.
func (w *writer) stop() {
	w.cancel()
	<-w.done
}
