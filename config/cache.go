package config

import (
	"bytes"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/source"
)

// run keeps the cache: the source lists the prefix, watches it, resumes a broken watch and
// relists after a compaction, calling handle for every change. It returns when Close
// cancels m.ctx or the client is closed.
func (m *Manager) run() {
	defer m.wg.Done()
	ctx, cancel := etcdutil.Bound(m.ctx, m.client.Ctx())
	defer cancel()
	err := m.src.Run(ctx, m.handle)
	switch {
	case m.ctx.Err() != nil: // closed
	case m.client.Ctx().Err() != nil:
		m.log.Info("etcd client closed; the configuration cache stops", "prefix", m.prefix)
	default:
		m.log.Error(err, "the configuration cache stopped", "prefix", m.prefix)
	}
}

// handle is the source's handler: it runs on the source's goroutine once the source's cache
// holds e and its Revision includes e. It hands the change to the subscribers and wakes
// those waiting for the cache to move. A rewrite of the same bytes is not a change for the
// subscribers.
func (m *Manager) handle(e source.Event) {
	if e.Initial {
		// A list's event: the first list's, or a relist's because etcd compacted the
		// history the watch needed (the source counts those).
		if n := m.src.Stats().Relists; n > m.relists {
			m.relists = n
			m.log.Info("configuration watch broken: history compacted; reporting the changes from a fresh list",
				"prefix", m.prefix, "revision", m.src.Revision())
		}
	}
	if e.Type == source.Delete {
		m.decoded.Forget(e.Key)
	}
	var old, new []byte
	if e.PrevKV != nil {
		old = present(e.PrevKV.Value)
	}
	if e.Type == source.Put {
		new = present(e.KV.Value)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case old == nil && new == nil: // the delete of a key never seen
	case old != nil && new != nil && bytes.Equal(old, new): // the same bytes again
	default:
		m.notify(change{key: e.Key[len(m.prefix):], rev: e.KV.ModRevision, old: old, new: new})
	}
}

// present marks stored bytes as present: an empty value is not nil, which means absent.
func present(raw []byte) []byte {
	if raw == nil {
		return []byte{}
	}
	return raw
}
