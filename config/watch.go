package config

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// Watch calls fn with the old and new value of every change of key, or of every key under
// a prefix when key ends in "/" ("database/" watches "database/host" and
// "database/port"; "/" alone watches every key of the Manager).
//
// Values are decoded as Get returns them; old is nil for a new key and new is nil for a
// deleted one. A stored value that is not JSON is passed as its raw []byte. Writing the
// same bytes again is not a change.
//
// Watch waits until the cache holds a first list and this Manager's own finished writes
// (or ctx ends), registers fn and returns: changes the cache sees from then on are
// reported. fn is called from a goroutine of the Manager, one
// change at a time in the order of the changes, until ctx ends or the Manager is closed
// (Close waits for it, so fn must not call Close: it would wait for itself; cancel the
// watch's ctx instead). A slow fn delays only its own changes: they queue up for it.
// Changes missed while the watch was broken (reconnect, lost leader) are reported when it
// resumes; if etcd compacted their history meanwhile, from a fresh list, as the difference
// between the old and new value of each key.
func (m *Manager) Watch(ctx context.Context, key string, fn func(key string, old, new any)) error {
	if fn == nil {
		return errors.New("config: watch callback must not be nil")
	}
	sub := &subscription{fn: fn, wake: make(chan struct{}, 1)}
	switch {
	case key == "":
		return errors.New(`config: watched key must not be empty (use "/" for every key)`)
	case key == "/":
		sub.prefix = true
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("config: watched key must not start with \"/\" (it is relative to the manager's prefix), got %q", key)
	default:
		sub.key, sub.prefix = key, strings.HasSuffix(key, "/")
	}
	// The subscription starts once the cache holds the Manager's own finished writes, so
	// that they are not reported as changes that came after Watch.
	if err := m.WaitForSync(ctx); err != nil {
		return err
	}
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return ErrClosed
		}
		if rev := m.src.Revision(); rev >= m.written {
			// The source may have cached changes up to rev that handle has not handed out
			// yet: they came before Watch, and the subscription skips them.
			sub.from = rev
			break // registered below, still holding m.mu: no change falls in between
		}
		written := m.written
		m.mu.Unlock()
		wctx, cancel := etcdutil.Bound(ctx, m.ctx)
		err := m.src.WaitForRevision(wctx, written)
		cancel()
		switch {
		case m.ctx.Err() != nil:
			return ErrClosed
		case err != nil:
			return fmt.Errorf("config: waiting for the cache of %s: %w", m.prefix, ctx.Err())
		}
	}
	m.subs[sub] = struct{}{}
	m.wg.Add(1)
	m.mu.Unlock()

	sctx, cancel := etcdutil.Bound(ctx, m.ctx)
	// The subscriber goroutine belongs to the Manager (m.wg); it stops when the caller's
	// ctx ends or Close cancels m.ctx.
	go func() {
		defer m.wg.Done()
		defer cancel()
		sub.run(sctx)
		m.mu.Lock()
		delete(m.subs, sub)
		m.mu.Unlock()
	}()
	return nil
}

// change is one change of a key at revision rev: its old and new stored bytes, nil when
// absent.
type change struct {
	key      string
	rev      int64
	old, new []byte
}

// subscription is one Watch: the cache pushes matching changes onto its queue, and its
// goroutine hands them to fn in order.
type subscription struct {
	key    string
	prefix bool
	from   int64 // the cache's revision at the start: changes at or before it came earlier
	fn     func(key string, old, new any)

	mu    sync.Mutex
	queue []change
	wake  chan struct{} // holds a token when queue may be non-empty
}

func (s *subscription) matches(key string) bool {
	if s.prefix {
		return strings.HasPrefix(key, s.key)
	}
	return key == s.key
}

func (s *subscription) push(c change) {
	s.mu.Lock()
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, c := range batch {
			if ctx.Err() != nil {
				return
			}
			s.fn(c.key, callbackValue(c.old), callbackValue(c.new))
		}
	}
}

// callbackValue decodes stored bytes for a Watch callback: nil when absent, the raw bytes
// when they are not JSON.
func callbackValue(raw []byte) any {
	if raw == nil {
		return nil
	}
	v, err := decodeValue(raw)
	if err != nil {
		return append([]byte(nil), raw...)
	}
	return v
}

// notify hands a change to every matching subscriber that started before it; the caller
// holds m.mu.
func (m *Manager) notify(c change) {
	for sub := range m.subs {
		if c.rev > sub.from && sub.matches(c.key) {
			sub.push(c)
		}
	}
}
