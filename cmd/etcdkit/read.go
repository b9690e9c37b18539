package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// The reads of every command: ranges and lease lookups, nothing that writes.

// list reads every key under prefix as one consistent snapshot (paged) and returns them,
// sorted, with the revision they reflect.
func (e *env) list(ctx context.Context, prefix string) ([]*mvccpb.KeyValue, int64, error) {
	kvs, rev, err := etcdutil.ListPrefix(ctx, e.cli, prefix, 0, 0)
	if err != nil {
		return nil, 0, e.readError(ctx, prefix, err)
	}
	return kvs, rev, nil
}

// readError says why reading prefix failed, naming the prefix that was refused or the
// endpoints that did not answer.
func (e *env) readError(ctx context.Context, prefix string, err error) error {
	eps := strings.Join(e.cli.Endpoints(), ",")
	switch {
	case isPermissionDenied(err):
		who := "the etcd user"
		if name, _, _ := strings.Cut(e.opts.conn.User, ":"); name != "" {
			who = fmt.Sprintf("etcd user %q", name)
		}
		return fmt.Errorf("permission denied reading %s: %s may not read that prefix (grant it a role with read permission on %s)", prefix, who, prefix)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("etcd at %s did not answer reading %s within %s (--command-timeout): %w", eps, prefix, e.opts.commandTimeout, err)
	case ctx.Err() != nil:
		return fmt.Errorf("reading %s: interrupted", prefix)
	}
	return fmt.Errorf("reading %s from etcd at %s: %w", prefix, eps, err)
}

// isPermissionDenied reports whether err is etcd's "permission denied", typed by the client
// or a plain gRPC status.
func isPermissionDenied(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied)
}

// leaseHex writes a lease ID as etcdctl does; "" for no lease.
func leaseHex(id int64) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf("%x", id)
}

// ttls looks up how long leases have left, each lease once. A lookup is a read: it needs no
// permission and changes no revision.
type ttls struct {
	cli *clientv3.Client
	got map[int64]int64
	err error // the first failed lookup, other than a lease that has expired
}

func newTTLs(cli *clientv3.Client) *ttls {
	return &ttls{cli: cli, got: map[int64]int64{}}
}

// of returns the seconds lease id has left, -1 when it has expired or could not be read.
func (t *ttls) of(ctx context.Context, id int64) int64 {
	if id == 0 {
		return -1
	}
	if v, ok := t.got[id]; ok {
		return v
	}
	v := int64(-1)
	resp, err := t.cli.TimeToLive(ctx, clientv3.LeaseID(id))
	switch {
	case err == nil:
		v = resp.TTL
	case errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound):
	default:
		if t.err == nil {
			t.err = err
		}
	}
	t.got[id] = v
	return v
}

// report tells the operator on stderr when a lookup failed: the table shows -1 for it.
func (t *ttls) report(e *env) {
	if t.err != nil {
		e.warn("could not read the TTL of some leases (shown as -1): %v", t.err)
	}
}

// leaseEntry is a key named after its own lease: an election's candidate,
// <prefix><lease in hex>, or an entry of a lock's queue, <lock key>/<lease in hex>
// (exclusive) or <lock key>/r-<lease in hex>-<n> (shared). See election/candidacy.go and
// lock/queue.go.
type leaseEntry struct {
	kv     *mvccpb.KeyValue
	parent string // the key up to and including its last "/": the election's prefix, or the lock key and "/"
	shared bool
}

// parseLeaseEntry reads kv as a lease entry; ok is false when its name does not name its
// own lease, so that other keys under a prefix are not taken for entries.
func parseLeaseEntry(kv *mvccpb.KeyValue) (leaseEntry, bool) {
	key := string(kv.Key)
	i := strings.LastIndex(key, "/")
	if i < 0 || kv.Lease == 0 {
		return leaseEntry{}, false
	}
	parent, name := key[:i+1], key[i+1:]
	lease := leaseHex(kv.Lease)
	if name == lease {
		return leaseEntry{kv: kv, parent: parent}, true
	}
	if n, ok := strings.CutPrefix(name, "r-"+lease+"-"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		return leaseEntry{kv: kv, parent: parent, shared: true}, true
	}
	return leaseEntry{}, false
}
