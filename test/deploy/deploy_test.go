package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }

// read reads a file named from the repository's root.
func read(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(file)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSystemdUnit checks deploy/systemd: the unit's restart, stop signal and stop timeout
// against the manager's shutdown, the replica ID, and the environment file's settings and
// documented defaults against the library's; manager.New must accept the options they make.
func TestSystemdUnit(t *testing.T) {
	u, err := parseUnit(read(t, unitPath))
	if err != nil {
		t.Fatalf("%s: %v", unitPath, err)
	}
	envText := read(t, envPath)
	envFile, err := parseEnvFile(envText)
	if err != nil {
		t.Fatalf("%s: %v", envPath, err)
	}
	env := systemdEnv(u, envFile)
	o, err := options(env)
	if err != nil {
		t.Fatalf("%s with %s: %v", unitPath, envPath, err)
	}
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: "+format, append([]any{unitPath}, args...)...)
	}

	if _, ok := u.last("Service", "ExecStart"); !ok {
		errorf("[Service] has no ExecStart=")
	}
	if r, _ := u.last("Service", "Restart"); r != "on-failure" && r != "always" {
		errorf("Restart=%s: a replica that crashes or fails to start (etcd not answering New's check) must be started again; use Restart=on-failure", r)
	}

	// The stop: SIGTERM, then a wait longer than the manager's graceful shutdown.
	if sig, ok := u.last("Service", "KillSignal"); !ok || !slices.Contains([]string{"SIGTERM", "TERM", "SIGINT", "INT"}, sig) {
		errorf("KillSignal=%s: manager.SetupSignalHandler starts the graceful shutdown on SIGTERM (or SIGINT); say KillSignal=SIGTERM", sig)
	}
	if mode, _ := u.last("Service", "KillMode"); mode == "none" {
		errorf("KillMode=none: systemd would not signal the manager at all")
	}
	if send, _ := u.last("Service", "SendSIGKILL"); send == "no" {
		errorf("SendSIGKILL=no: a replica hung in its shutdown would never be stopped")
	}
	gst, gstFrom := gracefulShutdown(o)
	stop, ok := u.last("Service", "TimeoutStopSec")
	if !ok {
		stop, ok = u.last("Service", "TimeoutSec")
	}
	if !ok {
		errorf("no TimeoutStopSec=: systemd's default (DefaultTimeoutStopSec, 90 s unless the host changed it) is not tied to the manager's; set it above %s (%s) + %s", gst, gstFrom, shutdownOverrun)
	} else if d, err := timeSpan(stop); err != nil {
		errorf("TimeoutStopSec=%s: %v; a replica hung in its shutdown must be killed after a bound above %s + %s", stop, err, gst, shutdownOverrun)
	} else if d <= gst+shutdownOverrun {
		errorf("TimeoutStopSec=%s (%s) is not above GracefulShutdownTimeout %s (%s) + %s that the manager may take after it: systemd would SIGKILL a replica before it hands its shards over and revokes its lease",
			stop, d, gst, gstFrom, shutdownOverrun)
	}

	// The replica ID: unique per host, so never from the file that every host shares.
	if id, ok := envFile["ETCDKIT_ID"]; ok {
		t.Errorf("%s sets ETCDKIT_ID=%s: the same file on every host would give every replica that ID (manager.ErrDuplicateID); leave it to the unit's Environment=ETCDKIT_ID=%%H", envPath, id)
	}
	idFromUnit := false
	for _, v := range u["Service"]["Environment"] {
		for _, a := range splitAssignments(v) {
			if value, ok := strings.CutPrefix(a, "ETCDKIT_ID="); ok {
				idFromUnit = hasHostSpecifier(value)
			}
		}
	}
	if !idFromUnit {
		errorf("no Environment=ETCDKIT_ID=%%H (or another host specifier: %%l, %%m, %%b): without it the manager's default ID is the host name and a random suffix, new at every restart, so a restarted replica's shards wait for its old lease to expire instead of being taken back at once")
	}

	// The environment file is the one the unit reads.
	files := u["Service"]["EnvironmentFile"]
	if !slices.ContainsFunc(files, func(f string) bool { return envFileName(f) == path.Base(envPath) }) {
		errorf("EnvironmentFile=%v does not name %s, the example beside it", files, path.Base(envPath))
	}
	for _, p := range documentedDefaults(envText, env) {
		t.Errorf("%s: %s", envPath, p)
	}
	for _, p := range connectionProblems(o) {
		t.Errorf("%s: %s", envPath, p)
	}
	for _, name := range []string{"ETCDKIT_NAME", "ETCDKIT_ENDPOINTS"} {
		if env[name] == "" {
			t.Errorf("%s does not set %s (Options.%s), which the manager needs", envPath, name, mustLookup(name).field)
		}
	}

	// What the files make, manager.New must accept, and Start must serve.
	s := startManager(t, envPath, o)
	if o.MetricsAddr != "" {
		s.checkMetrics(t, envPath+": ETCDKIT_METRICS_ADDR", "/metrics")
	}
}

