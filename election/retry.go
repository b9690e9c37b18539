package election

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// transient reports whether an etcd error is worth a retry: etcd is unreachable, has no
// leader or timed out. Errors such as a denied permission are not.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var coded interface{ Code() codes.Code }
	code := codes.Unknown
	if errors.As(err, &coded) {
		code = coded.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted, codes.Internal:
		return true
	}
	return false
}
