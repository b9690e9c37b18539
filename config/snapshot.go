package config

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// DefaultMaxTxnOps is etcd's default --max-txn-ops: the most operations one transaction
// may hold.
const DefaultMaxTxnOps = 128

// Errors of snapshots; test for them with errors.Is.
var (
	// ErrSnapshotNotFound: no snapshot has the ID.
	ErrSnapshotNotFound = errors.New("snapshot not found")
	// ErrSnapshotExists: CreateSnapshot was given an ID that is taken.
	ErrSnapshotExists = errors.New("snapshot already exists")
	// ErrSnapshotTooLarge: restoring the snapshot needs more operations than one
	// transaction may hold. Nothing was restored.
	ErrSnapshotTooLarge = errors.New("snapshot too large to restore in one transaction")
	// ErrConcurrentChange: the configuration changed while a restore was prepared.
	// Nothing was restored; restoring again restores over the new state.
	ErrConcurrentChange = errors.New("configuration changed during the restore")
)

// Snapshots saves the whole configuration of a Manager under an ID and restores it later.
//
// A snapshot is one etcd key under a prefix of its own, outside the configuration (by
// default the Manager's prefix without its "/" plus ".snapshots/": "/config/app/" keeps its
// snapshots under "/config/app.snapshots/"), holding every key and value at one revision.
//
// A restore is one transaction: it puts every key of the snapshot and deletes every key
// that is not in it, on the condition that no key under the configuration prefix was
// written since the restore read it. So a restore is all or nothing. It fails with
// ErrConcurrentChange, restoring nothing, when another writer put a key in between (a
// delete in between is not noticed: the outcome is the snapshot either way). It fails
// with ErrSnapshotTooLarge when it would need more operations than a transaction may
// hold (see WithMaxTxnOps), instead of restoring a part.
type Snapshots struct {
	mgr       *Manager
	prefix    string
	maxTxnOps int
	// beforeCommit, when set by tests, runs between the read and the transaction of a
	// restore.
	beforeCommit func()
}

// SnapshotOption configures Snapshots.
type SnapshotOption func(*Snapshots)

// WithMaxTxnOps sets the most operations a restore may put in its transaction: etcd's
// --max-txn-ops of the cluster. Default DefaultMaxTxnOps.
func WithMaxTxnOps(n int) SnapshotOption { return func(s *Snapshots) { s.maxTxnOps = n } }

// WithSnapshotPrefix keeps the snapshots under prefix instead of the default (see
// Snapshots). It must not overlap the configuration's prefix.
func WithSnapshotPrefix(prefix string) SnapshotOption {
	return func(s *Snapshots) { s.prefix = prefix }
}

// NewSnapshots returns the snapshots of mgr's configuration.
func NewSnapshots(mgr *Manager, opts ...SnapshotOption) (*Snapshots, error) {
	if mgr == nil {
		return nil, errors.New("config: snapshots need a Manager, got nil")
	}
	s := &Snapshots{
		mgr:       mgr,
		prefix:    strings.TrimSuffix(mgr.prefix, "/") + ".snapshots/",
		maxTxnOps: DefaultMaxTxnOps,
	}
	for _, opt := range opts {
		opt(s)
	}
	if s.maxTxnOps < 1 {
		return nil, fmt.Errorf("config: max transaction operations must be at least 1, got %d", s.maxTxnOps)
	}
	if s.prefix == "" {
		return nil, errors.New("config: snapshot prefix must not be empty")
	}
	if !strings.HasSuffix(s.prefix, "/") {
		s.prefix += "/"
	}
	if strings.HasPrefix(s.prefix, mgr.prefix) || strings.HasPrefix(mgr.prefix, s.prefix) {
		return nil, fmt.Errorf("config: snapshot prefix %q must not overlap the configuration prefix %q", s.prefix, mgr.prefix)
	}
	return s, nil
}