// TestKubernetesManifests checks deploy/kubernetes/deployment.yaml: the Deployment's
// termination grace against the manager's shutdown, the ID from the pod name, the probes'
// and metrics' ports against the addresses the container's environment gives the manager,
// and their paths against what a manager started with those options serves; the TLS
// files against the mounted secret; the PodDisruptionBudget and the metrics Service
// against the pods; the documented defaults against the library's.
func TestKubernetesManifests(t *testing.T) {
	text := read(t, kubernetesPath)
	m, err := parseManifests(text)
	if err != nil {
		t.Fatalf("%s: %v", kubernetesPath, err)
	}
	if len(m.deployments) != 1 {
		t.Fatalf("%s: want one Deployment, found %d", kubernetesPath, len(m.deployments))
	}
	d := m.deployments[0]
	where := fmt.Sprintf("%s: Deployment %s", kubernetesPath, d.Metadata.Name)
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: "+format, append([]any{where}, args...)...)
	}
	pod := d.Spec.Template
	i := slices.IndexFunc(pod.Spec.Containers, func(c container) bool {
		return slices.ContainsFunc(c.Env, func(e envVar) bool { return e.Name == "ETCDKIT_NAME" })
	})
	if i < 0 {
		t.Fatalf("%s: no container sets ETCDKIT_NAME (Options.Name)", where)
	}
	c := pod.Spec.Containers[i]
	env, idFrom := podEnv(c, d.Metadata.Name+"-7c9d8f6b5-x2kqp")
	o, err := options(env)
	if err != nil {
		t.Fatalf("%s: container %s: %v", where, c.Name, err)
	}

	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		errorf("replicas %v: a sharded manager spreads its shards over several replicas, and one takes over when another stops; run at least 2 (3 in the example)", deref(d.Spec.Replicas))
	}
	if !selects(d.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		errorf("selector %v does not select the template's labels %v", d.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	if idFrom != "fieldRef metadata.name" {
		errorf("ETCDKIT_ID (Options.ID) comes from %s; take it from the pod name (valueFrom.fieldRef.fieldPath: metadata.name), which is unique among the replicas", orNothing(idFrom))
	}

	gst, gstFrom := gracefulShutdown(o)
	grace := 30 * time.Second // Kubernetes' default
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= gst+shutdownOverrun {
		errorf("terminationGracePeriodSeconds %v (%s) is not above GracefulShutdownTimeout %s (%s) + %s that the manager may take after it: the kubelet would SIGKILL a replica before it hands its shards over and revokes its lease",
			deref(pod.Spec.TerminationGracePeriodSeconds), grace, gst, gstFrom, shutdownOverrun)
	}
	for _, p := range documentedDefaults(text, env) {
		t.Errorf("%s: %s", kubernetesPath, p)
	}
	for _, p := range connectionProblems(o) {
		errorf("%s", p)
	}
	for _, p := range tlsMountProblems(c, pod.Spec.Volumes, o) {
		errorf("%s", p)
	}

	// Probes: on the port of Options.HealthProbeAddr, plain HTTP.
	healthPort, err := port(o.HealthProbeAddr)
	if err != nil {
		t.Fatalf("%s: ETCDKIT_HEALTH_PROBE_ADDR=%q (Options.HealthProbeAddr): %v; the probes need it", where, o.HealthProbeAddr, err)
	}
	for _, p := range []struct {
		kind  string
		probe *probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			errorf("container %s has no %s.httpGet", c.Name, p.kind)
			continue
		}
		g := p.probe.HTTPGet
		if g.Scheme != "" && g.Scheme != "HTTP" {
			errorf("%s.httpGet.scheme %s: the manager serves its probes over plain HTTP", p.kind, g.Scheme)
		}
		if cp, err := containerPort(c, g.Port); err != nil {
			errorf("%s.httpGet: %v", p.kind, err)
		} else if cp != healthPort {
			errorf("%s.httpGet.port %s is %d, but the manager serves its probes on %d (ETCDKIT_HEALTH_PROBE_ADDR=%s, Options.HealthProbeAddr)",
				p.kind, g.Port.text(), cp, healthPort, o.HealthProbeAddr)
		}
	}
	if p := c.ReadinessProbe; p != nil && p.TimeoutSeconds != nil && time.Duration(*p.TimeoutSeconds)*time.Second <= etcdCheckBound {
		errorf("readinessProbe.timeoutSeconds %d is not above the %s that the readiness check %q waits for etcd: the probe would time out instead of saying why", *p.TimeoutSeconds, etcdCheckBound, manager.CheckEtcd)
	}

	// Metrics: the annotations, a container port and the Service agree with
	// Options.MetricsAddr.
	metricsPort, err := port(o.MetricsAddr)
	if err != nil {
		t.Fatalf("%s: ETCDKIT_METRICS_ADDR=%q (Options.MetricsAddr): %v", where, o.MetricsAddr, err)
	}
	if !slices.ContainsFunc(c.Ports, func(p portSpec) bool { return p.ContainerPort == metricsPort }) {
		errorf("container %s does not expose port %d, where the manager serves /metrics (ETCDKIT_METRICS_ADDR=%s)", c.Name, metricsPort, o.MetricsAddr)
	}
	ann := pod.Metadata.Annotations
	if ann["prometheus.io/scrape"] == "true" && ann["prometheus.io/port"] != fmt.Sprint(metricsPort) {
		errorf("template annotation prometheus.io/port %q is not %d, where the manager serves /metrics (ETCDKIT_METRICS_ADDR=%s)", ann["prometheus.io/port"], metricsPort, o.MetricsAddr)
	}
	metricsPath := "/metrics" // Prometheus' default
	if p := ann["prometheus.io/path"]; p != "" {
		metricsPath = p
	}
	for _, s := range m.services {
		swhere := fmt.Sprintf("%s: Service %s", kubernetesPath, s.Metadata.Name)
		if !selects(s.Spec.Selector, pod.Metadata.Labels) {
			t.Errorf("%s: selector %v does not select the Deployment's pods (labels %v)", swhere, s.Spec.Selector, pod.Metadata.Labels)
		}
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target.String == "" && target.Int == 0 {
				target.Int = sp.Port // Kubernetes' default
			}
			cp, err := containerPort(c, target)
			if err != nil {
				t.Errorf("%s: port %s: targetPort: %v", swhere, sp.Name, err)
			} else if cp != metricsPort && cp != healthPort {
				t.Errorf("%s: port %s targets %d, where the manager serves nothing (metrics %d, probes %d)", swhere, sp.Name, cp, metricsPort, healthPort)
			}
		}
	}

	// The PodDisruptionBudget: at least one replica may go at a time, never all.
	if len(m.pdbs) == 0 {
		t.Errorf("%s: no PodDisruptionBudget: a node drain could stop every replica at once", kubernetesPath)
	}
	for _, p := range m.pdbs {
		replicas := 1 // Kubernetes' default
		if d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		}
		for _, problem := range pdbProblems(p, replicas, pod.Metadata.Labels) {
			t.Errorf("%s: PodDisruptionBudget %s: %s", kubernetesPath, p.Metadata.Name, problem)
		}
	}

	// The paths, against what a manager started with these options serves.
	s := startManager(t, where, o)
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil {
		s.checkLiveness(t, where+": livenessProbe", c.LivenessProbe.HTTPGet.Path)
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil {
		s.checkReadiness(t, where+": readinessProbe", c.ReadinessProbe.HTTPGet.Path)
	}
	s.checkMetrics(t, where+": prometheus.io/path", metricsPath)
}

