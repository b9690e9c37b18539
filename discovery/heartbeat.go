package discovery

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// heartbeat keeps one registration alive: it keeps the lease alive, publishes the instance
// again on a new lease when the lease is lost, and follows the health check. It returns
// when ctx ends or the client is closed.
func (r *Registry) heartbeat(ctx context.Context, reg *registration) {
	defer r.wg.Done()
	defer close(reg.done)
	log := r.log.WithValues("service", reg.info.Name, "id", reg.info.ID)

	var checks <-chan time.Time
	if reg.check != nil {
		t := time.NewTicker(reg.interval)
		defer t.Stop()
		checks = t.C
	}
	for {
		lease, _ := reg.state()
		r.keepAlive(ctx, reg, lease, checks)
		if ctx.Err() != nil {
			return
		}
		if r.client.Ctx().Err() != nil {
			log.Info("etcd client closed; the instance expires with its lease")
			return
		}
		log.Info("lease lost; registering again", "lease", int64(lease))
		if !r.republish(ctx, reg) {
			return
		}
		renewed, _ := reg.state()
		log.Info("registered again", "lease", int64(renewed))
	}
}

// keepAlive keeps lease alive and runs the health checks until the lease is lost (the
// keep-alive channel closes) or ctx ends.
func (r *Registry) keepAlive(ctx context.Context, reg *registration, lease clientv3.LeaseID, checks <-chan time.Time) {
	// The channel is closed by the client when the lease expires, when no keep-alive has
	// been answered for a TTL, when ctx ends or when the client closes.
	ka, err := r.client.KeepAlive(ctx, lease)
	if err != nil {
		r.log.V(1).Info("keep-alive refused", "lease", int64(lease), "error", err.Error())
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				return
			}
		case <-checks:
			r.checkHealth(ctx, reg)
		}
	}
}

// republish grants a new lease and publishes reg on it, retrying with backoff. It reports
// false when it gave up because ctx ended or the client closed.
func (r *Registry) republish(ctx context.Context, reg *registration) bool {
	bo := etcdutil.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		actx, cancel := context.WithTimeout(ctx, r.ttl)
		err := r.publish(actx, reg)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil || r.client.Ctx().Err() != nil {
			return false
		}
		delay := bo.Next()
		r.log.Info("registering again failed; retrying", "service", reg.info.Name, "id", reg.info.ID,
			"retryIn", delay.String(), "error", err.Error())
		if !etcdutil.Sleep(ctx, delay) {
			return false
		}
	}
}

// checkHealth runs the health check and moves the instance out of discovery or back in
// when its health changed. A failed move is tried again at the next check.
func (r *Registry) checkHealth(ctx context.Context, reg *registration) {
	cctx, cancel := context.WithTimeout(ctx, reg.interval)
	checkErr := reg.check(cctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	healthy := checkErr == nil
	lease, was := reg.state()
	if healthy == was {
		return
	}
	log := r.log.WithValues("service", reg.info.Name, "id", reg.info.ID)
	var err error
	if healthy {
		_, err = r.client.Put(ctx, reg.key, reg.value, clientv3.WithLease(lease))
	} else {
		// Only the value on this registration's lease is ours to remove.
		_, err = r.client.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(reg.key), "=", lease)).
			Then(clientv3.OpDelete(reg.key)).
			Commit()
	}
	if err != nil {
		msg := "changing the instance's health in etcd failed; retrying at the next check"
		if etcderr.IsPermanent(err) {
			// A role without read on the key (the removal is a guarded transaction)
			// leaves an unhealthy instance discoverable: an operator must hear of it.
			log.Error(err, msg, "key", reg.key, "healthy", healthy)
		} else {
			log.Info(msg, "key", reg.key, "healthy", healthy, "error", err.Error())
		}
		return
	}
	reg.mu.Lock()
	reg.healthy = healthy
	reg.mu.Unlock()
	if healthy {
		log.Info("healthy; in discovery")
	} else {
		log.Info("unhealthy; left out of discovery", "reason", checkErr.Error())
	}
}

func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound)
}
