package deploy_test

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/etcdkit/etcdkit/manager"
)

// The example files, from the repository's root.
const (
	unitPath       = "deploy/systemd/etcdkit-controller.service"
	envPath        = "deploy/systemd/etcdkit-controller.env"
	kubernetesPath = "deploy/kubernetes/deployment.yaml"
)

// shutdownOverrun is how much longer than GracefulShutdownTimeout a manager's Start may take
// to return once its context ends (manager/manager.go): its controllers get 5 s more to
// return after they cancel their last reconciles, then its probe and metrics servers get
// 5 s to close. A supervisor must wait at least GracefulShutdownTimeout + shutdownOverrun
// before it sends SIGKILL.
const shutdownOverrun = 10 * time.Second

// etcdCheckBound is how long the readiness check manager.CheckEtcd waits for etcd
// (manager/probes.go, "etcd answers within 800 ms"): a readiness probe's timeout must be
// longer, or the probe reports a timeout instead of the check's error.
const etcdCheckBound = 800 * time.Millisecond

// setting is one ETCDKIT_* variable of the examples: the manager.Options field it sets, and
// the library's default, which applies when the variable is unset. A program that runs the
// examples reads these variables the same way (see /tmp/readme-deploy.md, "Deploying").
type setting struct {
	name  string // the variable
	field string // the manager.Options field, Sharding.* for the ShardingOptions
	set   func(o *manager.Options, v string) error
	// def is the documented default as written in the files, given the other variables;
	// nil when there is none to write down.
	def func(env map[string]string) string
}

func str(f func(o *manager.Options) *string) func(*manager.Options, string) error {
	return func(o *manager.Options, v string) error { *f(o) = v; return nil }
}

func dur(f func(o *manager.Options) *time.Duration) func(*manager.Options, string) error {
	return func(o *manager.Options, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*f(o) = d
		return nil
	}
}

func constant(v string) func(map[string]string) string {
	return func(map[string]string) string { return v }
}

var settings = []setting{
	{"ETCDKIT_NAME", "Name", str(func(o *manager.Options) *string { return &o.Name }), nil},
	{"ETCDKIT_ID", "ID", str(func(o *manager.Options) *string { return &o.ID }), nil},
	{"ETCDKIT_ENDPOINTS", "Endpoints", func(o *manager.Options, v string) error {
		o.Endpoints = nil
		for _, ep := range strings.Split(v, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				o.Endpoints = append(o.Endpoints, ep)
			}
		}
		return nil
	}, nil},
	{"ETCDKIT_CACERT", "CACert", str(func(o *manager.Options) *string { return &o.CACert }), nil},
	{"ETCDKIT_CERT", "Cert", str(func(o *manager.Options) *string { return &o.Cert }), nil},
	{"ETCDKIT_KEY", "Key", str(func(o *manager.Options) *string { return &o.Key }), nil},
	{"ETCDKIT_USERNAME", "Username", str(func(o *manager.Options) *string { return &o.Username }), nil},
	{"ETCDKIT_PASSWORD", "Password", str(func(o *manager.Options) *string { return &o.Password }), nil},
	{"ETCDKIT_DIAL_TIMEOUT", "DialTimeout", dur(func(o *manager.Options) *time.Duration { return &o.DialTimeout }),
		constant(manager.DefaultDialTimeout.String())},
	{"ETCDKIT_ROOT_PREFIX", "RootPrefix", str(func(o *manager.Options) *string { return &o.RootPrefix }),
		func(env map[string]string) string { return "/etcdkit/" + env["ETCDKIT_NAME"] + "/" }},
	{"ETCDKIT_LEASE_TTL", "LeaseTTL", dur(func(o *manager.Options) *time.Duration { return &o.LeaseTTL }),
		constant(manager.DefaultLeaseTTL.String())},
	{"ETCDKIT_GRACEFUL_SHUTDOWN_TIMEOUT", "GracefulShutdownTimeout",
		dur(func(o *manager.Options) *time.Duration { return &o.GracefulShutdownTimeout }),
		constant(manager.DefaultGracefulShutdownTimeout.String())},
	{"ETCDKIT_HEALTH_PROBE_ADDR", "HealthProbeAddr", str(func(o *manager.Options) *string { return &o.HealthProbeAddr }), nil},
	{"ETCDKIT_METRICS_ADDR", "MetricsAddr", str(func(o *manager.Options) *string { return &o.MetricsAddr }), nil},
	{"ETCDKIT_SHARDS", "Sharding.Shards", func(o *manager.Options, v string) error {
		n, err := strconv.Atoi(v)
		o.Sharding.Shards = n
		return err
	}, constant(strconv.Itoa(manager.DefaultShards))},
	{"ETCDKIT_DRAIN_TIMEOUT", "Sharding.DrainTimeout",
		dur(func(o *manager.Options) *time.Duration { return &o.Sharding.DrainTimeout }),
		constant(manager.DefaultDrainTimeout.String())},
}

