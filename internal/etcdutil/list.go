package etcdutil

import (
	"context"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPageSize bounds each range request of ListPrefix when the caller gives no size.
const DefaultPageSize = 500

// ListPrefix reads every key under prefix as one consistent snapshot, in pages of
// pageSize (DefaultPageSize when 0 or less): the first page fixes the revision (rev, or the
// current one when rev is 0) and the following pages are read at that revision. It
// returns the keys, sorted, and the revision they reflect.
func ListPrefix(ctx context.Context, cli *clientv3.Client, prefix string, rev, pageSize int64) ([]*mvccpb.KeyValue, int64, error) {
	return ListRange(ctx, cli, prefix, clientv3.GetPrefixRangeEnd(prefix), rev, pageSize)
}

// ListRange reads every key in [start, end) as ListPrefix reads a prefix.
func ListRange(ctx context.Context, cli *clientv3.Client, start, end string, rev, pageSize int64) ([]*mvccpb.KeyValue, int64, error) {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	from := start
	var kvs []*mvccpb.KeyValue
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		kvs = append(kvs, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return kvs, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Sleep waits d or until ctx ends, and reports whether the full wait happened.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Bound returns a context that ends when ctx or stop ends, with the cause of the first to
// end. Its values are ctx's.
func Bound(ctx, stop context.Context) (context.Context, context.CancelFunc) {
	bound, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(stop, func() { cancel(context.Cause(stop)) })
	return bound, func() {
		unhook()
		cancel(nil)
	}
}

// Backoff is an exponential delay with jitter: Min, doubling up to Max, each within ±20%.
// The zero value is not useful; set Min and Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	jitter := time.Duration((rand.Float64()*0.4 - 0.2) * float64(b.cur))
	return b.cur + jitter
}

// Reset starts the delays from Min again.
func (b *Backoff) Reset() { b.cur = 0 }
