package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/lease"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

// keyOn puts a key on the session's lease and reports whether etcd still has it.
func keyOn(t *testing.T, cli *clientv3.Client, s *lease.Session) func() bool {
	t.Helper()
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/lease-test", "x", clientv3.WithLease(s.ID())); err != nil {
		t.Fatal(err)
	}
	return func() bool {
		resp, err := cli.Get(ctx, "/lease-test")
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) == 1
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKeptAlivePastItsTTLAndRevokedOnClose(t *testing.T) {
	c := etcdtest.New(t)
	s, err := lease.Grant(context.Background(), c.Client(), 2, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go s.KeepAlive() // ends with Close
	exists := keyOn(t, c.Client(), s)
	first := s.Deadline()
	// The deadline moves on with the keep-alives, past the first TTL.
	waitFor(t, "a renewal", func() bool { return s.Deadline().After(first.Add(time.Second)) })
	if !s.Valid() || !exists() {
		t.Fatal("a kept-alive session is not valid, or its key is gone")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.Valid() || !errors.Is(s.Cause(), lease.ErrClosed) {
		t.Fatalf("closed session: valid=%v cause=%v", s.Valid(), s.Cause())
	}
	if exists() {
		t.Fatal("Close did not revoke the lease")
	}
}

func TestEndsByItsOwnClockWhenEtcdIsCutOff(t *testing.T) {
	c := etcdtest.New(t)
	px, err := etcdtest.NewProxy(c.Endpoint(0))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	cfg := c.ClientConfig()
	cfg.Endpoints = []string{px.Endpoint()}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, err := lease.Grant(context.Background(), cli, 2, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go s.KeepAlive() // ends when the session is lost
	exists := keyOn(t, c.Client(), s)
	px.Block()
	<-s.Context().Done()
	if !errors.Is(s.Cause(), lease.ErrLost) {
		t.Fatalf("cause = %v, want ErrLost", s.Cause())
	}
	if s.Valid() {
		t.Fatal("a lost session is valid")
	}
	waitFor(t, "etcd to expire the lease", func() bool { return !exists() })
	px.Unblock()
	<-s.Done()
}
