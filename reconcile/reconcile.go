package reconcile

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
)

// Request names the key to reconcile.
type Request struct {
	// Key is the full etcd key.
	Key string
}

func (r Request) String() string { return r.Key }

// Result says whether and when to reconcile the key again.
type Result struct {
	// Requeue reconciles the key again after its backoff (per-key exponential, as after an
	// error).
	//
	// Deprecated: use RequeueAfter, which says when to look again, or return an error to
	// retry with backoff, as controller-runtime recommends. Requeue keeps working as before.
	Requeue bool
	// RequeueAfter, when positive, reconciles the key again after this delay; it takes
	// precedence over Requeue.
	RequeueAfter time.Duration
}

// IsZero reports whether the result asks for nothing more.
func (r Result) IsZero() bool { return !r.Requeue && r.RequeueAfter <= 0 }

// Reconciler drives the state of one key towards what is wanted. It must be idempotent:
// it may run several times for one change, and once for several changes.
type Reconciler interface {
	Reconcile(ctx context.Context, req Request) (Result, error)
}

// Func adapts a function to a Reconciler.
type Func func(ctx context.Context, req Request) (Result, error)

// Reconcile calls f.
func (f Func) Reconcile(ctx context.Context, req Request) (Result, error) { return f(ctx, req) }

// terminalError marks an error that retrying cannot fix.
type terminalError struct{ err error }

func (t *terminalError) Error() string {
	if t.err == nil {
		return "terminal error"
	}
	return "terminal error: " + t.err.Error()
}
func (t *terminalError) Unwrap() error { return t.err }

// Is makes every terminal error match errors.Is(err, TerminalError(nil)).
func (t *terminalError) Is(target error) bool {
	_, ok := target.(*terminalError)
	return ok
}

// TerminalError wraps err so that the controller does not retry it: the key is reconciled
// again only when it changes. errors.Is(err, TerminalError(nil)) tells whether an error is
// terminal.
func TerminalError(err error) error {
	return &terminalError{err: err}
}

// IsTerminal reports whether err is, or wraps, a TerminalError.
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}

// LoggerFrom returns the logger of a reconcile's context, with the key and reconcile id;
// a discarding logger outside a reconcile.
func LoggerFrom(ctx context.Context) logr.Logger {
	return logr.FromContextOrDiscard(ctx)
}
