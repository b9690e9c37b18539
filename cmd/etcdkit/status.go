package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdkit/etcdkit/manager"
)

// statusOutput is what status prints with -o json: a manager's state as etcd holds it (see
// the keyspace of a manager in manager/sharding.go and manager/options.go).
type statusOutput struct {
	Name     string `json:"name"`
	Root     string `json:"root"`
	Revision int64  `json:"revision"`
	// Leader is the oldest candidate of the election under <root>election/; nil when none.
	Leader *candidate `json:"leader"`
	// Candidates are the replicas in line behind the leader.
	Candidates []candidate `json:"candidates"`
	// Members are the registrations under <root>members/ (sharded managers), by ID.
	Members []member `json:"members"`
	// Sharding is the shard map; nil for a manager without sharding, and for one in the
	// range mode, whose slices /debug/shards of a member shows (Slices).
	Sharding *sharding `json:"sharding"`
	// Mode is "ranges" for a manager in the range mode; Slices its slice map then, the
	// retired slices (replaced by a split or merge, still owned) last.
	Mode   string     `json:"mode,omitempty"`
	Slices []sliceRow `json:"slices,omitempty"`
}

// sliceRow is one slice of the range mode: its bounds of slice keys (To "" is no bound),
// who it is assigned to, who owns it and with which token.
type sliceRow struct {
	ID       int64  `json:"id"`
	From     string `json:"from"`
	To       string `json:"to"`
	Retired  bool   `json:"retired,omitempty"`
	Assigned string `json:"assigned"`
	Owner    string `json:"owner"`
	Token    int64  `json:"token"`
}

// member is one registered member: what it registered, and its part of the shard map.
type member struct {
	manager.MemberInfo
	Lease    string `json:"lease"`    // its session's lease, in hex
	Assigned int    `json:"assigned"` // shards assigned to it
	Owned    int    `json:"owned"`    // shards it owns
	// Debug is what the member's /debug/shards says (with --members only).
	Debug *memberDebug `json:"debug,omitempty"`
}

// sharding is a sharded manager's shard map.
type sharding struct {
	Shards int `json:"shards"`
	// Settled is true when every shard is owned by its assignee and the assignment is
	// balanced (manager.ShardStatus.Settled).
	Settled          bool       `json:"settled"`
	ShardMap         []shardRow `json:"shardMap"`
	AssignedNotOwned []int      `json:"assignedNotOwned"`
	OwnedNotAssigned []int      `json:"ownedNotAssigned"`
	Unassigned       []int      `json:"unassigned"`
}

// shardRow is one shard: who it is assigned to, who owns it, and the owner's token.
type shardRow struct {
	Shard    int    `json:"shard"`
	Assigned string `json:"assigned"` // "" when unassigned
	Owner    string `json:"owner"`    // "" when not owned
	// Token is the create revision of owners/<shard>, the fence of the owner's writes; 0
	// when not owned.
	Token int64  `json:"token"`
	Lease string `json:"lease"` // the owner's lease, in hex
	State string `json:"state"` // see the shard states below
	// QueueDepth and Draining are the owner's own view (with --members, when it answered).
	QueueDepth *int  `json:"queueDepth,omitempty"`
	Draining   *bool `json:"draining,omitempty"`
}

// Shard states.
const (
	shardOK         = "ok"         // owned by its assignee
	shardUnowned    = "unowned"    // assigned, not owned
	shardMoving     = "moving"     // owned by another member than its assignee
	shardUnassigned = "unassigned" // not assigned
)

// namePattern is what manager.Options.Name accepts.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// managerRoot returns the root prefix of the manager name: root with a trailing "/", or
// the manager's default, /etcdkit/<name>/.
func managerRoot(name, root string) (string, error) {
	if root == "" {
		if !namePattern.MatchString(name) {
			return "", usagef("status: a manager name holds only letters, digits, '-', '_' and '.', got %q", name)
		}
		return "/etcdkit/" + name + "/", nil
	}
	if !strings.HasPrefix(root, "/") || root == "/" {
		return "", usagef("--root must start with '/' and not be the root, got %q", root)
	}
	if !strings.HasSuffix(root, "/") {
		root += "/"
	}
	return root, nil
}

func runStatus(ctx context.Context, e *env) error {
	name, root := e.arg, e.opts.root
	kvs, rev, err := e.list(ctx, root)
	if err != nil {
		return err
	}
	if len(kvs) == 0 {
		return fmt.Errorf("no manager named %s under %s: no key there (give --root if its RootPrefix is another)", name, root)
	}
	leases := newTTLs(e.cli)
	out := readStatus(ctx, e, name, root, rev, kvs, leases)
	if e.opts.members {
		addDebug(ctx, &out, e.opts.memberTimeout)
	}
	leases.report(e)
	if e.opts.output == "json" {
		return writeJSON(e.stdout, out)
	}
	return printStatus(e.stdout, out, e.opts.members)
}

