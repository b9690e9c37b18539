package election_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/election"
)

// A candidate process is this test binary started again with candidateEnv set: TestMain
// then runs runCandidate instead of the suite. The candidate campaigns with Run and tells
// its story on stdout, one line each:
//
//	elected token=<n>       OnElected ran
//	defeated                OnDefeat ran
//	probe leader=<bool> ctx=<leader context's error or "live"> write=<ok|fenced|error: ...>
//
// It answers "probe" lines on stdin; the probe's write is made under the guard it took when
// it was last elected, as a worker holding on to its fence would. It leaves when stdin closes.
const (
	candidateEnv = "ETCDKIT_ELECTION_CANDIDATE" // the candidate's id
	endpointsEnv = "ETCDKIT_ELECTION_ENDPOINTS"
	prefixEnv    = "ETCDKIT_ELECTION_PREFIX"
	ttlEnv       = "ETCDKIT_ELECTION_TTL"
	// fencedKey is where probes write under their guard.
	fencedKey = "/test/fenced"
)

func runCandidate() int {
	id := os.Getenv(candidateEnv)
	ttl, err := time.ParseDuration(os.Getenv(ttlEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "candidate: bad TTL:", err)
		return 2
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(os.Getenv(endpointsEnv), ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "candidate:", err)
		return 1
	}
	defer cli.Close()
	prefix := os.Getenv(prefixEnv)
	e, err := election.New(cli, prefix, election.Options{ID: id, TTL: ttl})
	if err != nil {
		fmt.Fprintln(os.Stderr, "candidate:", err)
		return 2
	}

	var mu sync.Mutex // guards stdout and the fence
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	var guard clientv3.Cmp
	var leaderCtx context.Context
	e.OnElected(func() {
		g, lctx, token := e.Guard(), e.LeaderContext(), e.Token()
		mu.Lock()
		guard, leaderCtx = g, lctx
		mu.Unlock()
		say("elected token=%d", token)
	})
	e.OnDefeat(func() { say("defeated") })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Run(ctx)
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "probe" {
			continue
		}
		leader := e.IsLeader()
		mu.Lock()
		g, lctx := guard, leaderCtx
		mu.Unlock()
		state, write := "none", "none"
		if lctx != nil {
			state = "live"
			if err := lctx.Err(); err != nil {
				state = err.Error()
			}
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := cli.Txn(wctx).If(g).Then(clientv3.OpPut(fencedKey, id)).Commit()
			wcancel()
			switch {
			case err != nil:
				write = "error: " + err.Error()
			case resp.Succeeded:
				write = "ok"
			default:
				write = "fenced"
			}
		}
		say("probe leader=%t ctx=%s write=%s", leader, state, write)
	}
	cancel()
	<-done
	_ = e.Close()
	return 0
}

// candidateProcess is a candidate running in its own process.
type candidateProcess struct {
	*gexec.Session
	stdin interface{ Write([]byte) (int, error) }
}

// startCandidate starts a candidate process; it is killed when the spec ends.
func startCandidate(endpoints []string, prefix, id string) *candidateProcess {
	GinkgoHelper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		candidateEnv+"="+id,
		endpointsEnv+"="+strings.Join(endpoints, ","),
		prefixEnv+"="+prefix,
		ttlEnv+"="+ttl.String(),
	)
	stdin, err := cmd.StdinPipe()
	Expect(err).NotTo(HaveOccurred())
	s, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		_ = stdin.Close()
		s.Kill().Wait(10 * time.Second)
	})
	return &candidateProcess{Session: s, stdin: stdin}
}

// probe asks the candidate for its state.
func (p *candidateProcess) probe() {
	GinkgoHelper()
	_, err := p.stdin.Write([]byte("probe\n"))
	Expect(err).NotTo(HaveOccurred())
}
