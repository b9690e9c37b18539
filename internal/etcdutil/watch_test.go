package etcdutil_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// waitLimit bounds every wait for etcd: generous, for a loaded machine.
const waitLimit = 10 * time.Second

// requests counts what a client asks etcd for, as its gRPC connection sees it: each
// attempt, including the token requests that the client makes before it opens a stream.
type requests struct {
	authenticate  atomic.Int64 // token requests
	watchStreams  atomic.Int64 // watch streams opened
	watchCreates  atomic.Int64 // watch create requests sent
	tokenRefusals atomic.Int64 // watch creates that etcd refused for their stream's token
	keepAlives    atomic.Int64 // lease keep-alive streams opened
}

func (n *requests) String() string {
	return fmt.Sprintf("token requests %d, watch streams %d, watch creates %d, refused for the token %d, keep-alive streams %d",
		n.authenticate.Load(), n.watchStreams.Load(), n.watchCreates.Load(), n.tokenRefusals.Load(), n.keepAlives.Load())
}

func (n *requests) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method == "/etcdserverpb.Auth/Authenticate" {
				n.authenticate.Add(1)
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			switch method {
			case "/etcdserverpb.Lease/LeaseKeepAlive":
				n.keepAlives.Add(1)
			case "/etcdserverpb.Watch/Watch":
				n.watchStreams.Add(1)
				s, err := streamer(ctx, desc, cc, method, opts...)
				if err != nil {
					return nil, err
				}
				return &countedWatchStream{ClientStream: s, n: n}, nil
			}
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

type countedWatchStream struct {
	grpc.ClientStream
	n *requests
}

func (s *countedWatchStream) SendMsg(m any) error {
	if r, ok := m.(*pb.WatchRequest); ok && r.GetCreateRequest() != nil {
		s.n.watchCreates.Add(1)
	}
	return s.ClientStream.SendMsg(m)
}

func (s *countedWatchStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*pb.WatchResponse); ok && err == nil && r.Canceled &&
		(strings.Contains(r.CancelReason, "invalid auth token") || strings.Contains(r.CancelReason, "revision of auth store is old")) {
		s.n.tokenRefusals.Add(1)
	}
	return err
}

// countedClient returns a new client made from cfg whose requests are counted.
func countedClient(t *testing.T, cfg clientv3.Config) (*clientv3.Client, *requests) {
	t.Helper()
	n := &requests{}
	cfg.DialOptions = append(cfg.DialOptions, n.dialOptions()...)
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli, n
}

// nextResponse returns the next response of a watch, failing the test when none comes.
func nextResponse(t *testing.T, what string, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case wr, ok := <-wch:
		if !ok {
			t.Fatalf("%s: the watch channel was closed", what)
		}
		return wr
	case <-timer.C:
		t.Fatalf("%s: no watch response within %s", what, waitLimit)
	}
	return clientv3.WatchResponse{}
}

// expectPut reads a watch up to its next event, which must be a put of key.
func expectPut(t *testing.T, what string, wch clientv3.WatchChan, key string) {
	t.Helper()
	for {
		wr := nextResponse(t, what, wch)
		if err := wr.Err(); err != nil {
			t.Fatalf("%s: the watch ended waiting for %s: %v (%v)", what, key, err, etcderr.Classify(err))
		}
		if len(wr.Events) == 0 {
			continue // a progress notification
		}
		if ev := wr.Events[0]; ev.Type != clientv3.EventTypePut || string(ev.Kv.Key) != key {
			t.Fatalf("%s: got %s %s, want a put of %s", what, ev.Type, ev.Kv.Key, key)
		}
		return
	}
}

