package etcdutil

import (
	"context"
	"time"

	"github.com/etcdkit/etcdkit/internal/etcderr"
)

// RetryTransient calls fn until it returns nil, an error that is not transient (see
// etcderr), or ctx ends (then it returns fn's last error), waiting a backoff of 20 ms
// doubling up to a second between calls. Only for calls that are safe to repeat: reads,
// and writes whose precondition makes a second application impossible.
func RetryTransient(ctx context.Context, fn func() error) error {
	bo := Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		err := fn()
		if err == nil || ctx.Err() != nil || !etcderr.IsTransient(err) {
			return err
		}
		if !Sleep(ctx, bo.Next()) {
			return err
		}
	}
}
