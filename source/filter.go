package source

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// errRelist ends a watch so that the driver lists again (Relist).
var errRelist = errors.New("source: relist asked")

// keeps reports whether the source caches key (Options.Keep).
func (s *Source) keeps(key string) bool { return s.opts.Keep == nil || s.opts.Keep(key) }

// kept returns the key-values of kvs that the source keeps.
func (s *Source) kept(kvs []*mvccpb.KeyValue) []*mvccpb.KeyValue {
	if s.opts.Keep == nil {
		return kvs
	}
	out := kvs[:0:0]
	for _, kv := range kvs {
		if s.opts.Keep(string(kv.Key)) {
			out = append(out, kv)
		}
	}
	return out
}

// Holds reports whether the source caches key when it exists: key lies in the source's
// prefix or range, and Options.Keep (if set) accepts it. A cached read of a key it does not
// hold says nothing of the key.
func (s *Source) Holds(key string) bool { return s.Contains(key) && s.keeps(key) }

// Relist asks for a new list of the prefix, for the keys Options.Keep has come to accept:
// the running source ends its watch, lists, delivers the keys it did not hold as Puts
// (Initial, as a list's), and watches on from the list's revision. It does not wait; it
// returns a number that WaitForList takes.
func (s *Source) Relist() int64 {
	s.mu.Lock()
	s.asked++
	n := s.asked
	s.mu.Unlock()
	select {
	case s.relist <- struct{}{}:
	default: // one is pending already: it answers this one too
	}
	return n
}

// HasListed reports whether a list has answered the Relist that returned n.
func (s *Source) HasListed(n int64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.listed >= n
}

// WaitForList blocks until a list has answered the Relist that returned n, or ctx ends.
func (s *Source) WaitForList(ctx context.Context, n int64) error {
	for {
		s.mu.RLock()
		listed, moved := s.listed, s.moved
		s.mu.RUnlock()
		if listed >= n {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("source %s: waiting for a list: %w", s.prefix, ctx.Err())
		}
	}
}

// Evict drops from the cache every key that Options.Keep no longer accepts. The keys were
// not deleted: no event is delivered.
func (s *Source) Evict() {
	if s.opts.Keep == nil {
		return
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.cache {
		if !s.opts.Keep(k) {
			delete(s.cache, k)
			s.unindexLocked(k)
		}
	}
}
