package fence_test

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
)

// A writer fenced by the create revision of the key it owns, as a sharded controller's
// reconcile is: the fence travels in the context, and a refused write wraps ErrFenced.
func Example() {
	f := fence.Fence{
		Cmps:   []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/owners/7"), "=", 1234)},
		Holder: "shard 7 (token 1234)",
	}
	ctx := fence.With(context.Background(), f)
	if got, ok := fence.From(ctx); ok {
		fmt.Println("writes carry the fence of", got.Holder)
	}
	var err error = &fence.Error{Key: "/jobs/a", Holder: f.Holder}
	fmt.Println(errors.Is(err, fence.ErrFenced), err)
	// Output:
	// writes carry the fence of shard 7 (token 1234)
	// true write to /jobs/a fenced: shard 7 (token 1234) no longer held
}