// connectionProblems checks the etcd connection settings: a client certificate comes with
// its key, and TLS files go with https:// endpoints (the client refuses http:// then).
func connectionProblems(o manager.Options) []string {
	var problems []string
	if (o.Cert == "") != (o.Key == "") {
		problems = append(problems, fmt.Sprintf("ETCDKIT_CERT=%q and ETCDKIT_KEY=%q: a client certificate needs both (Options.Cert, Options.Key)", o.Cert, o.Key))
	}
	if o.CACert != "" || o.Cert != "" {
		for _, ep := range o.Endpoints {
			if !strings.HasPrefix(ep, "https://") {
				problems = append(problems, fmt.Sprintf("endpoint %s is not https:// while TLS files are set (ETCDKIT_CACERT, ETCDKIT_CERT)", ep))
			}
		}
	}
	return problems
}

// tlsMountProblems checks that the TLS files the options name are in a secret mounted
// read-only into the container.
func tlsMountProblems(c container, volumes []volume, o manager.Options) []string {
	var problems []string
	for _, f := range []struct{ name, file string }{{"ETCDKIT_CACERT", o.CACert}, {"ETCDKIT_CERT", o.Cert}, {"ETCDKIT_KEY", o.Key}} {
		if f.file == "" {
			continue
		}
		i := slices.IndexFunc(c.VolumeMounts, func(m volumeMount) bool {
			return strings.HasPrefix(f.file, strings.TrimSuffix(m.MountPath, "/")+"/")
		})
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s=%s is under no volumeMount of container %s", f.name, f.file, c.Name))
			continue
		}
		vm := c.VolumeMounts[i]
		if !vm.ReadOnly {
			problems = append(problems, fmt.Sprintf("volumeMount %s (%s) holds %s: mount it readOnly", vm.Name, vm.MountPath, f.name))
		}
		j := slices.IndexFunc(volumes, func(v volume) bool { return v.Name == vm.Name })
		if j < 0 || volumes[j].Secret == nil {
			problems = append(problems, fmt.Sprintf("volumeMount %s, which holds %s, is not a secret volume of the pod", vm.Name, f.name))
			continue
		}
		rel := strings.TrimPrefix(f.file, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if items := volumes[j].Secret.Items; len(items) > 0 && !slices.ContainsFunc(items, func(it secretItem) bool { return it.Path == rel }) {
			problems = append(problems, fmt.Sprintf("%s=%s: secret %s's items put no file at %s", f.name, f.file, volumes[j].Secret.SecretName, rel))
		}
	}
	return problems
}

