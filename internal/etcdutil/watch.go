package etcdutil

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// The etcd client multiplexes the watches it is asked for onto one gRPC stream per set of
// outgoing metadata, and a stream carries the auth token it was opened with. etcd checks
// each new watch against that token, so once it has expired (a simple token unused for
// --auth-token-ttl, a JWT past its ttl) or grown old (a JWT issued before any change to
// users, roles or grants), every new watch on the stream is refused, while the watches
// already on it go on. Watch moves new watches to a new stream when that happens: opening
// a stream makes the client fetch a new token first.

// watchStreamKey is the outgoing metadata that sets a watch stream apart from the earlier
// ones. etcd ignores it.
const watchStreamKey = "etcdkit-watch-stream"

// watchAttempts bounds how many streams one Watch call tries: a watch refused for its
// token on a stream just opened with a new token will not fare better on another.
const watchAttempts = 3

// watchStreams holds the stream generation of each client whose token was refused once:
// new watches of such a client join the streams of its current generation. A client with
// no entry uses generation 0, the client's own streams.
var watchStreams sync.Map // *clientv3.Client -> *atomic.Uint64

// Watch is c.Watch for every etcdkit watcher: it watches key with the same options and
// returns once etcd has created the watch, with the same responses. A client that
// authenticates with a user name and password has watches that etcd refuses for the token
// of the stream they join (see above) sent again, at once, on a new stream opened with a
// new token, up to three streams in all; the last refusal comes back as a canceled
// response whose error etcderr classifies as TokenExpired (an expired token) or Transient
// (an old one), and watching again is the remedy. A client without credentials, or with a
// fixed Token that cannot be renewed, watches exactly as c.Watch does.
//
// Watches that need no new stream share the client's streams as c.Watch does, and cost one
// response read more while they are created; a watch with WithCreatedNotify costs a
// goroutine, which hands on the creation response that Watch read, while it runs.
func Watch(ctx context.Context, c *clientv3.Client, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	if c.Username == "" || c.Password == "" {
		return c.Watch(ctx, key, opts...)
	}
	notify := clientv3.OpWatch(key, opts...).IsCreatedNotify()
	// The creation response tells a watch that etcd created from one that it refused.
	opts = append(opts[:len(opts):len(opts)], clientv3.WithCreatedNotify())
	for attempt := 1; ; attempt++ {
		gen := streamGeneration(c)
		wch := c.Watch(onStream(ctx, gen), key, opts...)
		first, ok := <-wch
		switch {
		case !ok:
			return wch // ctx ended or the client was closed
		case first.Created && !first.Canceled:
			if !notify {
				return wch
			}
			return prepend(ctx, first, wch)
		case refusedForToken(first.Err()):
			// Whether this call tries again or not, the next watches go to a new stream.
			nextStreamGeneration(c, gen)
			if attempt < watchAttempts && ctx.Err() == nil {
				continue
			}
		}
		// Refused for another reason, or too often: the response ends the watch, as it
		// would have ended c.Watch's.
		last := make(chan clientv3.WatchResponse, 1)
		last <- first
		close(last)
		return last
	}
}

// onStream returns ctx with the metadata that puts watches on the streams of generation
// gen; generation 0 adds none.
func onStream(ctx context.Context, gen uint64) context.Context {
	if gen == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, watchStreamKey, strconv.FormatUint(gen, 10))
}

func streamGeneration(c *clientv3.Client) uint64 {
	if g, ok := watchStreams.Load(c); ok {
		return g.(*atomic.Uint64).Load()
	}
	return 0
}

// nextStreamGeneration moves c's new watches to new streams, unless another watch refused
// on the streams of generation gen did so already: the watches refused together open one
// stream.
func nextStreamGeneration(c *clientv3.Client, gen uint64) {
	g, loaded := watchStreams.LoadOrStore(c, new(atomic.Uint64))
	if !loaded {
		// The entry goes with the client.
		context.AfterFunc(c.Ctx(), func() { watchStreams.Delete(c) })
	}
	g.(*atomic.Uint64).CompareAndSwap(gen, gen+1)
}

// refusedForToken reports whether a watch was refused for the token of its stream: expired
// (etcd's "invalid auth token"), or issued before a change to users, roles or grants
// ("revision of auth store is old", JWT only: a simple token is checked against the current
// revision). The client hands the refusal on as a plain error that holds etcd's status
// message, not as rpctypes' typed errors.
func refusedForToken(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, rpctypes.ErrorDesc(rpctypes.ErrGRPCInvalidAuthToken)) ||
		strings.Contains(msg, rpctypes.ErrorDesc(rpctypes.ErrGRPCAuthOldRevision))
}

// prepend returns a channel with first and then every response of wch, closed when wch is
// closed or ctx ends.
func prepend(ctx context.Context, first clientv3.WatchResponse, wch clientv3.WatchChan) clientv3.WatchChan {
	out := make(chan clientv3.WatchResponse, 1)
	out <- first
	go func() {
		defer close(out)
		for wr := range wch {
			select {
			case out <- wr:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