// SnapshotInfo describes a stored snapshot.
type SnapshotInfo struct {
	// ID names the snapshot.
	ID string
	// Revision is the etcd revision the snapshot's values were read at.
	Revision int64
	// Created is when the snapshot was taken, in UTC.
	Created time.Time
	// Keys is the number of configuration keys in the snapshot.
	Keys int
}

// stored is a snapshot as it is kept in etcd. Values are the stored bytes, kept exactly
// (JSON encodes them in base64), by key relative to the configuration prefix.
type stored struct {
	ID       string            `json:"id"`
	Revision int64             `json:"revision"`
	Created  time.Time         `json:"created"`
	Values   map[string][]byte `json:"values"`
}

func (st *stored) info() SnapshotInfo {
	return SnapshotInfo{ID: st.ID, Revision: st.Revision, Created: st.Created, Keys: len(st.Values)}
}

func checkSnapshotID(id string) error {
	if id == "" {
		return errors.New("config: snapshot ID must not be empty")
	}
	if strings.Contains(id, "/") {
		return fmt.Errorf("config: snapshot ID must not contain \"/\", got %q", id)
	}
	return nil
}

// CreateSnapshot saves the configuration as it is now under id. It fails with
// ErrSnapshotExists when id is taken.
func (s *Snapshots) CreateSnapshot(ctx context.Context, id string) (SnapshotInfo, error) {
	if err := checkSnapshotID(id); err != nil {
		return SnapshotInfo{}, err
	}
	kvs, rev, err := etcdutil.ListPrefix(ctx, s.mgr.client, s.mgr.prefix, 0, 0)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("config: snapshot %q: reading the configuration: %w", id, err)
	}
	st := stored{ID: id, Revision: rev, Created: time.Now().UTC(), Values: make(map[string][]byte, len(kvs))}
	for _, kv := range kvs {
		st.Values[string(kv.Key)[len(s.mgr.prefix):]] = kv.Value
	}
	blob, err := json.Marshal(st)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("config: snapshot %q: encoding: %w", id, err)
	}
	key := s.prefix + id
	resp, err := s.mgr.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(blob))).
		Commit()
	if errors.Is(err, rpctypes.ErrRequestTooLarge) {
		return SnapshotInfo{}, fmt.Errorf("config: snapshot %q of %d keys (%d bytes) is larger than etcd accepts in one request: %w", id, len(kvs), len(blob), err)
	}
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("config: snapshot %q: storing %s: %w", id, key, err)
	}
	if !resp.Succeeded {
		return SnapshotInfo{}, fmt.Errorf("config: snapshot %q: %w", id, ErrSnapshotExists)
	}
	return st.info(), nil
}

// load reads the snapshot id.
func (s *Snapshots) load(ctx context.Context, id string) (*stored, error) {
	resp, err := s.mgr.client.Get(ctx, s.prefix+id)
	if err != nil {
		return nil, fmt.Errorf("config: snapshot %q: reading %s: %w", id, s.prefix+id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("config: snapshot %q: %w", id, ErrSnapshotNotFound)
	}
	var st stored
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return nil, fmt.Errorf("config: snapshot %q at %s does not decode: %w", id, s.prefix+id, err)
	}
	return &st, nil
}

