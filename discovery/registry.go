package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/lease"
)

const (
	// DefaultTTL is the lease TTL used when Options.TTL is 0.
	DefaultTTL = 30 * time.Second
	// MinTTL is the shortest lease TTL that NewRegistry accepts: etcd rounds shorter ones
	// up, and a keep-alive needs time to arrive before the lease runs out.
	MinTTL = 2 * time.Second
	// DefaultHealthInterval is how often a health check runs when WithHealthCheck is given
	// an interval of 0.
	DefaultHealthInterval = 5 * time.Second
	// closeTimeout bounds the deregistration that Close does. Instances it cannot remove
	// in that time expire with their leases.
	closeTimeout = 5 * time.Second
)

// Registry registers service instances in etcd and finds them.
//
// Every instance that Register publishes lives on a lease of its own that a background
// heartbeat keeps alive. When the heartbeat stops (the process dies, or is cut off from
// etcd for longer than the TTL) etcd deletes the instance. When the lease is lost while the
// registry still runs (etcd restarted, a long partition, the lease revoked), the heartbeat
// grants a new lease and publishes the instance again, with backoff, until it succeeds or
// the registry is closed.
//
// A Registry is safe for concurrent use. Close deregisters every instance it registered.
type Registry struct {
	client *clientv3.Client
	prefix string // without a trailing "/"; an instance lives at prefix/name/id
	ttl    time.Duration
	ttlSec int64 // ttl in seconds, as etcd grants leases
	log    logr.Logger

	// ctx ends when Close starts: it stops heartbeats, watches and registrations in flight.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts every goroutine the registry started (heartbeats and watches).
	wg sync.WaitGroup

	// opMu serialises Register, Deregister and Close, so that one instance key is never
	// published by two heartbeats at once.
	opMu sync.Mutex

	mu     sync.Mutex // guards the fields below
	closed bool
	regs   map[string]*registration // by instance key
}

// Options configure a Registry made by NewRegistry. The zero value is valid: every field
// has a default.
type Options struct {
	// TTL is the TTL of each instance's lease: an instance whose process dies or is cut off
	// from etcd leaves discovery after this long. It must be a whole number of seconds
	// (etcd leases count seconds), at least MinTTL (2 s). Default (0): DefaultTTL, 30 s.
	TTL time.Duration
	// Logger receives the registry's logs. Default (the zero logr.Logger): discarded.
	Logger logr.Logger
}

