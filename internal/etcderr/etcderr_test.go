package etcderr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdkit/etcdkit/internal/etcderr"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want etcderr.Kind
	}{
		{"nil", nil, etcderr.Other},
		{"permission denied (client error)", rpctypes.ErrPermissionDenied, etcderr.Permanent},
		{"permission denied (gRPC status)", rpctypes.ErrGRPCPermissionDenied, etcderr.Permanent},
		{"permission denied, wrapped", fmt.Errorf("source /jobs/: listing: %w", rpctypes.ErrPermissionDenied), etcderr.Permanent},
		{"watch cancelled for permission", status.Error(codes.FailedPrecondition, "etcdserver: permission denied"), etcderr.Permanent},
		// These share InvalidArgument: the message tells them apart.
		{"authentication failed", rpctypes.ErrAuthFailed, etcderr.Permanent},
		{"request too large", rpctypes.ErrRequestTooLarge, etcderr.Permanent},
		{"auth store revision old", rpctypes.ErrAuthOldRevision, etcderr.Transient},
		{"user not found", rpctypes.ErrUserNotFound, etcderr.Permanent},
		{"TTL too large", rpctypes.ErrLeaseTTLTooLarge, etcderr.Permanent},
		{"token request while dialing", errors.New("rpc error: code = InvalidArgument desc = etcdserver: authentication failed, invalid user ID or password"), etcderr.Permanent},
		{"leader changed", rpctypes.ErrLeaderChanged, etcderr.Transient},
		{"timeout after leader failure", rpctypes.ErrTimeoutDueToLeaderFail, etcderr.Transient},
		{"no leader", rpctypes.ErrNoLeader, etcderr.Transient},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), etcderr.Transient},
		{"attempt deadline", fmt.Errorf("keep-alive: %w", context.DeadlineExceeded), etcderr.Transient},
		{"expired token", rpctypes.ErrInvalidAuthToken, etcderr.TokenExpired},
		{"expired token, gRPC status", rpctypes.ErrGRPCInvalidAuthToken, etcderr.TokenExpired},
		{"TLS unknown authority", status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`), etcderr.Permanent},
		{"compacted", rpctypes.ErrCompacted, etcderr.Other},
		{"lease not found", rpctypes.ErrLeaseNotFound, etcderr.Other},
		{"canceled", context.Canceled, etcderr.Other},
		{"a stopping member", status.Error(codes.Canceled, "etcdserver: request cancelled"), etcderr.Transient},
		{"a resumed former leader", status.Error(codes.Unknown, "not a primary lessor"), etcderr.Transient},
		{"wrapped under other words", fmt.Errorf("etcd at h:1: wrong user name or password: %w", rpctypes.ErrAuthFailed), etcderr.Permanent},
		{"joined", errors.Join(errors.New("first"), rpctypes.ErrLeaderChanged), etcderr.Transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := etcderr.Classify(tc.err); got != tc.want {
				t.Fatalf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
