package manager

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// checkUniqueID returns ErrDuplicateID, wrapped, when a running replica campaigns in this
// manager's election under the same ID (a sharded manager finds it at registration
// instead). A candidate key left by a crashed predecessor with this ID goes with its
// lease: it is waited for, up to that lease's TTL and a second. Two replicas with one ID
// that start within the same moment can both pass: the check is for the common mistake of
// a copied configuration, not a lock.
func (m *Manager) checkUniqueID(ctx context.Context) error {
	prefix := m.election.Prefix()
	var giveUp time.Time
	for {
		resp, err := m.client.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("manager: reading the candidates under %s: %w", prefix, err)
		}
		var other *mvccpb.KeyValue
		for _, kv := range resp.Kvs {
			if string(kv.Value) == m.opts.ID {
				other = kv
				break
			}
		}
		if other == nil {
			return nil
		}
		if giveUp.IsZero() {
			wait := m.predecessorWait(ctx, clientv3.LeaseID(other.Lease))
			giveUp = time.Now().Add(wait)
			m.log.Info("replica ID campaigns on another lease; waiting for it to expire", "key", string(other.Key), "upTo", wait)
		}
		if time.Now().After(giveUp) {
			return fmt.Errorf("%w: %q campaigns at %s on lease %x, which is kept alive by a running replica; give every replica its own ID",
				ErrDuplicateID, m.opts.ID, other.Key, other.Lease)
		}
		wctx, cancel := context.WithDeadline(ctx, giveUp)
		for range etcdutil.Watch(wctx, m.client, string(other.Key), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithFilterPut()) {
			break // deleted, or the watch broke: look again
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// predecessorWait is how long a key on lease other, held under this replica's ID, is waited
// for before the ID counts as in use: the lease's TTL (LeaseTTL when etcd does not say) and a
// second, within which a crashed predecessor's lease expires.
func (m *Manager) predecessorWait(ctx context.Context, other clientv3.LeaseID) time.Duration {
	ttl := m.opts.LeaseTTL
	if r, err := m.client.TimeToLive(ctx, other); err == nil && r.GrantedTTL > 0 {
		ttl = time.Duration(r.GrantedTTL) * time.Second
	}
	return ttl + time.Second
}