// NewRegistry returns a registry that keeps instances under prefix (an instance lives at
// prefix/name/id), configured by opts. It does not talk to etcd until it is used.
func NewRegistry(client *clientv3.Client, prefix string, opts Options) (*Registry, error) {
	if client == nil {
		return nil, errors.New("discovery: client must not be nil")
	}
	p := strings.TrimRight(prefix, "/")
	if p == "" {
		return nil, fmt.Errorf("discovery: prefix must name a key prefix other than the root, got %q", prefix)
	}
	ttl, ttlSec, err := lease.CheckTTL("discovery: TTL", opts.TTL, DefaultTTL, MinTTL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Registry{
		client: client,
		prefix: p,
		ttl:    ttl,
		ttlSec: int64(ttlSec),
		log:    opts.Logger,
		ctx:    ctx,
		cancel: cancel,
		regs:   map[string]*registration{},
	}, nil
}

// servicePrefix is the key prefix of every instance of a service, ending in "/".
func (r *Registry) servicePrefix(name string) string { return r.prefix + "/" + name + "/" }

func (r *Registry) key(name, id string) string { return r.servicePrefix(name) + id }

// RegisterOption configures one registration.
type RegisterOption func(*registerOptions)

type registerOptions struct {
	check    func(ctx context.Context) error
	interval time.Duration
}

// WithHealthCheck runs check every interval (DefaultHealthInterval when 0) with a context
// that ends after interval. While check returns an error the instance is left out of
// discovery (its key is deleted, its lease kept); once check passes again it is put back.
// Register runs the check once before publishing. The check must honour its context.
func WithHealthCheck(check func(ctx context.Context) error, interval time.Duration) RegisterOption {
	return func(o *registerOptions) {
		o.check = check
		o.interval = interval
	}
}

// registration is one instance this registry publishes. key, value and check never change;
// the mutable fields are guarded by mu.
type registration struct {
	key      string
	value    string
	info     ServiceInfo
	check    func(ctx context.Context) error
	interval time.Duration

	// cancel stops the heartbeat and done is closed when it has stopped; both are set by
	// startHeartbeat and used under the registry's opMu.
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	lease   clientv3.LeaseID // the latest lease granted for the instance
	healthy bool             // whether the instance should be in discovery
}

func (g *registration) state() (clientv3.LeaseID, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lease, g.healthy
}

// Register publishes an instance at <prefix>/<name>/<id> on a new lease and keeps it there
// until Deregister or Close (see Registry for what happens when the lease is lost).
// Registering the same name and ID again replaces the earlier registration: watchers see
// an update when the description changed.
//
// With WithHealthCheck, an instance whose first check fails is registered but not yet
// published: it joins discovery when its check passes.
func (r *Registry) Register(ctx context.Context, info ServiceInfo, opts ...RegisterOption) error {
	if err := info.validate(); err != nil {
		return err
	}
	var o registerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.interval < 0 {
		return fmt.Errorf("discovery: health check interval must not be negative, got %s", o.interval)
	}
	if o.interval == 0 {
		o.interval = DefaultHealthInterval
	}
	value, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("discovery: encoding instance %s/%s: %w", info.Name, info.ID, err)
	}
	reg := &registration{
		key:      r.key(info.Name, info.ID),
		value:    string(value),
		info:     info,
		check:    o.check,
		interval: o.interval,
		healthy:  true,
	}

	r.opMu.Lock()
	defer r.opMu.Unlock()
	ctx, cancel := etcdutil.Bound(ctx, r.ctx)
	defer cancel()
	if r.isClosed() {
		return ErrClosed
	}

	if reg.check != nil {
		cctx, ccancel := context.WithTimeout(ctx, reg.interval)
		err := reg.check(cctx)
		ccancel()
		if err != nil {
			reg.healthy = false
			r.log.Info("instance unhealthy at registration; it joins discovery when its check passes",
				"service", info.Name, "id", info.ID, "error", err.Error())
		}
	}

	// An earlier registration of the same instance stops before this one publishes, so
	// that its heartbeat cannot overwrite the new value. Its key stays in place (on its
	// old lease) until the new value replaces it.
	r.mu.Lock()
	old := r.regs[reg.key]
	r.mu.Unlock()
	if old != nil {
		old.cancel()
		<-old.done
	}

	if err := r.publish(ctx, reg); err != nil {
		if lease, _ := reg.state(); lease != 0 {
			r.revoke(lease)
		}
		if old != nil {
			// The replacement failed: the earlier registration goes on as it was. Its
			// value goes back on its lease: the failed put may have been applied, and the
			// revoke above then deleted the key.
			r.restore(old)
			r.startHeartbeat(old)
		}
		if r.isClosed() {
			return ErrClosed
		}
		return fmt.Errorf("discovery: registering %s/%s: %w", info.Name, info.ID, err)
	}
	if old != nil {
		oldLease, _ := old.state()
		r.revoke(oldLease)
	}
	r.mu.Lock()
	r.regs[reg.key] = reg
	r.mu.Unlock()
	r.startHeartbeat(reg)
	r.log.V(1).Info("registered", "service", info.Name, "id", info.ID, "key", reg.key, "healthy", reg.healthy)
	return nil
}

// startHeartbeat starts reg's heartbeat. The caller holds opMu, which also guards
// reg.cancel and reg.done.
func (r *Registry) startHeartbeat(reg *registration) {
	ctx, cancel := context.WithCancel(r.ctx)
	reg.cancel = cancel
	reg.done = make(chan struct{})
	r.wg.Add(1)
	// The heartbeat belongs to the registry (r.wg). It stops when ctx ends (Deregister, a
	// replacing Register and Close cancel it) and by itself when the client is closed.
	go r.heartbeat(ctx, reg)
}

func (r *Registry) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// publish grants a new lease for reg and, when reg is healthy, puts its value on it. The
// lease is recorded before the put, so that whoever stops the registration revokes any
// lease the value may be attached to. A previous lease is revoked afterwards: the value no
// longer hangs on it.
func (r *Registry) publish(ctx context.Context, reg *registration) error {
	grant, err := r.client.Grant(ctx, r.ttlSec)
	if err != nil {
		return fmt.Errorf("granting a lease: %w", err)
	}
	reg.mu.Lock()
	previous := reg.lease
	reg.lease = grant.ID
	healthy := reg.healthy
	reg.mu.Unlock()
	if healthy {
		// The same put again is harmless: it is retried through etcd's transient errors.
		err := etcdutil.RetryTransient(ctx, func() error {
			_, err := r.client.Put(ctx, reg.key, reg.value, clientv3.WithLease(grant.ID))
			return err
		})
		if err != nil {
			return fmt.Errorf("putting %s: %w", reg.key, err)
		}
	}
	if previous != 0 {
		r.revoke(previous)
	}
	return nil
}

