package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrDeleting: the object is being deleted (its deletion was requested while it had
// finalizers), so no finalizer may be added to it.
var ErrDeleting = errors.New("store: object is being deleted")

// Lifecycle is what an object type embeds to take part in the finalizer protocol:
//
//	type ReplicaSet struct {
//		store.Lifecycle
//		Replicas int `json:"replicas"`
//	}
//
// Its fields are stored with the object, so the codec must store them: JSON (the default
// for struct types) does, with the embedded fields at the top level of the object. The
// String and Bytes codecs hold no fields: a Store[string] or Store[[]byte] has no
// finalizers, and its Delete deletes at once.
//
// An object with finalizers is not deleted by Store.Delete: the delete marks it
// (DeletionRequested) and the controllers that put the finalizers there see the change,
// do their cleanup, and each removes its own finalizer (RemoveFinalizer, fenced by the
// reconcile's context); the write that removes the last one deletes the key. Every step
// is one transaction on the object's revision, so that nothing is lost when every replica
// is down at the time of the delete or is killed in the middle of a cleanup: the mark
// and the finalizers wait in etcd for the next reconcile. A delete that bypasses the
// store (etcdctl del, a lease expiry) removes the key and its finalizers with it: the
// reconciler then gets only the key's tombstone, when a replica saw the delete
// (reconcile.TombstoneFrom).
type Lifecycle struct {
	// Finalizers name the cleanups that must end before the object goes.
	Finalizers []string `json:"finalizers,omitempty"`
	// DeletionRequested is when a Delete found finalizers and marked the object instead of
	// deleting it; nil while the object is not being deleted. Writes keep it: Mutate,
	// AddFinalizer and RemoveFinalizer carry it over, and Update stores the value given,
	// which must keep what was read.
	DeletionRequested *time.Time `json:"deletionRequested,omitempty"`
}

// lifecycle gives the store access to the embedded Lifecycle of an object.
func (l *Lifecycle) lifecycle() *Lifecycle { return l }

// Deleting reports whether the object's deletion was requested.
func (l *Lifecycle) Deleting() bool { return l.DeletionRequested != nil }

// HasFinalizer reports whether name is among the object's finalizers.
func (l *Lifecycle) HasFinalizer(name string) bool { return slices.Contains(l.Finalizers, name) }

// finalizable is implemented by the pointers of types that embed Lifecycle.
type finalizable interface{ lifecycle() *Lifecycle }

// lifecycleOf returns the Lifecycle of value, nil when its type has none.
func lifecycleOf[T any](value *T) *Lifecycle {
	if f, ok := any(value).(finalizable); ok {
		return f.lifecycle()
	}
	return nil
}

// Finalizable reports whether the store's type embeds Lifecycle, so that Delete honours
// finalizers.
func (s *Store[T]) Finalizable() bool {
	var zero T
	return lifecycleOf(&zero) != nil
}

// AddFinalizer adds name to the finalizers of the object at key (nothing is written when
// it is there already). It fails with ErrDeleting once the object's deletion was
// requested, and with an error naming the type when T does not embed Lifecycle.
func (s *Store[T]) AddFinalizer(ctx context.Context, key, name string) (*Object[T], error) {
	if err := s.checkFinalizer(name); err != nil {
		return nil, err
	}
	return s.Mutate(ctx, key, func(v *T) error {
		lc := lifecycleOf(v)
		if lc.HasFinalizer(name) {
			return nil
		}
		if lc.Deleting() {
			return fmt.Errorf("%w: %s: finalizer %q cannot be added", ErrDeleting, key, name)
		}
		lc.Finalizers = append(lc.Finalizers, name)
		return nil
	})
}

// RemoveFinalizer removes name from the finalizers of the object at key; when the object
// is being deleted and name was the last, the same transaction deletes the key. Removing
// a finalizer that is not there, of a key that is gone, succeeds. Call it once the cleanup
// that name stands for is done, with the reconcile's context so that its fence holds.
func (s *Store[T]) RemoveFinalizer(ctx context.Context, key, name string) error {
	if err := s.checkFinalizer(name); err != nil {
		return err
	}
	_, err := s.Mutate(ctx, key, func(v *T) error {
		lc := lifecycleOf(v)
		lc.Finalizers = slices.DeleteFunc(lc.Finalizers, func(f string) bool { return f == name })
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func (s *Store[T]) checkFinalizer(name string) error {
	if !s.Finalizable() {
		var zero T
		return fmt.Errorf("store: %T has no finalizers: embed store.Lifecycle in it", zero)
	}
	if name == "" {
		return errors.New("store: finalizer name must not be empty")
	}
	return nil
}

// deleteOrMark is Delete for a type with finalizers: a key without finalizers is deleted,
// one with finalizers is marked (once), each a transaction on the revision read, retried
// on conflict when modRevision is 0.
func (s *Store[T]) deleteOrMark(ctx context.Context, key string, modRevision int64) error {
	return s.onConflict(ctx, key, modRevision == 0, func() error {
		resp, err := s.read(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			if modRevision > 0 {
				return &ConflictError[T]{Key: key, Expected: modRevision}
			}
			return nil
		}
		kv := resp.Kvs[0]
		cur, err := s.decode(kv)
		if err != nil {
			return fmt.Errorf("store: Delete of %s cannot tell its finalizers: %w", key, err)
		}
		if modRevision > 0 && kv.ModRevision != modRevision {
			return &ConflictError[T]{Key: key, Expected: modRevision, Current: cur}
		}
		lc := lifecycleOf(&cur.Value)
		if len(lc.Finalizers) == 0 {
			return s.deleteAt(ctx, key, kv.ModRevision)
		}
		if lc.Deleting() {
			return nil
		}
		now := time.Now().UTC().Truncate(time.Second)
		lc.DeletionRequested = &now
		_, err = s.write(ctx, key, &cur.Value, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision), kv.ModRevision)
		return err
	})
}

// deleteAt deletes key if its ModRevision is still modRevision (anything, when 0).
func (s *Store[T]) deleteAt(ctx context.Context, key string, modRevision int64) error {
	var conds []clientv3.Cmp
	if modRevision > 0 {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(key), "=", modRevision))
	}
	_, _, err := s.commit(ctx, key, conds, []clientv3.Op{clientv3.OpDelete(key)}, modRevision, written{deleted: true, expected: modRevision})
	return err
}

// onConflict runs op, and again with backoff (5 ms doubling, up to MutateAttempts) while it
// returns ErrConflict and retry is true.
func (s *Store[T]) onConflict(ctx context.Context, key string, retry bool, op func() error) error {
	backoff := DefaultMutateMinBackoff
	var last error
	for attempt := 0; attempt < s.opts.MutateAttempts; attempt++ {
		err := op()
		if !retry || !errors.Is(err, ErrConflict) {
			return err
		}
		last = err
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, DefaultMutateMaxBackoff)
	}
	return fmt.Errorf("store: %s gave up after %d conflicts: %w", key, s.opts.MutateAttempts, last)
}