// pdbProblems checks that a PodDisruptionBudget selects the pods and lets one go at a
// time, never all of them.
func pdbProblems(p podDisruptionBudget, replicas int, labels map[string]string) []string {
	var problems []string
	if !selects(p.Spec.Selector.MatchLabels, labels) {
		problems = append(problems, fmt.Sprintf("selector %v does not select the Deployment's pods (labels %v)", p.Spec.Selector.MatchLabels, labels))
	}
	switch {
	case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable != nil:
		problems = append(problems, "sets both minAvailable and maxUnavailable")
	case p.Spec.MaxUnavailable != nil:
		if v := p.Spec.MaxUnavailable; v.String != "" || v.Int < 1 || v.Int >= replicas {
			problems = append(problems, fmt.Sprintf("maxUnavailable %s: want a count from 1 (or no drain can proceed) to %d (below the %d replicas)", v.text(), replicas-1, replicas))
		}
	case p.Spec.MinAvailable != nil:
		if v := p.Spec.MinAvailable; v.String != "" || v.Int < 1 || v.Int >= replicas {
			problems = append(problems, fmt.Sprintf("minAvailable %s: want a count from 1 to %d (below the %d replicas, or no drain can proceed)", v.text(), replicas-1, replicas))
		}
	default:
		problems = append(problems, "sets neither minAvailable nor maxUnavailable")
	}
	return problems
}

// server is a manager started from a file's options.
type server struct {
	health, metrics string // the bound addresses
}