// readStatus builds the manager's state from the keys under its root.
func readStatus(ctx context.Context, e *env, name, root string, rev int64, kvs []*mvccpb.KeyValue, leases *ttls) statusOutput {
	out := statusOutput{Name: name, Root: root, Revision: rev, Candidates: []candidate{}, Members: []member{}}
	var elect []*mvccpb.KeyValue
	assigned, owners := map[int]string{}, map[int]*mvccpb.KeyValue{}
	shards, maxShard, hasShards := 0, -1, false
	var slices *mvccpb.KeyValue
	for _, kv := range kvs {
		rel := strings.TrimPrefix(string(kv.Key), root)
		dir, leaf, _ := strings.Cut(rel, "/")
		switch {
		case rel == "shards" && string(kv.Value) == "ranges":
			out.Mode = "ranges"
		case rel == "slices":
			slices = kv
		case rel == "shards":
			n, err := strconv.Atoi(string(kv.Value))
			if err != nil || n <= 0 {
				e.warn("%s holds %q, not a shard count; ignored", kv.Key, kv.Value)
				continue
			}
			shards, hasShards = n, true
		case strings.Contains(leaf, "/") || leaf == "":
		case dir == "election":
			elect = append(elect, kv)
		case dir == "members":
			m := member{Lease: leaseHex(kv.Lease)}
			if err := json.Unmarshal(kv.Value, &m.MemberInfo); err != nil {
				e.warn("%s does not hold a member record (%v)", kv.Key, err)
				m.State = "undecodable"
			}
			m.ID = leaf // the key names the member
			out.Members = append(out.Members, m)
		case dir == "assignments" || dir == "owners":
			s, err := strconv.Atoi(leaf)
			if err != nil || s < 0 {
				continue
			}
			maxShard, hasShards = max(maxShard, s), true
			if dir == "assignments" {
				assigned[s] = string(kv.Value)
			} else {
				owners[s] = kv
			}
		}
	}
	if cands := electionsIn(ctx, elect, leases)[root+"election/"]; len(cands) > 0 {
		out.Leader = &cands[0]
		out.Candidates = append(out.Candidates, cands[1:]...)
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].ID < out.Members[j].ID })
	if out.Mode == "ranges" {
		out.Slices = sliceRows(e, slices, assigned, owners)
		return out
	}
	if !hasShards {
		return out
	}
	if shards == 0 { // the count is stored on the first run; derive it if it is missing
		shards = maxShard + 1
	}
	if maxShard >= shards {
		e.warn("shard keys up to %d under %s, beyond the stored count of %d shards; those are not shown", maxShard, root, shards)
	}
	out.Sharding = shardMap(shards, assigned, owners, out.Members)
	return out
}

// shardMap lays the assignments and owners side by side and counts each member's part.
func shardMap(shards int, assigned map[int]string, owners map[int]*mvccpb.KeyValue, members []member) *sharding {
	sh := &sharding{
		Shards: shards, ShardMap: make([]shardRow, shards),
		AssignedNotOwned: []int{}, OwnedNotAssigned: []int{}, Unassigned: []int{},
	}
	st := manager.ShardStatus{Shards: shards, Assignment: make([]string, shards), Owners: make([]string, shards)}
	idx := map[string]int{}
	for i, m := range members {
		idx[m.ID] = i
	}
	for s := range sh.ShardMap {
		r := shardRow{Shard: s, Assigned: assigned[s]}
		if kv := owners[s]; kv != nil {
			r.Owner, r.Token, r.Lease = string(kv.Value), kv.CreateRevision, leaseHex(kv.Lease)
		}
		switch {
		case r.Assigned == "":
			r.State = shardUnassigned
			sh.Unassigned = append(sh.Unassigned, s)
		case r.Owner == "":
			r.State = shardUnowned
		case r.Owner != r.Assigned:
			r.State = shardMoving
		default:
			r.State = shardOK
		}
		if r.Assigned != "" && r.Owner == "" {
			sh.AssignedNotOwned = append(sh.AssignedNotOwned, s)
		}
		if r.Owner != "" && r.Owner != r.Assigned {
			sh.OwnedNotAssigned = append(sh.OwnedNotAssigned, s)
		}
		if i, ok := idx[r.Assigned]; ok {
			members[i].Assigned++
		}
		if i, ok := idx[r.Owner]; ok {
			members[i].Owned++
		}
		st.Assignment[s], st.Owners[s] = r.Assigned, r.Owner
		sh.ShardMap[s] = r
	}
	sh.Settled = st.Settled()
	return sh
}

// sliceRows lays out the range mode's slice map (the value of <root>slices) with the
// assignments and owners of its slices.
func sliceRows(e *env, kv *mvccpb.KeyValue, assigned map[int]string, owners map[int]*mvccpb.KeyValue) []sliceRow {
	if kv == nil {
		return nil
	}
	type slice struct {
		ID int64  `json:"id"`
		Lo string `json:"lo"`
		Hi string `json:"hi"`
	}
	var m struct {
		Map struct {
			Slices []slice `json:"slices"`
		} `json:"map"`
		Retired []slice `json:"retired"`
	}
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		e.warn("%s does not hold a slice map (%v)", kv.Key, err)
		return nil
	}
	var out []sliceRow
	add := func(s slice, retired bool) {
		r := sliceRow{ID: s.ID, From: s.Lo, To: s.Hi, Retired: retired, Assigned: assigned[int(s.ID)]}
		if o := owners[int(s.ID)]; o != nil {
			r.Owner, r.Token = string(o.Value), o.CreateRevision
		}
		out = append(out, r)
	}
	for _, s := range m.Map.Slices {
		add(s, false)
	}
	for _, s := range m.Retired {
		add(s, true)
	}
	return out
}
