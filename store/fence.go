package store

import (
	"context"

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

type fenceKey struct{}

// WithFence returns a context whose store writes carry the fence.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom returns the fence of ctx, if it has one.
func FenceFrom(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok && len(f.Cmps) > 0
}