// RestoreSnapshot makes the configuration equal to snapshot id, in one transaction (see
// Snapshots). It fails with ErrSnapshotNotFound, ErrSnapshotTooLarge or
// ErrConcurrentChange; in each case nothing was changed.
func (s *Snapshots) RestoreSnapshot(ctx context.Context, id string) error {
	if err := checkSnapshotID(id); err != nil {
		return err
	}
	st, err := s.load(ctx, id)
	if err != nil {
		return err
	}
	kvs, rev, err := etcdutil.ListPrefix(ctx, s.mgr.client, s.mgr.prefix, 0, 0)
	if err != nil {
		return fmt.Errorf("config: restoring snapshot %q: reading the configuration under %s: %w", id, s.mgr.prefix, err)
	}
	// Only keys whose bytes differ from the snapshot are written: the guard below makes the
	// restore atomic all the same, and an almost-equal configuration fits one transaction.
	current := make(map[string][]byte, len(kvs))
	for _, kv := range kvs {
		current[string(kv.Key)[len(s.mgr.prefix):]] = kv.Value
	}
	ops := make([]clientv3.Op, 0, len(st.Values)+len(kvs))
	for _, key := range slices.Sorted(maps.Keys(st.Values)) {
		if now, ok := current[key]; ok && bytes.Equal(now, st.Values[key]) {
			continue
		}
		ops = append(ops, clientv3.OpPut(s.mgr.prefix+key, string(st.Values[key])))
	}
	puts := len(ops)
	for _, kv := range kvs {
		if _, keep := st.Values[string(kv.Key)[len(s.mgr.prefix):]]; !keep {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	deletes := len(ops) - puts
	if len(ops) > s.maxTxnOps {
		return fmt.Errorf("config: restoring snapshot %q needs %d operations (%d puts, %d deletes) but one transaction may hold %d (etcd's --max-txn-ops): %w; nothing was restored",
			id, len(ops), puts, deletes, s.maxTxnOps, ErrSnapshotTooLarge)
	}
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	// Every key under the prefix still has the revision it had when read: none was
	// written since (a new key, too, would have a later one).
	unchanged := clientv3.Compare(clientv3.ModRevision(s.mgr.prefix), "<", rev+1).WithPrefix()
	resp, err := s.mgr.client.Txn(ctx).If(unchanged).Then(ops...).Commit()
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("config: restoring snapshot %q needs %d operations (%d puts, %d deletes), more than etcd's --max-txn-ops allows (set WithMaxTxnOps to it): %w; nothing was restored",
			id, len(ops), puts, deletes, ErrSnapshotTooLarge)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("config: restoring snapshot %q: the transaction is larger than etcd accepts in one request: %w; nothing was restored", id, err)
	case err != nil:
		return fmt.Errorf("config: restoring snapshot %q: writing under %s: %w", id, s.mgr.prefix, err)
	case !resp.Succeeded:
		return fmt.Errorf("config: restoring snapshot %q: %w (a key under %s was written after revision %d); nothing was restored",
			id, ErrConcurrentChange, s.mgr.prefix, rev)
	}
	if len(ops) > 0 {
		s.mgr.wrote(resp.Header.Revision)
	}
	s.mgr.log.Info("snapshot restored", "snapshot", id, "puts", puts, "deletes", deletes, "revision", resp.Header.Revision)
	return nil
}

// ListSnapshots returns the stored snapshots, sorted by ID. Snapshots that do not decode
// are left out and named in the error.
func (s *Snapshots) ListSnapshots(ctx context.Context) ([]SnapshotInfo, error) {
	kvs, _, err := etcdutil.ListPrefix(ctx, s.mgr.client, s.prefix, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("config: listing snapshots under %s: %w", s.prefix, err)
	}
	out := make([]SnapshotInfo, 0, len(kvs))
	var errs []error
	for _, kv := range kvs {
		var st stored
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			errs = append(errs, fmt.Errorf("config: snapshot at %s does not decode: %w", kv.Key, err))
			continue
		}
		out = append(out, st.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}

// DeleteSnapshot removes snapshot id. It fails with ErrSnapshotNotFound when there is none.
func (s *Snapshots) DeleteSnapshot(ctx context.Context, id string) error {
	if err := checkSnapshotID(id); err != nil {
		return err
	}
	resp, err := s.mgr.client.Delete(ctx, s.prefix+id)
	if err != nil {
		return fmt.Errorf("config: deleting snapshot %q (%s): %w", id, s.prefix+id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("config: snapshot %q: %w", id, ErrSnapshotNotFound)
	}
	return nil
}
