package manager

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/lease"
)

// Defaults of Options.
const (
	DefaultLeaseTTL                = 10 * time.Second
	DefaultGracefulShutdownTimeout = 30 * time.Second
	DefaultDialTimeout             = 5 * time.Second
	// MinLeaseTTL is the shortest lease a manager accepts: its session renews every TTL/5,
	// and a shorter lease leaves no room for a slow answer.
	MinLeaseTTL = 2 * time.Second
)

// Options configure a Manager. Every field has a documented default; New rejects values
// that cannot work with an error that names the field.
type Options struct {
	// Client is the etcd client to use. When nil, the manager makes one from Endpoints and
	// the TLS and auth fields, and closes it when Start returns.
	Client *clientv3.Client
	// Endpoints of etcd, used when Client is nil.
	Endpoints []string
	// CACert, Cert and Key are PEM files for TLS, as etcdctl's --cacert, --cert, --key.
	CACert, Cert, Key string
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// DialTimeout bounds New's check that etcd answers. Default 5 s.
	DialTimeout time.Duration

	// Name names the manager (its controllers' shared identity). Required: letters,
	// digits, '-', '_' and '.'.
	Name string
	// ID names this replica among those of the same Name. Default: the host name and a
	// random suffix.
	ID string
	// RootPrefix is where the manager keeps its own keys. Default "/etcdkit/<Name>/". It
	// must start and end with "/".
	RootPrefix string
	// LeaseTTL is the TTL of the replica's session lease (leadership, and the ownership of
	// shards). A replica that stops answering loses it after this long. It must be a whole
	// number of seconds (etcd leases count seconds), at least MinLeaseTTL (2 s). Default
	// (0): DefaultLeaseTTL, 10 s.
	LeaseTTL time.Duration
	// Sharding, when set, spreads the keys of the manager's controllers over its replicas
	// (see ShardingOptions); a controller opts out with Builder.LeaderOnly. Default nil:
	// every controller runs on the leader only. It needs leader election.
	Sharding *ShardingOptions
	// DisableLeaderElection runs leader runnables and controllers on every replica, with no
	// election and no fence. Default false: leader election on.
	DisableLeaderElection bool

	// HealthProbeAddr is where /healthz and /readyz are served, e.g. ":8081" or
	// "127.0.0.1:0" (a free port; see Manager.HealthProbeAddr). /healthz, for a liveness
	// probe, checks the process only; /readyz, for a readiness probe, checks that etcd
	// answers, the session, the controllers' caches and etcd's refusals (see
	// Manager.AddHealthzCheck and Manager.AddReadyzCheck). Default "": not served.
	HealthProbeAddr string
	// AdvertiseAddress is the host:port at which operators and tools (etcdkit status
	// --debug) reach this replica's health probe address and /debug/shards; a sharded
	// replica registers it in its MemberInfo. Default: the bound HealthProbeAddr, with an
	// unspecified host (":8081", "0.0.0.0", "[::]") replaced by the machine's host name.
	AdvertiseAddress string
	// MetricsAddr is where /metrics is served. It may equal HealthProbeAddr: one server
	// then serves all. Default "": not served.
	MetricsAddr string
	// Registry collects the manager's metrics. Default: a new registry of the manager's own.
	Registry *prometheus.Registry

	// GracefulShutdownTimeout bounds the shutdown once Start's context ends: in-flight
	// reconciles that outlive it are cancelled. Default 30 s.
	GracefulShutdownTimeout time.Duration
	// Logger receives the manager's logs. Default: discarded.
	Logger logr.Logger
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// setDefaults validates o and fills what is unset.
func (o *Options) setDefaults() error {
	if o.Name == "" {
		return errors.New("manager: Name must not be empty")
	}
	if !namePattern.MatchString(o.Name) {
		return fmt.Errorf("manager: Name may hold only letters, digits, '-', '_' and '.', got %q", o.Name)
	}
	if o.Client == nil && len(o.Endpoints) == 0 {
		return errors.New("manager: give a Client or Endpoints")
	}
	var err error
	if o.LeaseTTL, _, err = lease.CheckTTL("manager: LeaseTTL", o.LeaseTTL, DefaultLeaseTTL, MinLeaseTTL); err != nil {
		return err
	}
	if o.ID == "" {
		o.ID = etcdutil.DefaultID("replica")
	}
	if !etcdutil.ValidID(o.ID) {
		return fmt.Errorf("manager: ID must not hold '/' or white space, got %q", o.ID)
	}
	if o.RootPrefix == "" {
		o.RootPrefix = "/etcdkit/" + o.Name + "/"
	}
	if !strings.HasPrefix(o.RootPrefix, "/") || !strings.HasSuffix(o.RootPrefix, "/") || o.RootPrefix == "/" {
		return fmt.Errorf("manager: RootPrefix must start and end with '/' and not be the root, got %q", o.RootPrefix)
	}
	if o.GracefulShutdownTimeout < 0 {
		return fmt.Errorf("manager: GracefulShutdownTimeout must not be negative, got %s", o.GracefulShutdownTimeout)
	}
	if o.GracefulShutdownTimeout == 0 {
		o.GracefulShutdownTimeout = DefaultGracefulShutdownTimeout
	}
	if o.DialTimeout < 0 {
		return fmt.Errorf("manager: DialTimeout must not be negative, got %s", o.DialTimeout)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.AdvertiseAddress != "" {
		if _, port, err := net.SplitHostPort(o.AdvertiseAddress); err != nil || port == "" {
			return fmt.Errorf("manager: AdvertiseAddress must be a host:port, got %q", o.AdvertiseAddress)
		}
	}
	if o.Sharding != nil {
		if o.DisableLeaderElection {
			return errors.New("manager: Sharding needs leader election (DisableLeaderElection is set)")
		}
		sh := *o.Sharding
		if err := sh.setDefaults(); err != nil {
			return err
		}
		o.Sharding = &sh
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return nil
}
