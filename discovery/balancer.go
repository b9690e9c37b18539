package discovery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
)

// Strategy chooses among a service's instances.
type Strategy int

// The load-balancing strategies.
const (
	// RoundRobin hands out the instances in turn, in ID order.
	RoundRobin Strategy = iota
	// Random picks an instance uniformly at random.
	Random
	// LeastConn picks the instance with the fewest requests in flight (acquired through
	// Acquire and not yet released); ties go round robin.
	LeastConn
)

// String returns the strategy's name.
func (s Strategy) String() string {
	switch s {
	case RoundRobin:
		return "round-robin"
	case Random:
		return "random"
	case LeastConn:
		return "least-conn"
	default:
		return fmt.Sprintf("Strategy(%d)", int(s))
	}
}

// LoadBalancer picks instances of services found through a Registry.
//
// Each service has a local view fed by a watch (Registry.Watch): the first call for a
// service starts the watch and waits for its initial list; after that a pick costs no
// round trip to etcd, and the view follows registrations, expiries and health changes as
// the watch reports them.
//
// In-flight requests are counted per instance through Acquire and its release function,
// whatever the strategy; LeastConn chooses by them. GetService picks without counting.
//
// A LoadBalancer is safe for concurrent use; Close stops its watches.
type LoadBalancer struct {
	registry *Registry
	strategy Strategy

	// ctx ends at Close and stops the watches; wg counts the goroutines that start them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	pools  map[string]*pool // by service name
}

// NewLoadBalancer returns a load balancer over the services of registry.
func NewLoadBalancer(registry *Registry, strategy Strategy) (*LoadBalancer, error) {
	if registry == nil {
		return nil, fmt.Errorf("discovery: load balancer registry must not be nil")
	}
	switch strategy {
	case RoundRobin, Random, LeastConn:
	default:
		return nil, fmt.Errorf("discovery: unknown load-balancing strategy %d (want RoundRobin, Random or LeastConn)", int(strategy))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &LoadBalancer{
		registry: registry,
		strategy: strategy,
		ctx:      ctx,
		cancel:   cancel,
		pools:    map[string]*pool{},
	}, nil
}

// pool is the local view of one service.
type pool struct {
	name  string
	ready chan struct{}   // closed once the initial list is in, or the watch failed to start
	err   error           // why the watch failed to start; set before ready is closed
	done  <-chan struct{} // closed when the watch has stopped; set before ready is closed

	mu        sync.Mutex
	instances []ServiceInfo  // sorted by ID
	next      uint64         // the round-robin position
	inflight  map[string]int // acquired and not released, by ID; no zero entries
}

// apply is the pool's watch callback.
func (p *pool) apply(ev ServiceEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, found := slices.BinarySearchFunc(p.instances, ev.Service.ID, func(s ServiceInfo, id string) int {
		return strings.Compare(s.ID, id)
	})
	switch {
	case ev.Type == ServiceRemoved && found:
		p.instances = slices.Delete(p.instances, i, i+1)
	case ev.Type == ServiceRemoved:
	case found:
		p.instances[i] = ev.Service
	default:
		p.instances = slices.Insert(p.instances, i, ev.Service)
	}
}

// GetService picks an instance of the service by the balancer's strategy. It fails with
// ErrNoInstances when none is in discovery. With LeastConn it picks by the requests
// acquired through Acquire, but does not count the pick itself.
func (lb *LoadBalancer) GetService(ctx context.Context, name string) (ServiceInfo, error) {
	p, err := lb.pool(ctx, name)
	if err != nil {
		return ServiceInfo{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return lb.pick(p)
}

// Acquire picks an instance like GetService and counts a request in flight to it until
// release is called. release may be called more than once; only the first call counts.
func (lb *LoadBalancer) Acquire(ctx context.Context, name string) (info ServiceInfo, release func(), err error) {
	p, err := lb.pool(ctx, name)
	if err != nil {
		return ServiceInfo{}, nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	info, err = lb.pick(p)
	if err != nil {
		return ServiceInfo{}, nil, err
	}
	p.inflight[info.ID]++
	var once sync.Once
	return info, func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.inflight[info.ID]--; p.inflight[info.ID] <= 0 {
				delete(p.inflight, info.ID)
			}
		})
	}, nil
}

// pick chooses an instance; the caller holds p.mu.
func (lb *LoadBalancer) pick(p *pool) (ServiceInfo, error) {
	n := len(p.instances)
	if n == 0 {
		return ServiceInfo{}, fmt.Errorf("%w of service %q", ErrNoInstances, p.name)
	}
	switch lb.strategy {
	case Random:
		return p.instances[rand.IntN(n)], nil
	case LeastConn:
		start := int(p.next % uint64(n))
		p.next++
		best := start
		for k := 1; k < n; k++ {
			i := (start + k) % n
			if p.inflight[p.instances[i].ID] < p.inflight[p.instances[best].ID] {
				best = i
			}
		}
		return p.instances[best], nil
	default:
		i := int(p.next % uint64(n))
		p.next++
		return p.instances[i], nil
	}
}

// pool returns the service's view, starting its watch on first use and waiting for the
// initial list.
func (lb *LoadBalancer) pool(ctx context.Context, name string) (*pool, error) {
	if err := checkName("service name", name); err != nil {
		return nil, err
	}
	lb.mu.Lock()
	if lb.closed {
		lb.mu.Unlock()
		return nil, ErrClosed
	}
	p := lb.pools[name]
	if p == nil {
		p = &pool{name: name, ready: make(chan struct{}), inflight: map[string]int{}}
		lb.pools[name] = p
		lb.wg.Add(1)
		// The starter belongs to the balancer (lb.wg): it ends when the initial list is in
		// or has failed, which lb.ctx (cancelled by Close) bounds. Callers wait on ready
		// with their own contexts, so one caller giving up does not stop the others.
		go lb.start(p)
	}
	lb.mu.Unlock()

	select {
	case <-p.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if p.err != nil {
		return nil, p.err
	}
	select {
	case <-p.done:
		return nil, fmt.Errorf("discovery: the watch of service %q has stopped: %w", name, ErrClosed)
	default:
	}
	return p, nil
}

// start starts p's watch. A watch that fails to start is forgotten, so that the next call
// for the service tries again.
func (lb *LoadBalancer) start(p *pool) {
	defer lb.wg.Done()
	done, err := lb.registry.startWatch(lb.ctx, p.name, p.apply)
	if err != nil {
		lb.mu.Lock()
		if lb.pools[p.name] == p {
			delete(lb.pools, p.name)
		}
		lb.mu.Unlock()
		p.err = err
	} else {
		p.done = done
	}
	close(p.ready)
}

// Close stops the balancer's watches and waits for them. Calls after Close fail with
// ErrClosed.
func (lb *LoadBalancer) Close() {
	lb.mu.Lock()
	if lb.closed {
		lb.mu.Unlock()
		return
	}
	lb.closed = true
	pools := lb.pools
	lb.mu.Unlock()
	lb.cancel()
	lb.wg.Wait()
	for _, p := range pools {
		if p.done != nil {
			<-p.done
		}
	}
}
