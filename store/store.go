package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/source"
)

// Defaults of Options.
const (
	DefaultMutateAttempts   = 10
	DefaultMutateMinBackoff = 5 * time.Millisecond
	DefaultMutateMaxBackoff = time.Second
)

// Meta is what etcd knows of a stored object.
type Meta struct {
	Key            string
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// Object is a decoded object with its metadata.
type Object[T any] struct {
	Meta
	Value T
}

// Options configure a Store. The zero value is valid.
type Options[T any] struct {
	// Codec encodes and decodes values. Default DefaultCodec[T](): String for a string,
	// Bytes for a []byte, JSON for anything else.
	Codec Codec[T]
	// Cache, when set, is the cache that Cached and CachedList read instead of etcd: a
	// *source.Source over the store's prefix (or a wider one), or a manager's shared cache
	// (manager.Manager.GetCache), which New asks to cover the prefix (see Reader).
	Cache Reader
	// MutateAttempts bounds Mutate's retries on conflict. Default DefaultMutateAttempts.
	MutateAttempts int
	// Logger receives the store's logs. Default: discarded.
	Logger logr.Logger
	// OnFenced, when set, is called for every write refused because its fence no longer
	// held (a metric, typically).
	OnFenced func()
}

// Reader is a cache of key-values that a store reads (Options.Cache): a *source.Source,
// or a manager's shared cache. A Reader that can also start caching a prefix (it has a
// method Source(prefix string) (*source.Source, error), as manager.Cache does) is asked
// to cover the store's prefix when the store is made.
type Reader interface {
	// Get returns the cached state of key; the returned value must not be modified.
	Get(key string) (*mvccpb.KeyValue, bool)
	// List returns the cached keys under prefix, sorted; the values must not be modified.
	List(prefix string) []*mvccpb.KeyValue
	// Covers reports whether every key under prefix is cached.
	Covers(prefix string) bool
}

// Store reads and writes objects of type T under a prefix. It is safe for concurrent use.
type Store[T any] struct {
	client *clientv3.Client
	prefix string
	opts   Options[T]
	// decoded memoizes the decoding of cached values for Cached and CachedList, per key
	// and revision. It is per store, so per type and codec.
	decoded source.Memo[decoded[T]]
}

// decoded is a cached value's decoding: an object or the error it gives.
type decoded[T any] struct {
	obj *Object[T]
	err error
}

// New returns a store of the objects under prefix, which must not be empty.
func New[T any](client *clientv3.Client, prefix string, opts Options[T]) (*Store[T], error) {
	if client == nil {
		return nil, errors.New("store: client must not be nil")
	}
	if prefix == "" {
		return nil, errors.New("store: prefix must not be empty")
	}
	if opts.MutateAttempts < 0 {
		return nil, fmt.Errorf("store: MutateAttempts must not be negative, got %d", opts.MutateAttempts)
	}
	if opts.Codec == nil {
		opts.Codec = DefaultCodec[T]()
	}
	if opts.MutateAttempts == 0 {
		opts.MutateAttempts = DefaultMutateAttempts
	}
	if c, ok := opts.Cache.(interface {
		Source(prefix string) (*source.Source, error)
	}); ok {
		if _, err := c.Source(prefix); err != nil {
			return nil, fmt.Errorf("store: caching %s: %w", prefix, err)
		}
	}
	if opts.Cache != nil && !opts.Cache.Covers(prefix) {
		return nil, fmt.Errorf("store: the cache does not cover the store prefix %q", prefix)
	}
	return &Store[T]{client: client, prefix: prefix, opts: opts}, nil
}

// Prefix returns the store's prefix.
func (s *Store[T]) Prefix() string { return s.prefix }

// Key returns the full key of a name under the prefix.
func (s *Store[T]) Key(name string) string { return s.prefix + name }

func (s *Store[T]) checkKey(key string) error {
	if !strings.HasPrefix(key, s.prefix) || len(key) == len(s.prefix) {
		return fmt.Errorf("store: key %q is not under the store's prefix %q", key, s.prefix)
	}
	return nil
}

// Decode turns a key-value read elsewhere (a watch event, a reconcile.Tombstone) into an
// object of the store's type.
func (s *Store[T]) Decode(kv *mvccpb.KeyValue) (*Object[T], error) {
	if kv == nil {
		return nil, errors.New("store: Decode of a nil key-value")
	}
	return s.decode(kv)
}

// decode turns a stored key-value into an object.
func (s *Store[T]) decode(kv *mvccpb.KeyValue) (*Object[T], error) {
	obj := &Object[T]{Meta: metaOf(kv)}
	if err := s.opts.Codec.Decode(kv.Value, &obj.Value); err != nil {
		return nil, &DecodeError{Key: obj.Key, ModRevision: kv.ModRevision, Err: err}
	}
	return obj, nil
}

// Get reads key from etcd (a linearizable read).
func (s *Store[T]) Get(ctx context.Context, key string) (*Object[T], error) {
	if err := s.checkKey(key); err != nil {
		return nil, err
	}
	resp, err := s.read(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return s.decode(resp.Kvs[0])
}

// read gets key (with opts), retrying etcd's transient errors within ctx.
func (s *Store[T]) read(ctx context.Context, key string, opts ...clientv3.OpOption) (resp *clientv3.GetResponse, err error) {
	err = etcdutil.RetryTransient(ctx, func() error {
		resp, err = s.client.Get(ctx, key, opts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: reading %s: %w", key, err)
	}
	return resp, nil
}

// List reads every object under the prefix from etcd, at one revision. Objects that do not
// decode are left out and reported together in the error (each a *DecodeError); the others
// are returned.
func (s *Store[T]) List(ctx context.Context) ([]*Object[T], error) {
	resp, err := s.read(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	return s.decodeAll(resp.Kvs)
}

func (s *Store[T]) decodeAll(kvs []*mvccpb.KeyValue) ([]*Object[T], error) {
	out := make([]*Object[T], 0, len(kvs))
	var errs []error
	for _, kv := range kvs {
		obj, err := s.decode(kv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, obj)
	}
	return out, errors.Join(errs...)
}

// Cached reads key from the cache of Options. It fails if the store has no cache, with
// ErrNotFound when the cache holds no such key, and with ErrNotCached when the cache does
// not hold the key whether or not it exists (a range-sharded replica's cache of a key in
// another replica's slice).
//
// A cached read decodes a key once per revision: every Cached and CachedList of the same
// revision shares that decoding, and returns its own shallow copy of it. The copy's Meta
// and the top level of its Value are the caller's to change; what Value refers to (maps,
// slices, pointers) is shared with the other readers and must not be modified: copy it
// first (or read with Get, which decodes afresh).
func (s *Store[T]) Cached(key string) (*Object[T], error) {
	if s.opts.Cache == nil {
		return nil, errors.New("store: no cache configured (Options.Cache)")
	}
	if err := s.checkKey(key); err != nil {
		return nil, err
	}
	kv, ok := s.opts.Cache.Get(key)
	if !ok {
		s.decoded.Forget(key)
		if h, partial := s.opts.Cache.(interface{ Holds(key string) bool }); partial && !h.Holds(key) {
			return nil, fmt.Errorf("%w: %s (this replica caches the keys of its own slices only: read it with Get)", ErrNotCached, key)
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return s.cachedDecode(kv)
}

// CachedList lists the prefix from the cache of Options, like List; its objects are
// shared as Cached's are. A range-sharded replica's cache lists the keys of its own
// slices only.
func (s *Store[T]) CachedList() ([]*Object[T], error) {
	if s.opts.Cache == nil {
		return nil, errors.New("store: no cache configured (Options.Cache)")
	}
	kvs := s.opts.Cache.List(s.prefix)
	out := make([]*Object[T], 0, len(kvs))
	var errs []error
	for _, kv := range kvs {
		obj, err := s.cachedDecode(kv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, obj)
	}
	if s.decoded.Len() > len(kvs) { // keys deleted since they were read
		listed := make(map[string]struct{}, len(kvs))
		for _, kv := range kvs {
			listed[string(kv.Key)] = struct{}{}
		}
		s.decoded.Retain(func(k string) bool { _, ok := listed[k]; return ok })
	}
	return out, errors.Join(errs...)
}

// cachedDecode returns a copy of the memoized decoding of a cached key-value.
func (s *Store[T]) cachedDecode(kv *mvccpb.KeyValue) (*Object[T], error) {
	d := s.decoded.Get(kv, func(kv *mvccpb.KeyValue) decoded[T] {
		obj, err := s.decode(kv)
		return decoded[T]{obj: obj, err: err}
	})
	if d.err != nil {
		return nil, d.err
	}
	cp := *d.obj
	return &cp, nil
}

// Create writes a new object; it fails with ErrExists if key is there already.
func (s *Store[T]) Create(ctx context.Context, key string, value *T) (*Object[T], error) {
	obj, err := s.write(ctx, key, value, clientv3.Compare(clientv3.CreateRevision(key), "=", 0), 0)
	var ce *ConflictError[T]
	if errors.As(err, &ce) {
		return nil, fmt.Errorf("%w: %s (created at revision %d)", ErrExists, key, ce.Current.CreateRevision)
	}
	return obj, err
}

// Update replaces the object at key if its ModRevision is still modRevision; otherwise it
// returns a *ConflictError with the current state and writes nothing. For a type with
// finalizers, value must keep the Lifecycle that was read; an update of an object being
// deleted that leaves no finalizer deletes it, and returns a nil object.
func (s *Store[T]) Update(ctx context.Context, key string, value *T, modRevision int64) (*Object[T], error) {
	if modRevision <= 0 {
		return nil, fmt.Errorf("store: Update of %s needs the mod revision that was read, got %d", key, modRevision)
	}
	return s.write(ctx, key, value, clientv3.Compare(clientv3.ModRevision(key), "=", modRevision), modRevision)
}

// Delete deletes key if its ModRevision is still modRevision (a *ConflictError otherwise);
// a modRevision of 0 deletes whatever is there. Deleting a missing key with modRevision 0
// succeeds. When T embeds Lifecycle and the object has finalizers, Delete marks it
// instead (Lifecycle.DeletionRequested) and the removal of its last finalizer deletes it:
// see Lifecycle.
func (s *Store[T]) Delete(ctx context.Context, key string, modRevision int64) error {
	if err := s.checkKey(key); err != nil {
		return err
	}
	if modRevision < 0 {
		return fmt.Errorf("store: Delete of %s: mod revision must not be negative, got %d", key, modRevision)
	}
	if s.Finalizable() {
		return s.deleteOrMark(ctx, key, modRevision)
	}
	return s.deleteAt(ctx, key, modRevision)
}

// Mutate reads key, applies fn to its value and writes the result if nothing moved
// meanwhile, retrying on conflict with backoff (5 ms doubling, up to MutateAttempts). When
// fn leaves the encoded value unchanged nothing is written, so a reconciler that mutates
// its own key does not wake itself up again. fn may run several times and must only change
// the value it is given; an error from fn ends Mutate with that error and writes nothing.
//
// For a type with finalizers (see Lifecycle), Mutate keeps the deletion mark that was
// read, and when fn removes the last finalizer of an object being deleted it deletes the
// key instead, and returns a nil object.
func (s *Store[T]) Mutate(ctx context.Context, key string, fn func(*T) error) (*Object[T], error) {
	if err := s.checkKey(key); err != nil {
		return nil, err
	}
	var out *Object[T]
	err := s.onConflict(ctx, key, true, func() error {
		resp, err := s.read(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		cur, err := s.decode(resp.Kvs[0])
		if err != nil {
			return err
		}
		lc := lifecycleOf(&cur.Value)
		var mark *time.Time
		if lc != nil {
			mark = lc.DeletionRequested
		}
		if err := fn(&cur.Value); err != nil {
			return fnError{err}
		}
		if mark != nil {
			lc.DeletionRequested = mark
		}
		data, err := s.opts.Codec.Encode(&cur.Value)
		if err != nil {
			return fmt.Errorf("store: encoding %s: %w", key, err)
		}
		if bytes.Equal(data, resp.Kvs[0].Value) {
			out = cur
			return nil
		}
		out, err = s.put(ctx, key, data, &cur.Value, clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision), cur.ModRevision)
		return err
	})
	if fe, ok := err.(fnError); ok {
		return nil, fe.err
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// fnError carries the error of Mutate's fn through the conflict retries, which it ends.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// write encodes value and puts it under cond. For a type with finalizers, a value being
// deleted is never created (see put for one that is updated).
func (s *Store[T]) write(ctx context.Context, key string, value *T, cond clientv3.Cmp, expected int64) (*Object[T], error) {
	if err := s.checkKey(key); err != nil {
		return nil, err
	}
	if value == nil {
		return nil, fmt.Errorf("store: writing %s: value must not be nil", key)
	}
	if lc := lifecycleOf(value); lc != nil && lc.Deleting() && expected == 0 {
		return nil, fmt.Errorf("store: creating %s: the value has DeletionRequested set: a new object cannot be being deleted", key)
	}
	data, err := s.opts.Codec.Encode(value)
	if err != nil {
		return nil, fmt.Errorf("store: encoding %s: %w", key, err)
	}
	return s.put(ctx, key, data, value, cond, expected)
}

// put writes encoded data under cond and returns the object with its new metadata. For a
// type with finalizers, an update of an object being deleted that leaves no finalizer
// deletes the key instead, under the same mod revision, and returns a nil object: Update
// and Mutate share that rule here.
func (s *Store[T]) put(ctx context.Context, key string, data []byte, value *T, cond clientv3.Cmp, expected int64) (*Object[T], error) {
	if lc := lifecycleOf(value); lc != nil && lc.Deleting() && len(lc.Finalizers) == 0 && expected > 0 {
		return nil, s.deleteAt(ctx, key, expected)
	}
	// The previous state, returned by the put itself, gives the new metadata without a
	// second operation: same create revision, one more version, the write's revision, no
	// lease (a put without one detaches the key from any).
	resp, applied, err := s.commit(ctx, key, []clientv3.Cmp{cond}, []clientv3.Op{clientv3.OpPut(key, string(data), clientv3.WithPrevKV())}, expected,
		written{data: data, expected: expected})
	if err != nil {
		return nil, err
	}
	if applied != nil {
		return &Object[T]{Meta: metaOf(applied), Value: *value}, nil
	}
	rev := resp.Header.Revision
	meta := Meta{Key: key, CreateRevision: rev, ModRevision: rev, Version: 1}
	if prev := resp.Responses[0].GetResponsePut().PrevKv; prev != nil {
		meta.CreateRevision, meta.Version = prev.CreateRevision, prev.Version+1
	}
	return &Object[T]{Meta: meta, Value: *value}, nil
}

// commit runs ops if conds hold and the context's fence holds, and returns the answer of
// the ops. With a fence the transaction nests: the outer one checks the fence, the inner
// one the preconditions, so that the answer tells a lost fence (fence.ErrFenced) from a moved
// object (ErrConflict). A conflict reads the current state afterwards: an Else branch in
// every write would cost each write about a tenth of its throughput to speed up the rare
// conflict.
//
// etcd's transient errors are retried within ctx, but only once it is known that the
// write was not applied (see retry.go): a write is never applied twice, and the caller's
// own write never comes back as ErrConflict. When it was applied, applied holds the key as
// the write left it and resp is nil.
func (s *Store[T]) commit(ctx context.Context, key string, conds []clientv3.Cmp, ops []clientv3.Op, expected int64, w written) (resp *clientv3.TxnResponse, applied *mvccpb.KeyValue, err error) {
	var inner *clientv3.TxnResponse
	if f, fenced := fence.From(ctx); !fenced {
		resp, applied, err := s.retry(ctx, key, w, func() (*clientv3.TxnResponse, error) {
			return s.client.Txn(ctx).If(conds...).Then(ops...).Commit()
		})
		if err != nil || applied != nil {
			return nil, applied, err
		}
		inner = resp
	} else {
		resp, applied, err := s.retry(ctx, key, w, func() (*clientv3.TxnResponse, error) {
			return s.client.Txn(ctx).If(f.Cmps...).Then(clientv3.OpTxn(conds, ops, nil)).Commit()
		})
		if err != nil || applied != nil {
			return nil, applied, err
		}
		if !resp.Succeeded {
			if s.opts.OnFenced != nil {
				s.opts.OnFenced()
			}
			s.opts.Logger.Info("write fenced", "key", key, "fence", f.Holder)
			return nil, nil, &fence.Error{Key: key, Holder: f.Holder}
		}
		txn := resp.Responses[0].GetResponseTxn()
		inner = &clientv3.TxnResponse{Header: resp.Header, Succeeded: txn.Succeeded, Responses: txn.Responses}
	}
	if inner.Succeeded {
		return inner, nil, nil
	}
	ce := &ConflictError[T]{Key: key, Expected: expected}
	if now, err := s.client.Get(ctx, key); err == nil && len(now.Kvs) == 1 {
		cur, err := s.decode(now.Kvs[0])
		if err != nil {
			cur = &Object[T]{Meta: metaOf(now.Kvs[0])} // the state is known even if the value is not
		}
		ce.Current = cur
	}
	return nil, nil, ce
}

func metaOf(kv *mvccpb.KeyValue) Meta {
	return Meta{Key: string(kv.Key), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}