func lookup(name string) (setting, bool) {
	for _, s := range settings {
		if s.name == name {
			return s, true
		}
	}
	return setting{}, false
}

func settingNames() string {
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// options reads a file's ETCDKIT_* variables into the Options of a sharded manager, as the
// program that the examples run does. Other variables are ignored; an ETCDKIT_ variable
// that sets no field, or a value that does not parse, is an error naming both.
func options(env map[string]string) (manager.Options, error) {
	o := manager.Options{Sharding: &manager.ShardingOptions{}}
	names := make([]string, 0, len(env))
	for name := range env {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasPrefix(name, "ETCDKIT_") {
			continue
		}
		s, ok := lookup(name)
		if !ok {
			return o, fmt.Errorf("%s sets no manager option (the variables are %s)", name, settingNames())
		}
		if err := s.set(&o, env[name]); err != nil {
			return o, fmt.Errorf("%s=%q (Options.%s): %v", name, env[name], s.field, err)
		}
	}
	return o, nil
}

// gracefulShutdown is the GracefulShutdownTimeout that o gives a manager, and how the
// files say it ("the default" or the variable).
func gracefulShutdown(o manager.Options) (time.Duration, string) {
	if o.GracefulShutdownTimeout == 0 {
		return manager.DefaultGracefulShutdownTimeout, "the default, manager.DefaultGracefulShutdownTimeout"
	}
	return o.GracefulShutdownTimeout, "ETCDKIT_GRACEFUL_SHUTDOWN_TIMEOUT"
}

// documentedLine is a commented-out assignment, "# ETCDKIT_X=value", optionally followed by
// the field it sets, "Options.Field": the files show each default that way.
var documentedLine = regexp.MustCompile(`^\s*#\s*(ETCDKIT_[A-Z0-9_]+)=(\S*)(?:\s+Options\.([A-Za-z.]+))?`)

// documentedDefaults returns the mismatches between what the commented-out assignments of
// text show and the library: a value that is not the default, a field that is not the one
// the variable sets, a variable that sets nothing. env is the file's effective
// environment (a default may depend on another variable).
func documentedDefaults(text string, env map[string]string) []string {
	var problems []string
	for i, line := range strings.Split(text, "\n") {
		m := documentedLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, value, field := m[1], m[2], m[3]
		s, ok := lookup(name)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("line %d: %s sets no manager option (the variables are %s)", i+1, name, settingNames()))
			continue
		case field != "" && field != s.field:
			problems = append(problems, fmt.Sprintf("line %d: %s sets Options.%s, not Options.%s", i+1, name, s.field, field))
		}
		if s.def == nil || value == "" {
			continue
		}
		if want := s.def(env); !sameValue(value, want) {
			problems = append(problems, fmt.Sprintf("line %d: shows %s=%s as the default, but the library's default of Options.%s is %s",
				i+1, name, value, s.field, want))
		}
	}
	return problems
}

// sameValue compares two values of a variable: as durations when both are.
func sameValue(a, b string) bool {
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	if errA == nil && errB == nil {
		return da == db
	}
	return a == b
}

// port is the port of a listen address such as ":8081".
func port(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}
