package main

import (
	"context"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// electionsOutput is what elections prints with -o json.
type electionsOutput struct {
	Prefix    string         `json:"prefix"`
	Revision  int64          `json:"revision"`
	Elections []electionInfo `json:"elections"`
}

// electionInfo is one election: its prefix, its leader and the candidates in line.
type electionInfo struct {
	// Prefix is the election's prefix, ending with "/", as election.New takes it.
	Prefix string    `json:"prefix"`
	Leader candidate `json:"leader"`
	// Candidates are the candidates in line behind the leader, the next leader first.
	Candidates []candidate `json:"candidates"`
}

// candidate is one key of an election: <prefix><lease in hex>, holding the candidate's ID.
type candidate struct {
	ID string `json:"id"`
	// Token is the key's create revision: for the leader, what its election.Token returns.
	Token int64  `json:"token"`
	Lease string `json:"lease"` // the candidate's session lease, in hex
	Key   string `json:"key"`
	TTL   int64  `json:"ttl"` // seconds the lease has left; -1: expired or unknown
}

// electionsIn groups the candidates' keys among kvs by election prefix, each election's
// in line order (oldest key, the leader, first). A candidate's key names its own lease and
// holds its non-empty ID (a lock entry, named the same way, holds nothing).
func electionsIn(ctx context.Context, kvs []*mvccpb.KeyValue, leases *ttls) map[string][]candidate {
	byPrefix := map[string][]*mvccpb.KeyValue{}
	for _, kv := range kvs {
		if en, ok := parseLeaseEntry(kv); ok && !en.shared && len(kv.Value) > 0 {
			byPrefix[en.parent] = append(byPrefix[en.parent], kv)
		}
	}
	out := map[string][]candidate{}
	for prefix, keys := range byPrefix {
		sort.Slice(keys, func(i, j int) bool { return keys[i].CreateRevision < keys[j].CreateRevision })
		for _, kv := range keys {
			out[prefix] = append(out[prefix], candidate{
				ID: string(kv.Value), Token: kv.CreateRevision, Lease: leaseHex(kv.Lease),
				Key: string(kv.Key), TTL: leases.of(ctx, kv.Lease),
			})
		}
	}
	return out
}

func runElections(ctx context.Context, e *env) error {
	kvs, rev, err := e.list(ctx, e.arg)
	if err != nil {
		return err
	}
	out := electionsOutput{Prefix: e.arg, Revision: rev, Elections: []electionInfo{}}
	leases := newTTLs(e.cli)
	for prefix, cands := range electionsIn(ctx, kvs, leases) {
		out.Elections = append(out.Elections, electionInfo{Prefix: prefix, Leader: cands[0], Candidates: append([]candidate{}, cands[1:]...)})
	}
	sort.Slice(out.Elections, func(i, j int) bool { return out.Elections[i].Prefix < out.Elections[j].Prefix })
	leases.report(e)
	if len(out.Elections) == 0 {
		e.warn("no elections under %s", e.arg)
	}
	if e.opts.output == "json" {
		return writeJSON(e.stdout, out)
	}
	t := newTable(e.stdout, "ELECTION", "LEADER", "TOKEN", "LEASE", "TTL", "CANDIDATES IN LINE")
	for _, el := range out.Elections {
		t.row(el.Prefix, el.Leader.ID, token(el.Leader.Token), el.Leader.Lease, ttl(el.Leader.TTL), candidateIDs(el.Candidates))
	}
	return t.flush()
}

// candidateIDs lists candidates' IDs in line order.
func candidateIDs(cs []candidate) string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	return strings.Join(ids, ",")
}
