package store

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcderr"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// written is what a write leaves at its key when it is applied: data (a put) or no key (a
// delete), over the state of ModRevision expected (0: a create, or a delete of whatever is
// there).
type written struct {
	data     []byte
	deleted  bool
	expected int64
}

// outcome is what a read of the key says of a write whose answer was lost.
type outcome int

const (
	notApplied outcome = iota // the precondition still holds: sending it again is safe
	applied                   // the key is as the write left it
	unknown                   // the key moved: the write may or may not be among the moves
)

// judge reads what kv (nil: no key) says of w.
func (w written) judge(kv *mvccpb.KeyValue) outcome {
	switch {
	case w.deleted && kv == nil:
		return applied // gone, as the delete leaves it
	case w.deleted && (w.expected == 0 || kv.ModRevision == w.expected):
		return notApplied
	case w.deleted:
		return unknown
	case kv == nil && w.expected == 0:
		return notApplied // a create whose key is still missing
	case kv == nil:
		return unknown // deleted since: before or after the update, no one can say
	case w.expected != 0 && kv.ModRevision == w.expected:
		return notApplied
	case w.expected == 0 && kv.Version == 1 && bytes.Equal(kv.Value, w.data),
		w.expected != 0 && kv.ModRevision > w.expected && bytes.Equal(kv.Value, w.data):
		// The value this write put, on a key past the state it was made on. (A second
		// writer that put exactly these bytes leaves the same state: the caller's intent
		// holds either way.)
		return applied
	}
	return unknown
}

// retry runs txn and, while etcd answers with a transient error (a leader change, a
// timeout, a member unavailable) and ctx lives, reads the key to learn whether the write
// was applied: it returns the key as the write left it (applied), sends txn again when the
// write certainly was not applied, and returns ErrOutcomeUnknown when the key has moved
// so that no one can tell. A txn whose answer was lost may still be applied later; the
// precondition that every store write carries keeps the retry from applying it twice.
func (s *Store[T]) retry(ctx context.Context, key string, w written, txn func() (*clientv3.TxnResponse, error)) (*clientv3.TxnResponse, *mvccpb.KeyValue, error) {
	bo := etcdutil.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	for {
		resp, err := txn()
		if err == nil {
			return resp, nil, nil
		}
		if ctx.Err() != nil || !etcderr.IsTransient(err) {
			return nil, nil, fmt.Errorf("store: writing %s: %w", key, err)
		}
		s.opts.Logger.V(1).Info("write not answered, checking whether it was applied", "key", key, "error", err.Error())
		if !etcdutil.Sleep(ctx, bo.Next()) {
			return nil, nil, fmt.Errorf("store: writing %s: %w (%w: %w)", key, ErrOutcomeUnknown, err, ctx.Err())
		}
		now, gerr := s.read(ctx, key)
		if gerr != nil {
			return nil, nil, fmt.Errorf("store: writing %s: %w (%w; then %w)", key, ErrOutcomeUnknown, err, gerr)
		}
		var kv *mvccpb.KeyValue
		if len(now.Kvs) > 0 {
			kv = now.Kvs[0]
		}
		switch w.judge(kv) {
		case applied:
			if kv == nil {
				kv = &mvccpb.KeyValue{Key: []byte(key), ModRevision: now.Header.Revision}
			}
			return nil, kv, nil
		case unknown:
			return nil, nil, fmt.Errorf("store: writing %s: %w: etcd answered %w, and the key has moved since", key, ErrOutcomeUnknown, err)
		}
		// Not applied: send it again.
	}
}
