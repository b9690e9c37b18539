// Package etcderr is the one classification of etcd's errors that every etcdkit component
// retries by.
//
// An error is Permanent when the same request will fail again until an operator changes
// something (a denied permission, a wrong password, a missing user or role, a request or
// TTL too large, a certificate etcd or this process refuses), Transient when etcd or the
// way to it is briefly unable to answer (no leader, leader changed, a timeout, a member
// unavailable), TokenExpired when the auth token the request carried is no longer valid
// (the client asks for a new one and the request can be sent again), and Other when it is
// none of these (a compacted revision, a lease that is gone, a context that ended): the
// caller decides.
//
// etcd's errors are told apart by etcd's own message, not by their gRPC code alone:
// several share InvalidArgument or FailedPrecondition, and the errors of the token request
// that the client makes while it dials arrive as plain gRPC statuses.
package etcderr
