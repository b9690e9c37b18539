package etcderr

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind is what a caller may do about an error.
type Kind int

const (
	// Other errors are none of the kinds below: the caller decides.
	Other Kind = iota
	// Transient errors go away by themselves: send the request again after a backoff.
	Transient
	// Permanent errors stay until an operator changes etcd's roles, users, certificates
	// or the caller's options: report them, never retry them in silence.
	Permanent
	// TokenExpired is an auth token etcd no longer accepts: the client fetches a new one
	// when the request is sent again.
	TokenExpired
)

func (k Kind) String() string {
	switch k {
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	case TokenExpired:
		return "token expired"
	}
	return "other"
}

// permanent are etcd's errors that the same request meets again until someone changes
// etcd's configuration or the caller's options.
var permanent = messages(
	rpctypes.ErrGRPCPermissionDenied,
	rpctypes.ErrGRPCAuthFailed,
	rpctypes.ErrGRPCUserEmpty,
	rpctypes.ErrGRPCUserNotFound,
	rpctypes.ErrGRPCRoleNotFound,
	rpctypes.ErrGRPCRoleNotGranted,
	rpctypes.ErrGRPCPermissionNotGranted,
	rpctypes.ErrGRPCPermissionNotGiven,
	rpctypes.ErrGRPCRootUserNotExist,
	rpctypes.ErrGRPCRootRoleNotExist,
	rpctypes.ErrGRPCInvalidAuthMgmt,
	rpctypes.ErrGRPCRequestTooLarge,
	rpctypes.ErrGRPCTooManyOps,
	rpctypes.ErrGRPCDuplicateKey,
	rpctypes.ErrGRPCEmptyKey,
	rpctypes.ErrGRPCValueProvided,
	rpctypes.ErrGRPCLeaseProvided,
	rpctypes.ErrGRPCInvalidSortOption,
	rpctypes.ErrGRPCInvalidClientAPIVersion,
	rpctypes.ErrGRPCLeaseTTLTooLarge,
	rpctypes.ErrGRPCNoSpace,
	rpctypes.ErrGRPCCorrupt,
	rpctypes.ErrGRPCNotSupportedForLearner,
)

// transient are etcd's errors of a moment: an election, a restart, an overloaded member.
var transient = messages(
	rpctypes.ErrGRPCNoLeader,
	rpctypes.ErrGRPCNotLeader,
	rpctypes.ErrGRPCLeaderChanged,
	rpctypes.ErrGRPCNotCapable,
	rpctypes.ErrGRPCStopped,
	rpctypes.ErrGRPCTimeout,
	rpctypes.ErrGRPCTimeoutDueToLeaderFail,
	rpctypes.ErrGRPCTimeoutDueToConnectionLost,
	rpctypes.ErrGRPCTimeoutWaitAppliedIndex,
	rpctypes.ErrGRPCUnhealthy,
	rpctypes.ErrGRPCRequestTooManyRequests,
	rpctypes.ErrGRPCAuthOldRevision,
	rpctypes.ErrGRPCDeadlineExceeded,
)

// transientServer are messages of etcd's server that reach a client without a typed error
// (gRPC code Unknown or Canceled): a member that stops, or a former leader that resumed
// from a pause and no longer keeps leases.
var transientServer = []string{
	"etcdserver: request cancelled",
	"not a primary lessor",
}

func messages(errs ...error) map[string]bool {
	m := make(map[string]bool, len(errs))
	for _, err := range errs {
		m[rpctypes.ErrorDesc(err)] = true
	}
	return m
}

// Classify says what kind of error err is: the kind of err itself or, when that is Other,
// of the first error it wraps that has a kind. A nil error is Other.
func Classify(err error) Kind {
	if err == nil {
		return Other
	}
	if k := classify(err); k != Other {
		return k
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return Classify(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if k := Classify(e); k != Other {
				return k
			}
		}
	}
	return Other
}

// classify is Classify of err alone, by its message and code.
func classify(err error) Kind {
	desc := rpctypes.ErrorDesc(err)
	switch {
	case permanent[desc]:
		return Permanent
	case transient[desc]:
		return Transient
	case desc == rpctypes.ErrorDesc(rpctypes.ErrGRPCInvalidAuthToken):
		return TokenExpired
	case IsTLS(err):
		return Permanent
	}
	// Wrapped errors and errors of the token request carry etcd's message inside a longer
	// one.
	msg := err.Error()
	for m := range permanent {
		if strings.Contains(msg, m) {
			return Permanent
		}
	}
	if strings.Contains(msg, rpctypes.ErrorDesc(rpctypes.ErrGRPCInvalidAuthToken)) {
		return TokenExpired
	}
	for m := range transient {
		if strings.Contains(msg, m) {
			return Transient
		}
	}
	for _, m := range transientServer {
		if strings.Contains(msg, m) {
			return Transient
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// A request's own deadline (not its caller's: the caller checks its context
		// first) ran out on a member that did not answer in time.
		return Transient
	}
	switch code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted, codes.Internal:
		return Transient
	case codes.PermissionDenied:
		return Permanent
	case codes.Unauthenticated:
		return TokenExpired
	}
	return Other
}

// IsPermanent reports whether err is Permanent.
func IsPermanent(err error) bool { return Classify(err) == Permanent }

// IsTransient reports whether err is Transient.
func IsTransient(err error) bool { return Classify(err) == Transient }

// IsTLS reports whether err is a failed TLS handshake (a certificate one side refused).
// gRPC reports those as Unavailable, which would otherwise read as transient.
func IsTLS(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "authentication handshake failed") ||
		strings.Contains(msg, "x509: ") ||
		strings.Contains(msg, "tls: ")
}

func code(err error) codes.Code {
	var coded interface{ Code() codes.Code }
	if errors.As(err, &coded) {
		return coded.Code()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}
