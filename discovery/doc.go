// Package discovery registers service instances in etcd, finds them, follows their changes
// and balances requests over them.
//
// # Keys
//
// An instance lives at <prefix>/<name>/<id> as a JSON ServiceInfo, on a lease of its own:
//
//	/services/api-server/api-1  {"name":"api-server","id":"api-1","address":"10.0.0.1","port":8080,"metadata":{"version":"1.0.0"}}
//
// # Registering
//
// Registry.Register publishes an instance and keeps it published: a heartbeat goroutine
// keeps the lease alive. If the process dies or stays cut off from etcd for longer than the
// TTL, etcd deletes the instance. If the lease is lost while the process runs (etcd
// restarted, a long partition, someone revoked it), the heartbeat grants a new lease and
// publishes the instance again, with backoff, until it succeeds or the registry is closed.
//
// An optional health check (WithHealthCheck) takes an unhealthy instance out of discovery
// and puts it back when it is healthy again; the lease is kept meanwhile.
//
// Registry.Close deregisters everything the registry registered and stops its goroutines.
//
//	reg, err := discovery.NewRegistry(client, "/services", discovery.Options{TTL: 30 * time.Second, Logger: log})
//	defer reg.Close()
//	err = reg.Register(ctx, discovery.ServiceInfo{Name: "api-server", ID: "api-1", Address: "10.0.0.1", Port: 8080})
//
// # Finding and watching
//
// Registry.Discover reads a service's instances from etcd. Registry.Watch reports the
// instances present (as added) and then every change, from a goroutine of the registry,
// until its context ends or the registry closes. Its events survive reconnects and
// compaction: a broken watch resumes after the last change it saw; when etcd compacted
// that history, the service is listed again, the differences from what was already
// reported become events, and the watch resumes from the list's revision.
//
// # Load balancing
//
// A LoadBalancer keeps a watch-fed view per service, so that picking an instance costs no
// round trip to etcd. RoundRobin and Random pick by position; LeastConn picks the instance
// with the fewest requests in flight, counted between Acquire and its release function:
//
//	lb, err := discovery.NewLoadBalancer(reg, discovery.LeastConn)
//	defer lb.Close()
//	inst, release, err := lb.Acquire(ctx, "api-server")
//	defer release()
//
// A service without instances gives ErrNoInstances.
package discovery
