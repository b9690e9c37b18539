package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/source"
)

// Backoff of the cache's watch after a break.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// Manager reads and writes configuration values stored as JSON under a key prefix, and
// keeps an in-memory cache of the whole prefix that a watch keeps up to date.
//
// Reads are served from the cache once it holds a first list, with one exception that
// makes them never stale within the process: after a write of this Manager (Set, Delete,
// a snapshot restore) returns, reads go to etcd until the cache has seen that write's
// revision. Writes of other processes reach the cache as fast as the watch delivers them.
//
// A Manager is safe for concurrent use. Close stops its goroutines.
type Manager struct {
	client *clientv3.Client
	prefix string // ends in "/"
	log    logr.Logger
	// src is the cache: it lists and watches the prefix and holds its keys as stored.
	src *source.Source

	// ctx ends at Close; wg counts the cache's goroutine and the Watch subscribers.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards what follows. Invariant: every subscriber has been handed every change
	// the source delivered after the subscriber's start revision.
	mu      sync.RWMutex
	written int64 // the highest revision this Manager wrote; reads use the cache only when its revision >= written
	subs    map[*subscription]struct{}
	closed  bool

	relists int // the source's relists already logged; only the source's goroutine uses it

	// decoded memoizes the decoding of cached values, by key: an entry serves while the
	// cache holds the same revision of its key.
	decoded source.Memo[*entry]
}

// Options configure a Manager made by NewManager. The zero value is valid.
type Options struct {
	// Logger receives the Manager's logs. Default (the zero logr.Logger): discarded.
	Logger logr.Logger
}

// NewManager returns a Manager of the values under prefix (a "/" is appended when missing:
// "/config/app" holds "/config/app/database/host"), configured by opts. It starts filling
// its cache in the background and does not wait for etcd: see WaitForSync.
func NewManager(client *clientv3.Client, prefix string, opts Options) (*Manager, error) {
	if client == nil {
		return nil, errors.New("config: client must not be nil")
	}
	if prefix == "" {
		return nil, errors.New("config: prefix must not be empty")
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	src, err := source.New(client, prefix, source.Options{MinBackoff: minBackoff, MaxBackoff: maxBackoff, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		client: client,
		prefix: prefix,
		log:    opts.Logger,
		src:    src,
		ctx:    ctx,
		cancel: cancel,
		subs:   map[*subscription]struct{}{},
	}
	m.wg.Add(1)
	// The cache goroutine belongs to the Manager (m.wg) and stops when Close cancels m.ctx,
	// or by itself when the client is closed.
	go m.run()
	return m, nil
}

// Prefix returns the key prefix of the Manager's values, ending in "/".
func (m *Manager) Prefix() string { return m.prefix }

// WaitForSync waits until the cache holds a first list of the prefix, or ctx ends. A
// permanent error (the user may not read the prefix, for one) is returned at once, naming
// the prefix; the cache goes on retrying in the background, every few seconds.
func (m *Manager) WaitForSync(ctx context.Context) error {
	if m.src.HasSynced() {
		return nil
	}
	wctx, cancel := etcdutil.Bound(ctx, m.ctx)
	defer cancel()
	err := m.src.WaitForSync(wctx)
	switch {
	case err == nil:
		return nil
	case m.ctx.Err() != nil:
		return ErrClosed
	case ctx.Err() != nil:
		return fmt.Errorf("config: waiting for the cache of %s: %w", m.prefix, ctx.Err())
	default:
		return fmt.Errorf("config: %w", err)
	}
}

// HasSynced reports whether the cache holds a first list of the prefix.
func (m *Manager) HasSynced() bool { return m.src.HasSynced() }

// Set stores value as JSON at key (relative to the prefix, e.g. "database/host").
func (m *Manager) Set(ctx context.Context, key string, value any) error {
	if err := checkKey(key); err != nil {
		return err
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("config: %q: a value of type %T does not encode as JSON: %w", key, value, err)
	}
	if m.isClosed() {
		return ErrClosed
	}
	// A put of the same value again is harmless: it is retried through etcd's transient
	// errors.
	var resp *clientv3.PutResponse
	err = etcdutil.RetryTransient(ctx, func() (err error) {
		resp, err = m.client.Put(ctx, m.prefix+key, string(raw))
		return err
	})
	if err != nil {
		return fmt.Errorf("config: setting %q (%s): %w", key, m.prefix+key, err)
	}
	m.wrote(resp.Header.Revision)
	return nil
}

// Delete removes the value at key. Deleting a missing key is not an error.
func (m *Manager) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if m.isClosed() {
		return ErrClosed
	}
	var resp *clientv3.DeleteResponse
	err := etcdutil.RetryTransient(ctx, func() (err error) {
		resp, err = m.client.Delete(ctx, m.prefix+key)
		return err
	})
	if err != nil {
		return fmt.Errorf("config: deleting %q (%s): %w", key, m.prefix+key, err)
	}
	// A delete of nothing makes no revision that the cache would see.
	if resp.Deleted > 0 {
		m.wrote(resp.Header.Revision)
	}
	return nil
}

// wrote records a revision this Manager wrote: reads bypass the cache until it has seen it.
func (m *Manager) wrote(rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.written = max(m.written, rev)
}

func (m *Manager) isClosed() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.closed
}

