package main

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/etcdkit/etcdkit/discovery"
)

// servicesOutput is what services prints with -o json.
type servicesOutput struct {
	Prefix    string     `json:"prefix"`
	Revision  int64      `json:"revision"`
	Instances []instance `json:"services"`
}

// instance is one registered instance of a service.
type instance struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address"` // host name or IP address, without the port
	Port     int               `json:"port"`
	Metadata map[string]string `json:"metadata"`
	Key      string            `json:"key"`
	Lease    string            `json:"lease"` // the instance's lease, in hex
	TTL      int64             `json:"ttl"`   // seconds the lease has left; -1: expired or unknown
}

func runServices(ctx context.Context, e *env) error {
	kvs, rev, err := e.list(ctx, e.arg)
	if err != nil {
		return err
	}
	out := servicesOutput{Prefix: e.arg, Revision: rev, Instances: []instance{}}
	leases := newTTLs(e.cli)
	for _, kv := range kvs {
		// An instance is <registry prefix>/<service>/<id> holding a ServiceInfo's JSON
		// (discovery/registry.go); as the registry does, the key names the instance.
		segs := strings.Split(string(kv.Key), "/")
		if len(segs) < 3 {
			continue
		}
		service, id := segs[len(segs)-2], segs[len(segs)-1]
		var info discovery.ServiceInfo
		if service == "" || id == "" || json.Unmarshal(kv.Value, &info) != nil || info.Address == "" {
			continue
		}
		md := info.Metadata
		if md == nil {
			md = map[string]string{}
		}
		out.Instances = append(out.Instances, instance{
			Service: service, ID: id, Address: info.Address, Port: info.Port, Metadata: md,
			Key: string(kv.Key), Lease: leaseHex(kv.Lease), TTL: leases.of(ctx, kv.Lease),
		})
	}
	sort.SliceStable(out.Instances, func(i, j int) bool {
		a, b := out.Instances[i], out.Instances[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.ID < b.ID
	})
	leases.report(e)
	if len(out.Instances) == 0 {
		if len(kvs) > 0 {
			e.warn("no discovery instances under %s (%d other keys there)", e.arg, len(kvs))
		} else {
			e.warn("no discovery instances under %s", e.arg)
		}
	}
	if e.opts.output == "json" {
		return writeJSON(e.stdout, out)
	}
	t := newTable(e.stdout, "SERVICE", "ID", "ADDRESS", "LEASE", "TTL")
	for _, in := range out.Instances {
		hp := discovery.ServiceInfo{Address: in.Address, Port: in.Port}.HostPort()
		t.row(in.Service, in.ID, hp, in.Lease, ttl(in.TTL))
	}
	return t.flush()
}
