package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/etcdkit/etcdkit/discovery"
)

// runDiscovery shows the guide's section 2: three instances register, are discovered and
// watched, requests are balanced over them with the three strategies, a health check takes
// an instance out and back in, and an instance whose process stops sending heartbeats
// expires.
func runDiscovery(ctx context.Context, e *env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prefix := e.key("services")
	const service = "api-server"
	reg, err := discovery.NewRegistry(e.client, prefix, discovery.Options{TTL: 10 * time.Second, Logger: e.log})
	if err != nil {
		return err
	}
	defer func() {
		if err := reg.Close(); err != nil {
			e.log.Error(err, "closing the registry")
		}
	}()

	// api-3 runs in a process of its own (its own client) with a short TTL: its heartbeat
	// stops later in the story.
	other, err := e.newClient()
	if err != nil {
		return err
	}
	defer other.Close()
	otherReg, err := discovery.NewRegistry(other, prefix, discovery.Options{TTL: 2 * time.Second, Logger: e.log.WithName("api-3")})
	if err != nil {
		return err
	}
	defer func() { _ = otherReg.Close() }() // its client is closed by then: its lease ran out

	for i, r := range []*discovery.Registry{reg, reg, otherReg} {
		info := discovery.ServiceInfo{
			Name: service, ID: fmt.Sprintf("api-%d", i+1), Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080,
			Metadata: map[string]string{"version": "1.0.0", "region": "us-east-1"},
		}
		if err := r.Register(ctx, info); err != nil {
			return err
		}
		e.say("registered %s at %s under %s", info.ID, info.HostPort(), e.rel(prefix)+"/"+service+"/"+info.ID)
	}

	found, err := reg.Discover(ctx, service)
	if err != nil {
		return err
	}
	for _, s := range found {
		e.say("discovered %s at %s (version %s)", s.ID, s.HostPort(), s.Metadata["version"])
	}
	if err := expect(len(found) == 3, "3 instances of %s, found %d", service, len(found)); err != nil {
		return err
	}

	events := make(chan discovery.ServiceEvent, 32)
	if err := reg.Watch(ctx, service, func(ev discovery.ServiceEvent) { events <- ev }); err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		if err := discoveryEvent(ctx, e, events, discovery.ServiceAdded, ""); err != nil {
			return err
		}
	}

	update := found[0]
	update.Metadata = map[string]string{"version": "1.1.0", "region": "us-east-1"}
	if err := reg.Register(ctx, update); err != nil {
		return err
	}
	if err := discoveryEvent(ctx, e, events, discovery.ServiceUpdated, "api-1"); err != nil {
		return err
	}

	if err := discoveryBalancing(ctx, e, reg, service); err != nil {
		return err
	}
	if err := discoveryHealth(ctx, e, reg, events, service); err != nil {
		return err
	}

	// The process of api-3 goes away without deregistering: no more heartbeats.
	stopped := time.Now()
	if err := other.Close(); err != nil {
		return err
	}
	e.say("api-3's process stopped sending heartbeats (TTL 2s)")
	if err := discoveryEvent(ctx, e, events, discovery.ServiceRemoved, "api-3"); err != nil {
		return err
	}
	e.say("api-3 left discovery %.1fs after its process stopped", time.Since(stopped).Seconds())
	left, err := reg.Discover(ctx, service)
	if err != nil {
		return err
	}
	return expect(len(left) == 2, "2 instances after api-3 expired, found %d", len(left))
}

