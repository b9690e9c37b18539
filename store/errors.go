package store

import (
	"errors"
	"fmt"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: Create found the key already there.
	ErrExists = errors.New("store: already exists")
	// ErrConflict: the object moved since the caller read it; nothing was written.
	ErrConflict = errors.New("store: conflict")
	// ErrDecode: a stored value does not decode.
	ErrDecode = errors.New("store: value does not decode")
	// ErrOutcomeUnknown: etcd failed to answer a write (a leader change, a timeout) and
	// the key has moved since, so whether the write was applied cannot be told. Read the
	// key again before deciding what to do.
	ErrOutcomeUnknown = errors.New("store: outcome of the write unknown")
	// ErrNotCached: Cached was asked for a key its cache does not hold, whether or not the
	// key exists: a range-sharded replica caches the keys of its own slices only. Read the
	// key with Get.
	ErrNotCached = errors.New("store: key not cached here")
)

// ConflictError is returned when a write's precondition failed. Current is the object as
// it is now (nil when it was deleted).
type ConflictError[T any] struct {
	Key      string
	Expected int64 // the ModRevision the writer expected
	Current  *Object[T]
}

func (e *ConflictError[T]) Error() string {
	now := "deleted"
	if e.Current != nil {
		now = fmt.Sprintf("at mod revision %d", e.Current.ModRevision)
	}
	return fmt.Sprintf("store: conflict on %s: expected mod revision %d, it is %s", e.Key, e.Expected, now)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError[T]) Is(target error) bool { return target == ErrConflict }

// DecodeError names a stored value that does not decode.
type DecodeError struct {
	Key         string
	ModRevision int64
	Err         error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("store: value of %s at mod revision %d does not decode: %v", e.Key, e.ModRevision, e.Err)
}

// Is makes errors.Is(err, ErrDecode) hold.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

// Unwrap returns the codec's error.
func (e *DecodeError) Unwrap() error { return e.Err }
