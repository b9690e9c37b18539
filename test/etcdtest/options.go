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
	password    string // root's password; auth is on when set
	dir         string // parent of the data dirs; a temp dir when empty
	tick        time.Duration
	election    time.Duration
	logLevel    string
	startTimout time.Duration
}

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