// discoveryEvent waits for the next watch event and checks its type (and instance, when id
// is given).
func discoveryEvent(ctx context.Context, e *env, events <-chan discovery.ServiceEvent, want discovery.EventType, id string) error {
	select {
	case ev := <-events:
		version := ""
		if v := ev.Service.Metadata["version"]; v != "" {
			version = ", version " + v
		}
		e.say("watch: %s %s (%s%s)", ev.Type, ev.Service.ID, ev.Service.HostPort(), version)
		return expect(ev.Type == want && (id == "" || ev.Service.ID == id),
			"a %s event for %q, got %s %s", want, id, ev.Type, ev.Service.ID)
	case <-time.After(5 * time.Second):
		return expect(false, "a %s event for %q within 5s", want, id)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// discoveryBalancing routes requests with each strategy.
func discoveryBalancing(ctx context.Context, e *env, reg *discovery.Registry, service string) error {
	for _, strategy := range []discovery.Strategy{discovery.RoundRobin, discovery.Random} {
		lb, err := discovery.NewLoadBalancer(reg, strategy)
		if err != nil {
			return err
		}
		n := 6
		if strategy == discovery.Random {
			n = 30
		}
		var picks []string
		seen := map[string]int{}
		for i := 0; i < n; i++ {
			s, err := lb.GetService(ctx, service)
			if err != nil {
				lb.Close()
				return err
			}
			picks = append(picks, s.ID)
			seen[s.ID]++
		}
		lb.Close()
		if strategy == discovery.RoundRobin {
			e.say("%s: %s", strategy, strings.Join(picks, " "))
			if err := expect(len(seen) == 3 && seen["api-1"] == 2 && seen["api-2"] == 2 && seen["api-3"] == 2 &&
				picks[0] == picks[3] && picks[1] == picks[4], "round robin to cycle through 3 instances, got %v", picks); err != nil {
				return err
			}
			continue
		}
		e.say("%s over %d requests: %v", strategy, n, seen)
		if err := expect(len(seen) == 3, "random picks to cover all 3 instances, got %v", seen); err != nil {
			return err
		}
	}

	lb, err := discovery.NewLoadBalancer(reg, discovery.LeastConn)
	if err != nil {
		return err
	}
	defer lb.Close()
	first, releaseFirst, err := lb.Acquire(ctx, service)
	if err != nil {
		return err
	}
	second, releaseSecond, err := lb.Acquire(ctx, service)
	if err != nil {
		return err
	}
	e.say("%s: long requests in flight on %s and %s", discovery.LeastConn, first.ID, second.ID)
	third, releaseThird, err := lb.Acquire(ctx, service)
	if err != nil {
		return err
	}
	e.say("%s: the next request goes to %s, the one without requests", discovery.LeastConn, third.ID)
	releaseThird()
	releaseFirst()
	next, releaseNext, err := lb.Acquire(ctx, service)
	if err != nil {
		return err
	}
	e.say("%s: %s finished its request; the next one goes to %s", discovery.LeastConn, first.ID, next.ID)
	releaseNext()
	releaseSecond()
	return expect(first.ID != second.ID && third.ID != first.ID && third.ID != second.ID && next.ID != second.ID,
		"least-conn to avoid busy instances, got %s %s %s then %s", first.ID, second.ID, third.ID, next.ID)
}

// discoveryHealth registers an instance with a health check that fails for a while.
func discoveryHealth(ctx context.Context, e *env, reg *discovery.Registry, events <-chan discovery.ServiceEvent, service string) error {
	var healthy atomic.Bool
	check := func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("database unreachable")
	}
	info := discovery.ServiceInfo{Name: service, ID: "api-4", Address: "10.0.0.4", Port: 8080}
	if err := reg.Register(ctx, info, discovery.WithHealthCheck(check, 100*time.Millisecond)); err != nil {
		return err
	}
	found, err := reg.Discover(ctx, service)
	if err != nil {
		return err
	}
	e.say("registered api-4 with a failing health check: %d instances in discovery", len(found))
	if err := expect(len(found) == 3, "api-4 to stay out of discovery while unhealthy, found %d instances", len(found)); err != nil {
		return err
	}
	healthy.Store(true)
	e.say("api-4's health check passes now")
	if err := discoveryEvent(ctx, e, events, discovery.ServiceAdded, "api-4"); err != nil {
		return err
	}
	if err := reg.Deregister(ctx, service, "api-4"); err != nil {
		return err
	}
	return discoveryEvent(ctx, e, events, discovery.ServiceRemoved, "api-4")
}