func put(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := cli.Put(ctx, key, "v", opts...); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// TestWatchPastTokenTTL runs watches and a lease for five token TTLs, with tokens that
// expire when unused (simple) and tokens that expire on a clock (JWT). A watch opened at
// the start delivers every event; watches opened after its stream's token expired are
// created and deliver too; a lease renewed by KeepAliveOnce every second stays; and no
// request is repeated in a loop.
func TestWatchPastTokenTTL(t *testing.T) {
	const ttl = 2 * time.Second
	for _, tc := range []struct {
		name   string
		tokens etcdtest.Option
	}{
		{"simple", etcdtest.WithSimpleTokenTTL(ttl)},
		{"jwt", etcdtest.WithJWT(ttl)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcdtest.New(t, etcdtest.WithAuth("root-pw"), tc.tokens)
			cli, n := countedClient(t, c.ClientConfig())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			grant, err := cli.Grant(ctx, 4)
			if err != nil {
				t.Fatal(err)
			}
			put(t, cli, "/leased", clientv3.WithLease(grant.ID))

			first := etcdutil.Watch(ctx, cli, "/first/", clientv3.WithPrefix())
			start := time.Now()
			var late []clientv3.WatchChan
			keepAlives := 0
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for i := 0; time.Since(start) < 5*ttl; i++ {
				<-tick.C
				kctx, kcancel := context.WithTimeout(ctx, waitLimit)
				_, err := cli.KeepAliveOnce(kctx, grant.ID)
				kcancel()
				if err != nil {
					t.Fatalf("KeepAliveOnce after %s: %v (%v)", time.Since(start).Round(time.Millisecond), err, etcderr.Classify(err))
				}
				keepAlives++

				key := fmt.Sprintf("/first/%02d", i)
				put(t, cli, key)
				expectPut(t, "the watch opened at the start", first, key)

				// From two TTLs on, the first stream's token has expired: a simple token lasts
				// up to TTL + 1 s after its last use, the watch created at the start.
				if time.Since(start) < 2*ttl {
					continue
				}
				late = append(late, etcdutil.Watch(ctx, cli, "/late/", clientv3.WithPrefix()))
				key = fmt.Sprintf("/late/%02d", i)
				put(t, cli, key)
				for j, wch := range late {
					expectPut(t, fmt.Sprintf("watch %d of %d opened late, after %s", j+1, len(late), time.Since(start).Round(time.Millisecond)), wch, key)
				}
			}
			elapsed := time.Since(start)
			resp, err := cli.Get(ctx, "/leased")
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("the key on the kept-alive lease: %v, %v", resp, err)
			}

			ttls := float64(elapsed) / float64(ttl)
			t.Logf("%s tokens, TTL %s, %s (%.1f TTLs), %d watches opened late, %d KeepAliveOnce: %s",
				tc.name, ttl, elapsed.Round(time.Millisecond), ttls, len(late), keepAlives, n)
			t.Logf("per TTL: %.1f token requests, %.1f watch streams, %.1f watch creates, %.1f refused for the token",
				float64(n.authenticate.Load())/ttls, float64(n.watchStreams.Load())/ttls,
				float64(n.watchCreates.Load())/ttls, float64(n.tokenRefusals.Load())/ttls)
			refused := n.tokenRefusals.Load()
			if refused == 0 {
				t.Fatal("no watch was refused for its stream's token: the test did not meet an expired token")
			}
			// Each refusal costs one watch create and one stream more, and nothing else.
			watches := int64(1 + len(late))
			if max := watches + refused; n.watchCreates.Load() > max {
				t.Errorf("%d watch creates for %d watches and %d refusals, want at most %d", n.watchCreates.Load(), watches, refused, max)
			}
			if refused > int64(len(late)) {
				t.Errorf("%d refusals for %d watches opened late", refused, len(late))
			}
			if max := 1 + refused + 1; n.watchStreams.Load() > max { // one reconnection spared
				t.Errorf("%d watch streams opened, want at most %d", n.watchStreams.Load(), max)
			}
			// A token for the client, one for each stream it opens, a few for unary requests.
			if max := 1 + n.watchStreams.Load() + n.keepAlives.Load() + int64(ttls) + 2; n.authenticate.Load() > max {
				t.Errorf("%d token requests, want at most %d", n.authenticate.Load(), max)
			}
		})
	}
}

