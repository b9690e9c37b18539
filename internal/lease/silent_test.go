package lease_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// throughProxies returns a client of c's member 0 through n silent proxies, all
// forwarding, once the client has had answers through each; both are closed when the test
// ends.
func throughProxies(t *testing.T, c *etcdtest.Cluster, n int) (*clientv3.Client, []*etcdtest.SilentProxy) {
	t.Helper()
	var ps []*etcdtest.SilentProxy
	var eps []string
	for range n {
		p, err := etcdtest.NewSilentProxy(c.Endpoint(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		ps = append(ps, p)
		eps = append(eps, p.Endpoint())
	}
	cfg := c.ClientConfig()
	cfg.Endpoints = eps
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	// Answers through each: the client's connections are ready and take requests in turn.
	waitFor(t, "answers through every proxy", func() bool {
		if _, err := cli.Get(context.Background(), "warm-up"); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if answers, _ := p.Counts(); answers < 3 {
				return false
			}
		}
		return true
	})
	return cli, ps
}

// Two of the three endpoints keep every request without answering, as paused members
// would: the client's connections to them stay ready and get their share of the requests.
// A Grant and every renewal still get through the third, within the TTL.
func TestGrantsAndRenewsPastMembersThatDoNotAnswer(t *testing.T) {
	c := etcdtest.New(t)
	cli, ps := throughProxies(t, c, 3)
	ps[0].Forward(false, false)
	ps[1].Forward(false, false)

	const ttl = 2
	asked := time.Now()
	s, err := lease.Grant(context.Background(), cli, ttl, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go s.KeepAlive() // ends with Close
	defer s.Close()
	// Each attempt of the Grant waits at most a third of the TTL: the lease it returns has
	// two thirds of its TTL left, less the margin for clock rates and a moment.
	if left := time.Until(s.Deadline()); left < ttl*time.Second*2/3-200*time.Millisecond {
		t.Fatalf("Grant returned a lease with %s left of its %ds", left, ttl)
	}
	first := s.Deadline()
	waitFor(t, "three TTLs of renewals", func() bool {
		if err := s.Cause(); err != nil {
			t.Fatalf("the session ended after %s: %v", time.Since(asked), err)
		}
		return s.Deadline().After(first.Add(3 * ttl * time.Second))
	})
	for _, p := range ps[:2] {
		if _, held := p.Counts(); held == 0 {
			t.Errorf("%s kept no request", p.Endpoint())
		}
	}
	ps[0].Forward(true, true)
	ps[1].Forward(true, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// etcd raises a TTL below its minimum (one and a half election timeouts, rounded up to
// seconds) without a word: the session keeps etcd's TTL, and Grant says so in its log.
func TestLogsATTLThatEtcdRaised(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithElectionTimeout(100*time.Millisecond, time.Second))
	var mu sync.Mutex
	var logged []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{})
	s, err := lease.Grant(context.Background(), c.Client(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	go s.KeepAlive() // ends with Close
	defer s.Close()
	if s.TTL() != 2*time.Second {
		t.Fatalf("TTL = %s, want etcd's minimum of 2s", s.TTL())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || !strings.Contains(logged[0], `"askedTTL"="1s" "grantedTTL"="2s"`) {
		t.Fatalf("logged %q, want one line with the asked and the granted TTL", logged)
	}
}

// A Grant that no member answers gives up after the TTL, with the etcd error of its last
// attempt, even when its context has no end: a lease granted that late would have no
// time left to be used.
func TestGrantGivesUpAfterTheTTL(t *testing.T) {
	c := etcdtest.New(t)
	cli, ps := throughProxies(t, c, 2)
	for _, p := range ps {
		p.Forward(false, false)
	}
	const ttl = 2
	s, err := lease.Grant(context.Background(), cli, ttl, logr.Discard())
	if err == nil {
		s.Close()
		t.Fatal("Grant succeeded through members that do not answer")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within the TTL") {
		t.Fatalf("err = %v, want the attempts' deadline and no answer within the TTL", err)
	}
	for _, p := range ps {
		p.Forward(true, true)
	}
}