// restore puts a healthy registration's value on its current lease again, best effort: a
// failure is logged.
func (r *Registry) restore(reg *registration) {
	lease, healthy := reg.state()
	if lease == 0 || !healthy {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if _, err := r.client.Put(ctx, reg.key, reg.value, clientv3.WithLease(lease)); err != nil {
		r.log.Error(err, "restoring an earlier registration after a failed replacement", "key", reg.key)
	}
}

// revoke revokes a lease, best effort: a lease that cannot be revoked expires by itself.
func (r *Registry) revoke(lease clientv3.LeaseID) {
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if _, err := r.client.Revoke(ctx, lease); err != nil {
		r.log.V(1).Info("revoking a lease failed; it expires by itself", "lease", int64(lease), "error", err.Error())
	}
}

// Deregister removes the instance name/id from discovery and stops its heartbeat. The key
// is deleted whether or not this registry registered it, so Deregister also removes an
// instance left behind by an earlier process.
func (r *Registry) Deregister(ctx context.Context, name, id string) error {
	if err := checkName("service name", name); err != nil {
		return err
	}
	if err := checkName("instance ID", id); err != nil {
		return err
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.isClosed() {
		return ErrClosed
	}
	key := r.key(name, id)
	r.mu.Lock()
	reg := r.regs[key]
	delete(r.regs, key)
	r.mu.Unlock()
	var errs []error
	if reg != nil {
		reg.cancel()
		<-reg.done
		if lease, _ := reg.state(); lease != 0 {
			if _, err := r.client.Revoke(ctx, lease); err != nil && !isLeaseNotFound(err) {
				errs = append(errs, fmt.Errorf("revoking the lease of %s/%s: %w", name, id, err))
			}
		}
	}
	err := etcdutil.RetryTransient(ctx, func() error {
		_, err := r.client.Delete(ctx, key)
		return err
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("deleting %s: %w", key, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("discovery: deregistering %s/%s: %w", name, id, err)
	}
	r.log.V(1).Info("deregistered", "service", name, "id", id)
	return nil
}

// Discover returns the instances of a service that are in discovery now, sorted by ID, read
// from etcd. Values that do not decode are logged and left out. A service without
// instances gives an empty list and no error.
func (r *Registry) Discover(ctx context.Context, name string) ([]ServiceInfo, error) {
	if err := checkName("service name", name); err != nil {
		return nil, err
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	prefix := r.servicePrefix(name)
	kvs, _, err := etcdutil.ListPrefix(ctx, r.client, prefix, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("discovery: listing %s: %w", prefix, err)
	}
	out := make([]ServiceInfo, 0, len(kvs))
	for _, kv := range kvs {
		if info, ok := r.decode(name, prefix, kv); ok {
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// decode turns a stored instance into a ServiceInfo (see parseInstance), logging values
// that do not decode.
func (r *Registry) decode(name, prefix string, kv *mvccpb.KeyValue) (ServiceInfo, bool) {
	info, ok, err := parseInstance(name, prefix, kv)
	if err != nil {
		r.log.Error(err, "skipping an instance whose value does not decode", "key", string(kv.Key), "revision", kv.ModRevision)
	}
	return info, ok
}

// parseInstance turns a stored instance into a ServiceInfo. Keys nested deeper than
// prefix/name/id are not instances; a value that does not decode is not one either, and
// its error is returned.
func parseInstance(name, prefix string, kv *mvccpb.KeyValue) (ServiceInfo, bool, error) {
	id := strings.TrimPrefix(string(kv.Key), prefix)
	if id == "" || strings.Contains(id, "/") {
		return ServiceInfo{}, false, nil
	}
	var info ServiceInfo
	if err := json.Unmarshal(kv.Value, &info); err != nil {
		return ServiceInfo{}, false, err
	}
	// The key names the instance: a value written by someone else cannot make two keys
	// one instance, or one key another.
	info.Name, info.ID = name, id
	return info, true, nil
}

// Close stops every heartbeat and watch of the registry and deregisters the instances it
// registered (within a few seconds; instances it cannot remove expire with their leases).
// It returns the deregistration errors, if any. Calls after Close fail with ErrClosed.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	// A Register or Deregister in flight (cancelled with r.ctx) finishes before the set of
	// registrations is taken; later ones see closed. opMu is not held while waiting for the
	// goroutines, so a watch callback that calls Register gets ErrClosed, not a deadlock.
	r.opMu.Lock()
	r.mu.Lock()
	regs := r.regs
	r.regs = map[string]*registration{}
	r.mu.Unlock()
	r.opMu.Unlock()
	r.wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for _, reg := range regs {
		// Revoking the lease deletes the instance's key with it.
		lease, _ := reg.state()
		if _, err := r.client.Revoke(ctx, lease); err != nil && !isLeaseNotFound(err) {
			errs = append(errs, fmt.Errorf("deregistering %s/%s: %w", reg.info.Name, reg.info.ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("discovery: closing: %w", err)
	}
	return nil
}