// TestWatchAfterAuthChange: a JWT carries the revision of etcd's users and roles it was
// issued at, and etcd refuses a watch on a stream whose token is older than the latest
// change. Watch opens a new stream instead.
func TestWatchAfterAuthChange(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithAuth("root-pw"), etcdtest.WithJWT(time.Hour))
	cli, n := countedClient(t, c.ClientConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := etcdutil.Watch(ctx, cli, "/a")
	if _, err := c.Client().RoleAdd(ctx, "another-role"); err != nil {
		t.Fatal(err)
	}
	second := etcdutil.Watch(ctx, cli, "/b")
	put(t, cli, "/a")
	put(t, cli, "/b")
	expectPut(t, "the watch opened before the change", first, "/a")
	expectPut(t, "the watch opened after the change", second, "/b")
	t.Logf("%s", n)
	if n.tokenRefusals.Load() != 1 || n.watchStreams.Load() != 2 {
		t.Fatalf("want one refusal and one stream more: %s", n)
	}
}

// TestWatchSharesStreams: without an expired token, watches cost what c.Watch's cost: one
// stream for them all, one create each, with auth or without.
func TestWatchSharesStreams(t *testing.T) {
	for _, auth := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth=%v", auth), func(t *testing.T) {
			var opts []etcdtest.Option
			if auth {
				opts = append(opts, etcdtest.WithAuth("root-pw"))
			}
			c := etcdtest.New(t, opts...)
			cli, n := countedClient(t, c.ClientConfig())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const watches = 5
			var wchs []clientv3.WatchChan
			for i := 0; i < watches; i++ {
				wchs = append(wchs, etcdutil.Watch(ctx, cli, fmt.Sprintf("/k%d", i)))
			}
			for i, wch := range wchs {
				key := fmt.Sprintf("/k%d", i)
				put(t, cli, key)
				expectPut(t, key, wch, key)
			}
			t.Logf("%d watches: %s", watches, n)
			if n.watchStreams.Load() != 1 || n.watchCreates.Load() != watches {
				t.Fatalf("want 1 stream and %d creates: %s", watches, n)
			}
		})
	}
}

// TestWatchResponses: with auth on, Watch hands on the creation response when asked for,
// once; hands on a refusal that is not for the token at once, without another stream;
// and closes the channel when ctx ends.
func TestWatchResponses(t *testing.T) {
	c := etcdtest.New(t, etcdtest.WithAuth("root-pw"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := c.Client()
	if _, err := root.RoleAdd(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.RoleGrantPermission(ctx, "mine", "/mine/", clientv3.GetPrefixRangeEnd("/mine/"), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.UserAdd(ctx, "user", "user-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.UserGrantRole(ctx, "user", "mine"); err != nil {
		t.Fatal(err)
	}
	cfg := c.ClientConfig()
	cfg.Username, cfg.Password = "user", "user-pw"
	cli, n := countedClient(t, cfg)

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	notified := etcdutil.Watch(wctx, cli, "/mine/k", clientv3.WithCreatedNotify())
	if wr := nextResponse(t, "created", notified); !wr.Created || wr.Err() != nil {
		t.Fatalf("first response: %+v, want the creation", wr)
	}
	put(t, cli, "/mine/k")
	wr := nextResponse(t, "event", notified)
	if wr.Created || len(wr.Events) != 1 {
		t.Fatalf("second response: %+v, want the event alone", wr)
	}

	denied := etcdutil.Watch(ctx, cli, "/theirs/k")
	wr = nextResponse(t, "denied", denied)
	if !wr.Canceled || !etcderr.IsPermanent(wr.Err()) {
		t.Fatalf("a watch on a key the user may not read: %+v (%v), want a permanent refusal", wr, wr.Err())
	}
	if _, ok := <-denied; ok {
		t.Fatal("the refused watch's channel is still open")
	}
	if n.watchStreams.Load() != 1 || n.watchCreates.Load() != 2 {
		t.Fatalf("want one stream and two creates: %s", n)
	}

	wcancel()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for open := true; open; {
		select {
		case _, open = <-notified:
		case <-timer.C:
			t.Fatal("the channel of a watch whose context ended is still open")
		}
	}
}
