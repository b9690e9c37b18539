package config

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// run fills the cache with a list of the prefix and keeps it up to date with a watch from
// the list's revision + 1. When the watch breaks (compaction, lost leader) it lists again,
// hands the differences to the subscribers and watches on. It returns when ctx ends or the
// client is closed.
func (m *Manager) run(ctx context.Context) {
	defer m.wg.Done()
	bo := etcdutil.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	pause := func() bool { return etcdutil.Sleep(ctx, bo.Next()) }
	relist := func() bool {
		for {
			err := m.relist(ctx)
			if err == nil {
				return true
			}
			if ctx.Err() != nil || m.client.Ctx().Err() != nil {
				return false
			}
			d := bo.Next()
			m.log.Info("listing the configuration failed; retrying", "prefix", m.prefix,
				"retryIn", d.String(), "error", err.Error())
			if !etcdutil.Sleep(ctx, d) {
				return false
			}
		}
	}
	if !relist() {
		return
	}
	for {
		progressed, err := m.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		if m.client.Ctx().Err() != nil {
			m.log.Info("etcd client closed; the configuration cache stops", "prefix", m.prefix)
			return
		}
		m.log.Info("configuration watch broken; listing again", "prefix", m.prefix, "revision", m.revision(), "reason", err.Error())
		// A watch that delivered something was healthy: relist at once. One that broke
		// before delivering anything is not retried in a tight loop.
		if progressed {
			bo.Reset()
		} else if !pause() {
			return
		}
		if !relist() {
			return
		}
	}
}

func (m *Manager) revision() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rev
}

// watch applies the changes from the cache's revision + 1 until the watch breaks, and
// returns why. It reports whether any response arrived.
func (m *Manager) watch(ctx context.Context) (bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.client.Watch(wctx, m.prefix, clientv3.WithPrefix(), clientv3.WithRev(m.revision()+1),
		clientv3.WithProgressNotify())
	progressed := false
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return progressed, err
		}
		progressed = true
		m.mu.Lock()
		was := m.rev
		if resp.IsProgressNotify() {
			m.rev = max(m.rev, resp.Header.Revision)
		}
		for _, ev := range resp.Events {
			m.apply(ev)
		}
		if m.rev != was {
			m.advance()
		}
		m.mu.Unlock()
	}
	return progressed, errors.New("watch channel closed")
}

// apply records one change in the cache and hands it to the subscribers; the caller holds
// m.mu. A rewrite of the same bytes is not a change for the subscribers.
func (m *Manager) apply(ev *clientv3.Event) {
	kv := ev.Kv
	m.rev = max(m.rev, kv.ModRevision)
	key := string(kv.Key)[len(m.prefix):]
	old := m.cache[key]
	if ev.Type == mvccpb.DELETE {
		if old != nil {
			delete(m.cache, key)
			m.notify(key, present(old.raw), nil)
		}
		return
	}
	if old != nil && kv.ModRevision <= old.modRev {
		return // already seen (a duplicate after a reconnect)
	}
	m.cache[key] = newEntry(kv)
	if old == nil {
		m.notify(key, nil, present(kv.Value))
	} else if !bytes.Equal(old.raw, kv.Value) {
		m.notify(key, present(old.raw), present(kv.Value))
	}
}

// relist replaces the cache with a fresh list of the prefix and hands the differences to
// the subscribers.
func (m *Manager) relist(ctx context.Context) error {
	kvs, rev, err := etcdutil.ListPrefix(ctx, m.client, m.prefix, 0, 0)
	if err != nil {
		return err
	}
	fresh := make(map[string]*entry, len(kvs))
	for _, kv := range kvs {
		fresh[string(kv.Key)[len(m.prefix):]] = newEntry(kv)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Changes are handed out in key order: each key's old and new value, nil when absent.
	for _, key := range slices.Sorted(maps.Keys(fresh)) {
		old := m.cache[key]
		switch {
		case old == nil:
			m.notify(key, nil, present(fresh[key].raw))
		case !bytes.Equal(old.raw, fresh[key].raw):
			m.notify(key, present(old.raw), present(fresh[key].raw))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(m.cache)) {
		if _, ok := fresh[key]; !ok {
			m.notify(key, present(m.cache[key].raw), nil)
		}
	}
	m.cache, m.rev = fresh, rev
	if !m.ready {
		m.ready = true
		close(m.synced)
	}
	m.advance()
	return nil
}

// advance wakes those waiting for the cache to move; the caller holds m.mu.
func (m *Manager) advance() {
	close(m.advanced)
	m.advanced = make(chan struct{})
}

// present marks stored bytes as present: an empty value is not nil, which means absent.
func present(raw []byte) []byte {
	if raw == nil {
		return []byte{}
	}
	return raw
}
