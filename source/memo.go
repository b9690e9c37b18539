package source

import (
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Memo keeps one value derived from each cached key-value (its decoding, typically) and
// derives it again only when the key's ModRevision moves: a typed read of a cache decodes
// a key once per revision, not once per read. The zero Memo is ready; it is safe for
// concurrent use. The values it returns are shared by every reader of the same revision,
// so they must be treated as read-only.
type Memo[V any] struct {
	m sync.Map // key -> *memoEntry[V]
	n atomic.Int64
}

type memoEntry[V any] struct {
	modRev int64
	v      V
}

// Get returns the value derived from kv, calling derive only when the memo holds none for
// kv's key at kv's ModRevision. Two readers of a new revision at once may both derive it.
func (m *Memo[V]) Get(kv *mvccpb.KeyValue, derive func(*mvccpb.KeyValue) V) V {
	key := string(kv.Key)
	if e, ok := m.m.Load(key); ok && e.(*memoEntry[V]).modRev == kv.ModRevision {
		return e.(*memoEntry[V]).v
	}
	e := &memoEntry[V]{modRev: kv.ModRevision, v: derive(kv)}
	if _, loaded := m.m.Swap(key, e); !loaded {
		m.n.Add(1)
	}
	return e.v
}

// Forget drops the value of key (a deleted key).
func (m *Memo[V]) Forget(key string) {
	if _, loaded := m.m.LoadAndDelete(key); loaded {
		m.n.Add(-1)
	}
}

// Len is the number of keys the memo holds.
func (m *Memo[V]) Len() int { return int(m.n.Load()) }

// Retain drops the value of every key that keep returns false for: a reader that lists a
// whole prefix forgets the keys that vanished from it.
func (m *Memo[V]) Retain(keep func(key string) bool) {
	m.m.Range(func(k, _ any) bool {
		if !keep(k.(string)) {
			m.Forget(k.(string))
		}
		return true
	})
}
