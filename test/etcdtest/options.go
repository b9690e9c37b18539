package etcdtest

import (
	"fmt"
	"time"
)

// Option configures a cluster started by Start or StartProcesses.
type Option func(*options)

type options struct {
	members     int
	tls         bool
	password    string        // root's password; auth is on when set
	tokenTTL    time.Duration // simple tokens expire after this long unused; etcd's default when 0
	jwt         bool          // JWT tokens instead of simple ones
	jwtTTL      time.Duration // the JWT tokens' TTL
	dir         string        // parent of the data dirs; a temp dir when empty
	tick        time.Duration
	election    time.Duration
	logLevel    string
	startTimout time.Duration
}

// bcryptCost is the members' bcrypt cost for password hashes, bcrypt's minimum rather than
// etcd's default of 10: etcd checks the password on every token request, and a client with
// a user and password asks for a token each time it opens a stream (a watch stream, each
// KeepAliveOnce), which at cost 10 takes about 80 ms of a member's CPU, and seconds under
// the race detector. The hashes protect nothing in a test cluster.
const bcryptCost = 4

func defaultOptions() options {
	return options{
		members:     1,
		logLevel:    "error",
		startTimout: 30 * time.Second,
	}
}

// applyDefaults fills what options left unset. A single member has no peers to hear from,
// so it elects itself after a short timeout and is ready in tens of milliseconds; members of
// a cluster use etcd's own timing.
func (o *options) applyDefaults() {
	if o.tick == 0 && o.election == 0 {
		o.tick, o.election = 100*time.Millisecond, time.Second
		if o.members == 1 {
			o.tick, o.election = 10*time.Millisecond, 100*time.Millisecond
		}
	}
}

func (o options) validate() error {
	if o.members != 1 && o.members != 3 && o.members != 5 {
		return fmt.Errorf("etcdtest: members must be 1, 3 or 5, got %d", o.members)
	}
	if o.tick <= 0 || o.election < 5*o.tick {
		return fmt.Errorf("etcdtest: election timeout must be at least 5 heartbeats, got heartbeat %s, election %s", o.tick, o.election)
	}
	if o.tokenTTL < 0 {
		return fmt.Errorf("etcdtest: the simple token TTL must be positive, got %s", o.tokenTTL)
	}
	if o.jwt && o.jwtTTL <= 0 {
		return fmt.Errorf("etcdtest: the JWT TTL must be positive, got %s", o.jwtTTL)
	}
	if o.tokenTTL > 0 && o.jwt {
		return fmt.Errorf("etcdtest: WithSimpleTokenTTL and WithJWT exclude each other")
	}
	if (o.tokenTTL > 0 || o.jwt) && o.password == "" {
		return fmt.Errorf("etcdtest: WithSimpleTokenTTL and WithJWT need WithAuth: without auth etcd issues no tokens")
	}
	return nil
}

// WithMembers sets the number of members: 1 (default), 3 or 5.
func WithMembers(n int) Option { return func(o *options) { o.members = n } }

// WithTLS serves clients over TLS with certificates generated on the fly and requires client
// certificates signed by the same CA. Cluster.TLSFiles names the files for a client.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithAuth enables etcd authentication with a root user whose password is given.
// Cluster.Client authenticates as root.
func WithAuth(rootPassword string) Option { return func(o *options) { o.password = rootPassword } }

// WithSimpleTokenTTL makes etcd's simple auth tokens (its default kind) expire once they
// have gone unused for d, rounded up to whole seconds (etcd's --auth-token-ttl; 0 keeps its
// default of 300 s). etcd looks for expired tokens once a second, so a token lasts between
// d and d + 1 s after its last use. Every request that carries a token uses it; a gRPC
// stream carries the token it was opened with, and only a watch created on a watch stream
// uses that token again. Needs WithAuth.
func WithSimpleTokenTTL(d time.Duration) Option { return func(o *options) { o.tokenTTL = d } }

// WithJWT makes etcd issue JWT auth tokens instead of simple ones, signed with an ECDSA
// P-256 key pair (ES256) that is made for the cluster and kept in its directory, and valid
// for ttl after they are issued, however much they are used (etcd's
// --auth-token=jwt,pub-key=...,priv-key=...,sign-method=ES256,ttl=...). Needs WithAuth.
func WithJWT(ttl time.Duration) Option { return func(o *options) { o.jwt, o.jwtTTL = true, ttl } }

// WithDir keeps the members' data under dir instead of a new temporary directory. Close
// removes only what the cluster created under it.
func WithDir(dir string) Option { return func(o *options) { o.dir = dir } }

// WithElectionTimeout sets etcd's heartbeat interval and election timeout. Defaults: etcd's
// own 100 ms and 1 s for clusters; 10 ms and 100 ms for a single member, which has no peers
// and so becomes ready sooner. Lower values make etcd leader failover faster in fault tests.
func WithElectionTimeout(heartbeat, election time.Duration) Option {
	return func(o *options) { o.tick, o.election = heartbeat, election }
}

// WithLogLevel sets the members' log level ("debug", "info", "warn", "error"; default
// "error"). Logs go to a file per member in the cluster's directory.
func WithLogLevel(level string) Option { return func(o *options) { o.logLevel = level } }
