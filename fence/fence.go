package fence

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Fence is the condition under which a writer may still write: comparisons that hold only
// while it owns the work, and a description for errors and logs.
type Fence struct {
	// Cmps must all hold for a write to be accepted.
	Cmps []clientv3.Cmp
	// Holder describes the ownership, e.g. "shard 7 (token 1234)" or "leader (token 99)".
	Holder string
}

type ctxKey struct{}

// With returns a context whose writes (store writes, and any transaction built with
// From) carry f. A Fence without comparisons fences nothing.
func With(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, ctxKey{}, f)
}

// From returns the fence of ctx, if it has one with at least one comparison.
func From(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(ctxKey{}).(Fence)
	return f, ok && len(f.Cmps) > 0
}

// ErrFenced is what a write refused by its fence wraps: the writer no longer owns the work
// (it lost its shard or the leadership), nothing was written, and the writer must stop.
// Check it with errors.Is.
var ErrFenced = errors.New("fenced")

// Error is a write refused because its fence no longer held.
type Error struct {
	// Key is the key the write was for.
	Key string
	// Holder is the fence's description.
	Holder string
}

// Error names the key and the ownership that ended.
func (e *Error) Error() string {
	return fmt.Sprintf("write to %s fenced: %s no longer held", e.Key, e.Holder)
}

// Is makes errors.Is(err, ErrFenced) hold.
func (e *Error) Is(target error) bool { return target == ErrFenced }
