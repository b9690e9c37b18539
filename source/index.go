package source

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// IndexFunc returns the values under which a cached key is indexed (none: not indexed),
// for example the parent a child key names. It runs under the source's lock whenever the
// key changes, so it must be quick, must not block and must not call the source; it must
// not modify value.
type IndexFunc func(key string, value []byte) []string

// ErrNoIndex is returned by ByIndex for a name that IndexField did not add.
var ErrNoIndex = errors.New("source: no such index")

// index maps values to the keys indexed under them, and back. Invariant, under the
// source's mu: keys[v] holds k exactly when values[k] holds v, and values[k] is fn of the
// cached state of k (empty for a key not cached).
type index struct {
	fn     IndexFunc
	keys   map[string]map[string]struct{} // value -> keys
	values map[string][]string            // key -> values
}

// IndexField adds an index of the cache named name: ByIndex(name, v) returns the cached
// keys for which fn returns v, without a scan (controller-runtime's IndexField). The
// source keeps it up to date with every change of the cache: puts, deletes and relists.
// An index added after the source has listed indexes the keys cached already. A name is
// added once; an empty name, a nil fn and a name added before are errors.
func (s *Source) IndexField(name string, fn IndexFunc) error {
	if name == "" {
		return fmt.Errorf("source %s: IndexField: the index name must not be empty", s.prefix)
	}
	if fn == nil {
		return fmt.Errorf("source %s: IndexField(%q): the index function must not be nil", s.prefix, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.indexes[name]; ok {
		return fmt.Errorf("source %s: IndexField(%q): an index of that name exists already", s.prefix, name)
	}
	if s.indexes == nil {
		s.indexes = map[string]*index{}
	}
	ix := &index{fn: fn, keys: map[string]map[string]struct{}{}, values: map[string][]string{}}
	for _, kv := range s.cache {
		ix.put(kv)
	}
	s.indexes[name] = ix
	return nil
}

// ByIndex returns the cached keys that the index name maps to value, sorted by key. The
// returned values must not be modified. A name that IndexField did not add is ErrNoIndex.
func (s *Source) ByIndex(name, value string) ([]*mvccpb.KeyValue, error) {
	s.mu.RLock()
	ix, ok := s.indexes[name]
	if !ok {
		s.mu.RUnlock()
		return nil, fmt.Errorf("%w %q on the source of %s", ErrNoIndex, name, s.prefix)
	}
	keys := ix.keys[value]
	out := make([]*mvccpb.KeyValue, 0, len(keys))
	for k := range keys {
		out = append(out, s.cache[k])
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Key, b.Key) })
	return out, nil
}

// indexLocked indexes the new state of a key in every index; the caller holds mu.
func (s *Source) indexLocked(kv *mvccpb.KeyValue) {
	for _, ix := range s.indexes {
		ix.put(kv)
	}
}

// unindexLocked removes a deleted key from every index; the caller holds mu.
func (s *Source) unindexLocked(key string) {
	for _, ix := range s.indexes {
		ix.remove(key)
	}
}

// reindexLocked rebuilds every index from the cache after a list; the caller holds mu.
func (s *Source) reindexLocked() {
	for _, ix := range s.indexes {
		clear(ix.keys)
		clear(ix.values)
		for _, kv := range s.cache {
			ix.put(kv)
		}
	}
}

func (ix *index) put(kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	ix.remove(key)
	vals := ix.fn(key, kv.Value)
	if len(vals) == 0 {
		return
	}
	vals = slices.Clone(vals)
	for _, v := range vals {
		set := ix.keys[v]
		if set == nil {
			set = map[string]struct{}{}
			ix.keys[v] = set
		}
		set[key] = struct{}{}
	}
	ix.values[key] = vals
}

func (ix *index) remove(key string) {
	for _, v := range ix.values[key] {
		set := ix.keys[v]
		delete(set, key)
		if len(set) == 0 {
			delete(ix.keys, v)
		}
	}
	delete(ix.values, key)
}