// Get returns the decoded value at key: a string, int64 (integral numbers), float64,
// bool, nil, map[string]any or []any.
func (m *Manager) Get(ctx context.Context, key string) (any, error) {
	e, err := m.lookup(ctx, key)
	if err != nil {
		return nil, err
	}
	if e.err != nil {
		return nil, e.invalid(key)
	}
	return e.value(), nil
}

// GetString returns the string at key. It fails with ErrNotFound, ErrInvalidValue or
// ErrWrongType (the error names the key and the stored value).
func (m *Manager) GetString(ctx context.Context, key string) (string, error) {
	return typed(m, ctx, key, "string", asString)
}

// GetInt returns the integer at key (a JSON number without a fractional part). It fails
// like GetString.
func (m *Manager) GetInt(ctx context.Context, key string) (int, error) {
	return typed(m, ctx, key, "int", asInt)
}

// GetBool returns the boolean at key. It fails like GetString.
func (m *Manager) GetBool(ctx context.Context, key string) (bool, error) {
	return typed(m, ctx, key, "bool", asBool)
}

func typed[T any](m *Manager, ctx context.Context, key, want string, conv func(any) (T, string)) (T, error) {
	var zero T
	e, err := m.lookup(ctx, key)
	if err != nil {
		return zero, err
	}
	if e.err != nil {
		return zero, e.invalid(key)
	}
	v, why := conv(e.val)
	if why != "" {
		return zero, e.wrongType(key, want, why)
	}
	return v, nil
}

// lookup finds the entry of key in the cache, or in etcd while the cache may be behind.
func (m *Manager) lookup(ctx context.Context, key string) (*entry, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	fresh, err := m.cacheAnswers()
	if err != nil {
		return nil, err
	}
	var kv *mvccpb.KeyValue
	if fresh {
		kv, _ = m.src.Get(m.prefix + key)
		if kv != nil {
			return m.entryOf(kv), nil
		}
	} else {
		resp, err := m.client.Get(ctx, m.prefix+key)
		if err != nil {
			return nil, fmt.Errorf("config: reading %q: %w", key, err)
		}
		if len(resp.Kvs) > 0 {
			kv = resp.Kvs[0]
		}
	}
	if kv == nil {
		return nil, fmt.Errorf("config: %q: %w", key, ErrNotFound)
	}
	return newEntry(kv), nil
}

// entryOf returns the decoded entry of a cached key-value, decoding it once per revision.
func (m *Manager) entryOf(kv *mvccpb.KeyValue) *entry {
	return m.decoded.Get(kv, newEntry)
}

// cacheAnswers reports whether reads may use the cache: it holds a first list and every
// write of this Manager. The cache only moves forward, so a read that follows sees at least
// that state.
func (m *Manager) cacheAnswers() (bool, error) {
	m.mu.RLock()
	closed, written := m.closed, m.written
	m.mu.RUnlock()
	if closed {
		return false, ErrClosed
	}
	return m.src.HasSynced() && m.src.Revision() >= written, nil
}

// GetAll returns the values under sub, keyed by their full key relative to the prefix:
// GetAll(ctx, "database") gives "database/host" and "database/port". An empty sub gives
// every value. Values that do not decode are left out of the map and named in the error,
// which wraps ErrInvalidValue; the map holds the others.
func (m *Manager) GetAll(ctx context.Context, sub string) (map[string]any, error) {
	if strings.HasPrefix(sub, "/") {
		return nil, fmt.Errorf("config: sub-prefix must not start with \"/\" (it is relative to the manager's prefix), got %q", sub)
	}
	if sub != "" && !strings.HasSuffix(sub, "/") {
		sub += "/"
	}
	entries, err := m.entriesUnder(ctx, sub)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(entries))
	var errs []error
	for key, e := range entries {
		if e.err != nil {
			errs = append(errs, e.invalid(key))
			continue
		}
		out[key] = e.value()
	}
	return out, errors.Join(errs...)
}

// entriesUnder returns the entries whose keys start with sub, from the cache when it can
// answer.
func (m *Manager) entriesUnder(ctx context.Context, sub string) (map[string]*entry, error) {
	fresh, err := m.cacheAnswers()
	if err != nil {
		return nil, err
	}
	var kvs []*mvccpb.KeyValue
	if fresh {
		kvs = m.src.List(m.prefix + sub)
	} else if kvs, _, err = etcdutil.ListPrefix(ctx, m.client, m.prefix+sub, 0, 0); err != nil {
		return nil, fmt.Errorf("config: listing %q: %w", m.prefix+sub, err)
	}
	out := make(map[string]*entry, len(kvs))
	for _, kv := range kvs {
		e := newEntry(kv)
		if fresh {
			e = m.entryOf(kv)
		}
		out[string(kv.Key)[len(m.prefix):]] = e
	}
	return out, nil
}

// Close stops the cache and every Watch subscriber, and waits for them. Calls after Close
// fail with ErrClosed.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}
