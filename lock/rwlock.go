package lock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/lease"
)

// RWLock is a distributed read-write lock on one etcd key. Readers in any number of
// processes hold it together; a writer holds it alone. The queue is fair, in the order the
// calls reached etcd: a reader waits only for the writers that asked before it, a writer for
// everyone that asked before it. So a waiting writer is not starved by a stream of readers:
// a reader that comes after it waits until it is done.
//
// Within a process an RWLock behaves like a sync.RWMutex: any number of goroutines may hold
// read locks, each RLock is one entry in etcd's queue, RUnlock releases one of them, and
// the write side (Lock, TryLock, Unlock, Token, Guard, Lost) is a Lock on the same key and
// session. As with sync.RWMutex, a goroutine that holds a read lock and asks for the write
// lock waits for itself (until its context ends). Its methods are safe for concurrent use.
//
// The write side and Lock interoperate: a Lock (or etcd's concurrency.Mutex, or `etcdctl
// lock`) on the same key is a writer of this RWLock.
type RWLock struct {
	w   *Lock         // the write side, and the session and Close machinery of the whole
	seq atomic.Uint64 // numbers this value's read entries, which must have distinct keys

	mu      sync.Mutex
	readers []*held // read holds of this value; RUnlock releases any one. Guarded by mu.
}

// NewRW returns a read-write lock on key, configured by opts as New's lock is. Like New it
// does not talk to etcd until the first call.
func NewRW(client *clientv3.Client, key string, opts Options) (*RWLock, error) {
	if client == nil {
		return nil, errors.New("lock: client must not be nil")
	}
	if key == "" {
		return nil, errors.New("lock: key must not be empty")
	}
	ttl, err := opts.ttlSeconds()
	if err != nil {
		return nil, err
	}
	log := opts.Logger.WithValues("rwlock", key)
	return &RWLock{w: newLock(client, key, newSessions(client, ttl, log), true, log)}, nil
}

// Key returns the lock's key.
func (rw *RWLock) Key() string { return rw.w.Key() }

// RLock blocks until a read lock is held: when no writer that asked earlier holds or waits
// for the lock. It fails when ctx ends, the lock is closed, or the session expires while
// waiting (ErrSessionExpired); nothing of the attempt then stays in etcd. Like Lock, it
// retries etcd's transient errors within ctx.
func (rw *RWLock) RLock(ctx context.Context) error {
	_, err := rw.rlock(ctx, false)
	return err
}

// TryRLock takes a read lock if no writer holds or waits for the lock, and reports whether
// it did. It does not wait.
func (rw *RWLock) TryRLock(ctx context.Context) (bool, error) {
	return rw.rlock(ctx, true)
}

func (rw *RWLock) rlock(ctx context.Context, try bool) (bool, error) {
	ctx, end, err := rw.w.begin(ctx)
	if err != nil {
		return false, err
	}
	defer end()
	n := rw.seq.Add(1)
	name := func(s *lease.Session) string { return sharedEntry(rw.w.q.key, s.ID(), n) }
	h, ok, err := acquireRetrying(ctx, rw.w.q, rw.w.sessions, name, true, try)
	if err != nil || !ok {
		return false, err
	}
	rw.mu.Lock()
	rw.readers = append(rw.readers, h)
	rw.mu.Unlock()
	rw.w.q.log.V(1).Info("read lock acquired", "entry", h.key)
	return true, nil
}

// RUnlock releases one read lock held through this RWLock. It returns ErrNotLocked when
// none is held and ErrLost when the read lock had been lost before (its session expired);
// like Unlock, it releases even when ctx has already ended, retries etcd's transient
// errors, and wraps ErrOutcomeUnknown when etcd answered none of its attempts.
func (rw *RWLock) RUnlock(ctx context.Context) error {
	rw.mu.Lock()
	var h *held
	if n := len(rw.readers); n > 0 {
		h = rw.readers[n-1]
		rw.readers = rw.readers[:n-1]
	}
	rw.mu.Unlock()
	if h == nil {
		return ErrNotLocked
	}
	lost, err := rw.w.q.release(ctx, h)
	switch {
	case err != nil:
		return err
	case lost:
		rw.w.q.log.Info("read lock was lost before RUnlock", "entry", h.key)
		return ErrLost
	}
	return nil
}

// Lock blocks until the write lock is held: when every reader and writer that asked
// earlier is gone. See Lock.Lock.
func (rw *RWLock) Lock(ctx context.Context) error { return rw.w.Lock(ctx) }

// TryLock takes the write lock if nobody holds or waits for the lock, and reports whether
// it did. It does not wait.
func (rw *RWLock) TryLock(ctx context.Context) (bool, error) { return rw.w.TryLock(ctx) }

// Unlock releases the write lock. See Lock.Unlock.
func (rw *RWLock) Unlock(ctx context.Context) error { return rw.w.Unlock(ctx) }

// Token returns the fencing token of the write lock (0 when it is not held). See Lock.Token.
func (rw *RWLock) Token() int64 { return rw.w.Token() }

// Guard returns the comparison that holds exactly while the write lock is held. See
// Lock.Guard.
func (rw *RWLock) Guard() clientv3.Cmp { return rw.w.Guard() }

// Lost returns a channel closed when the current write hold ends. See Lock.Lost.
func (rw *RWLock) Lost() <-chan struct{} { return rw.w.Lost() }

// Close releases every read lock and the write lock held through this RWLock, makes calls
// in progress return ErrClosed, and revokes the session. Close may be called more than once.
func (rw *RWLock) Close() error {
	if !rw.w.shutdown() {
		return nil
	}
	rw.mu.Lock()
	readers := rw.readers
	rw.readers = nil
	rw.mu.Unlock()
	var err error
	for _, h := range readers {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		_, rerr := rw.w.q.release(ctx, h)
		cancel()
		err = errors.Join(err, rerr)
	}
	err = errors.Join(err, rw.w.releaseHeld())
	return errors.Join(err, rw.w.sessions.close())
}
