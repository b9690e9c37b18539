//go:build unix

package finalizer_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/store"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

const children = 20

var _ = Describe("the finalizer protocol across processes", func() {
	var (
		c       *etcdtest.Cluster
		cli     *clientv3.Client
		parents *store.Store[parent]
		deletes *deleteLog
	)
	BeforeEach(func(ctx SpecContext) {
		c = etcdtest.NewProcesses(GinkgoT())
		cli = c.Client()
		var err error
		parents, err = store.New[parent](cli, parentsPrefix, store.Options[parent]{})
		Expect(err).NotTo(HaveOccurred())
		deletes = watchDeletes(cli)
	})

	start := func(id string) *gexec.Session {
		GinkgoHelper()
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), memberEnv+"="+id, endpointsEnv+"="+strings.Join(c.Endpoints(), ","))
		s, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { s.Kill().Wait(10 * time.Second) })
		Eventually(s.Out).Should(gbytes.Say("ready"))
		return s
	}
	// withChildren creates a parent and its children, and waits for the controller's
	// finalizer on it.
	withChildren := func(ctx context.Context, name string) {
		GinkgoHelper()
		for i := range children {
			_, err := cli.Put(ctx, childKey(name, i), "child of "+name)
			Expect(err).NotTo(HaveOccurred())
		}
		_, err := parents.Create(ctx, parents.Key(name), &parent{Children: children})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			p, err := parents.Get(ctx, parents.Key(name))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Value.HasFinalizer(finalizer)).To(BeTrue())
		}).Should(Succeed())
	}
	left := func(ctx context.Context, name string) func() int64 {
		return func() int64 {
			resp, err := cli.Get(ctx, childrenPrefix+name+"-", clientv3.WithPrefix(), clientv3.WithCountOnly())
			Expect(err).NotTo(HaveOccurred())
			return resp.Count
		}
	}
	// cleanedUp waits for the parent to be gone and checks that it went only after every
	// child had.
	cleanedUp := func(ctx context.Context, name string) {
		GinkgoHelper()
		Eventually(func() bool { _, ok := deletes.at(parents.Key(name)); return ok }).Should(BeTrue())
		Expect(left(ctx, name)()).To(BeZero())
		parentRev, _ := deletes.at(parents.Key(name))
		for i := range children {
			rev, ok := deletes.at(childKey(name, i))
			Expect(ok).To(BeTrue(), "child %d deleted", i)
			Expect(rev).To(BeNumerically("<", parentRev), "child %d deleted before its parent", i)
		}
	}

	It("finishes the cleanup of a delete made while every replica was down", func(ctx SpecContext) {
		a := start("a")
		withChildren(ctx, "p1")
		a.Signal(syscall.SIGTERM)
		Eventually(a).Should(gexec.Exit(0))

		Expect(parents.Delete(ctx, parents.Key("p1"), 0)).To(Succeed())
		p, err := parents.Get(ctx, parents.Key("p1"))
		Expect(err).NotTo(HaveOccurred(), "the delete marks the parent while its finalizer is there")
		Expect(p.Value.Deleting()).To(BeTrue())
		Expect(left(ctx, "p1")()).To(BeEquivalentTo(children))

		start("b")
		cleanedUp(ctx, "p1")
	})

	It("finishes a cleanup whose replica is killed with -9 in the middle of it", func(ctx SpecContext) {
		a := start("a")
		withChildren(ctx, "p2")
		Expect(parents.Delete(ctx, parents.Key("p2"), 0)).To(Succeed())
		Eventually(left(ctx, "p2")).Should(BeNumerically("<", children))
		a.Kill()
		Eventually(a).Should(gexec.Exit())
		remaining := left(ctx, "p2")()
		Expect(remaining).To(BeNumerically(">", 0), "the kill came after the cleanup ended: make cleanupStep longer")
		p, err := parents.Get(ctx, parents.Key("p2"))
		Expect(err).NotTo(HaveOccurred())
		Expect(p.Value.Deleting()).To(BeTrue())

		start("b")
		cleanedUp(ctx, "p2")
	})
})
