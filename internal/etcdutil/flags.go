package etcdutil

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// ConnFlags are etcdctl's connection flags, as the command-line programs of the module
// take them: --endpoints, --cacert, --cert, --key, --user user:password, --dial-timeout.
type ConnFlags struct {
	Endpoints        string
	CACert, Cert     string
	Key, User        string
	DialTimeout      time.Duration
	defaultEndpoints string
}

// Register adds the flags to fs, with endpoints as the default of --endpoints and
// endpointsHelp as its help.
func (c *ConnFlags) Register(fs *flag.FlagSet, endpoints, endpointsHelp string) {
	c.defaultEndpoints = endpoints
	fs.StringVar(&c.Endpoints, "endpoints", endpoints, endpointsHelp)
	fs.StringVar(&c.CACert, "cacert", "", "verify the server's certificate with this CA bundle")
	fs.StringVar(&c.Cert, "cert", "", "identify to etcd with this TLS client certificate")
	fs.StringVar(&c.Key, "key", "", "the TLS client certificate's key")
	fs.StringVar(&c.User, "user", "", "authenticate as user:password")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", 2*time.Second, "how long to wait for etcd to answer when connecting")
}

// Check reports the first flag that cannot work, naming it.
func (c *ConnFlags) Check() error {
	if c.DialTimeout <= 0 {
		return fmt.Errorf("--dial-timeout must be positive, got %s", c.DialTimeout)
	}
	if c.User != "" && !strings.Contains(c.User, ":") {
		// The value is not echoed: it may be a password.
		return errors.New("--user must be given as user:password (the value given has no colon)")
	}
	return nil
}

// Config returns the ConnectConfig the flags describe.
func (c *ConnFlags) Config() ConnectConfig {
	var eps []string
	for _, ep := range strings.Split(c.Endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	cc := ConnectConfig{Endpoints: eps, CACert: c.CACert, Cert: c.Cert, Key: c.Key, DialTimeout: c.DialTimeout}
	if c.User != "" {
		cc.Username, cc.Password, _ = strings.Cut(c.User, ":")
	}
	return cc
}