// startManager starts a sharded manager with o against an in-process etcd with TLS. The
// endpoints and TLS files of o are replaced by the test cluster's, and its listen
// addresses by free loopback ports (two servers or one, as in o). The manager stops when
// the test ends, which fails if Start has not returned within GracefulShutdownTimeout and
// shutdownOverrun.
func startManager(t *testing.T, what string, o manager.Options) server {
	t.Helper()
	c := etcdtest.New(t, etcdtest.WithTLS())
	tlsFiles := c.TLSFiles()
	o.Endpoints, o.CACert, o.Cert, o.Key = c.Endpoints(), tlsFiles.CA, tlsFiles.Cert, tlsFiles.Key
	o.Username, o.Password = "", ""
	shared := o.HealthProbeAddr != "" && o.HealthProbeAddr == o.MetricsAddr
	if o.HealthProbeAddr != "" {
		o.HealthProbeAddr = "127.0.0.1:0"
	}
	if o.MetricsAddr != "" && !shared {
		o.MetricsAddr = "localhost:0" // another address string: a server of its own
	} else if shared {
		o.MetricsAddr = o.HealthProbeAddr
	}
	mgr, err := manager.New(o)
	if err != nil {
		t.Fatalf("%s: manager.New refuses the options the file gives: %v", what, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	gst, _ := gracefulShutdown(o)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: manager.Start: %v", what, err)
			}
		case <-time.After(gst + shutdownOverrun):
			t.Errorf("%s: manager.Start did not return within GracefulShutdownTimeout %s + %s", what, gst, shutdownOverrun)
		}
	})
	// The servers start before the election: once elected, they serve.
	select {
	case <-mgr.Elected():
	case err := <-done:
		t.Fatalf("%s: manager.Start with the options the file gives: %v", what, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the manager was not elected within 30 s", what)
	}
	return server{health: mgr.HealthProbeAddr(), metrics: mgr.MetricsAddr()}
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// checks are the names of the checks a verbose probe answer lists ("[+]name ok").
func checks(body string) []string {
	var names []string
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "[+]"); ok {
			names = append(names, strings.Fields(rest)[0])
		} else if rest, ok := strings.CutPrefix(line, "[-]"); ok {
			names = append(names, strings.Fields(rest)[0])
		}
	}
	return names
}

var readinessChecks = []string{manager.CheckEtcd, manager.CheckSession, manager.CheckCaches, manager.CheckRefusals}

// checkLiveness checks that path serves the manager's liveness checks, which look at the
// process only: none of the readiness checks that depend on etcd.
func (s server) checkLiveness(t *testing.T, what, path string) {
	t.Helper()
	code, body := get(t, s.health, path+"?verbose")
	if code == http.StatusNotFound {
		t.Errorf("%s: the manager serves nothing at %s (404)", what, path)
		return
	}
	names := checks(body)
	if code != http.StatusOK || len(names) == 0 {
		t.Errorf("%s: %s answers %d %q, not the liveness checks", what, path, code, body)
	}
	for _, n := range names {
		if slices.Contains(readinessChecks, n) {
			t.Errorf("%s: %s runs the readiness check %q (it lists %v): an etcd outage, which every replica sees at once, would make Kubernetes restart them all; point it at the liveness path, which checks the process only",
				what, path, n, names)
			return
		}
	}
}

// checkReadiness checks that path serves the manager's readiness checks.
func (s server) checkReadiness(t *testing.T, what, path string) {
	t.Helper()
	code, body := get(t, s.health, path+"?verbose")
	if code == http.StatusNotFound {
		t.Errorf("%s: the manager serves nothing at %s (404)", what, path)
		return
	}
	names := checks(body)
	for _, want := range readinessChecks {
		if !slices.Contains(names, want) {
			t.Errorf("%s: %s answers %d and lists the checks %v, not the readiness check %q (the readiness checks are %v): a replica whose etcd, session or caches fail would still get ready",
				what, path, code, names, want, readinessChecks)
			return
		}
	}
}

// checkMetrics checks that path serves the manager's metrics.
func (s server) checkMetrics(t *testing.T, what, path string) {
	t.Helper()
	code, body := get(t, s.metrics, path)
	if code != http.StatusOK || !strings.Contains(body, "etcdkit_leader") {
		t.Errorf("%s: %s answers %d without the manager's metrics (etcdkit_leader): %.200q", what, path, code, body)
	}
}

func mustLookup(name string) setting {
	s, ok := lookup(name)
	if !ok {
		panic("no setting " + name)
	}
	return s
}

func deref(p *int) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func orNothing(s string) string {
	if s == "" {
		return "nothing (unset)"
	}
	return s
}
