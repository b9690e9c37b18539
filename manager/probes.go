package manager

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/reconcile"
)

// Checker is a liveness or readiness check: nil when the check passes, an error saying
// why not. It has the shape of controller-runtime's healthz.Checker, whose checkers
// (healthz.Ping among them) can be added as they are. A check is called on every probe,
// concurrently with the others, with the probe's request; it should return within the
// probe's timeout (a second by default in Kubernetes), and may be called concurrently
// with itself.
type Checker = func(req *http.Request) error

// Ping is a Checker that always passes: that the HTTP server answers is the check.
func Ping(*http.Request) error { return nil }

// The built-in checks of /readyz, listed before the added ones.
const (
	// CheckEtcd fails while etcd does not answer this replica within 800 ms; its error
	// names the endpoints.
	CheckEtcd = "etcd"
	// CheckSession fails while the replica's session (its election lease) is not alive,
	// once it campaigns; it is not served with leader election off.
	CheckSession = "session"
	// CheckCaches fails until every controller has the initial lists of its sources.
	CheckCaches = "caches"
	// CheckRefusals fails while etcd refuses a component of the replica with a permanent
	// error (see Manager.Refusals).
	CheckRefusals = "refusals"
)

// etcdCheckTimeout bounds the etcd round trip of the "etcd" readiness check: below the
// one-second default timeout of a Kubernetes probe, so that the probe's answer says why.
const etcdCheckTimeout = 800 * time.Millisecond

// pingCheck is the name of the liveness check served when none was added.
const pingCheck = "ping"

type namedCheck struct {
	name  string
	check Checker
}

// AddHealthzCheck adds a liveness check, served at /healthz and at /healthz/<name>. It is
// an error to give an empty name, a name with '/', a nil check, the name of a check added
// already, or to add one after Start.
//
// /healthz checks the process only: with no check added it serves a single "ping" check
// that passes whenever the server answers (controller-runtime's default), so that an etcd
// outage, which every replica sees at once, does not make Kubernetes restart every replica.
// What depends on etcd belongs to /readyz (see AddReadyzCheck).
func (m *Manager) AddHealthzCheck(name string, check Checker) error {
	return m.addCheck("healthz", name, check)
}

// AddReadyzCheck adds a readiness check, served at /readyz and at /readyz/<name>, after the
// built-in ones: "etcd" (etcd answers within 800 ms), "session" (the replica's
// session is alive, once it campaigns; with leader election only), "caches" (the
// controllers have their initial lists) and "refusals" (etcd refuses no component for good,
// see Refusals). It is an error to give an empty name, a name with '/', a nil check, the
// name of a check that exists (built-in names included), or to add one after Start.
func (m *Manager) AddReadyzCheck(name string, check Checker) error {
	return m.addCheck("readyz", name, check)
}

func (m *Manager) addCheck(kind, name string, check Checker) error {
	switch {
	case name == "":
		return fmt.Errorf("manager: a %s check needs a name", kind)
	case strings.Contains(name, "/"):
		return fmt.Errorf("manager: a %s check's name must not hold '/', got %q", kind, name)
	case check == nil:
		return fmt.Errorf("manager: %s check %q must not be nil", kind, name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return fmt.Errorf("manager: %s check %q added after Start", kind, name)
	}
	checks := &m.healthChecks
	if kind == "readyz" {
		checks = &m.readyChecks
		for _, builtin := range []string{CheckEtcd, CheckSession, CheckCaches, CheckRefusals} {
			if name == builtin {
				return fmt.Errorf("manager: a readyz check named %q exists already (built in)", name)
			}
		}
	}
	for _, c := range *checks {
		if c.name == name {
			return fmt.Errorf("manager: a %s check named %q exists already", kind, name)
		}
	}
	*checks = append(*checks, namedCheck{name: name, check: check})
	return nil
}

// livenessChecks are the checks of /healthz: the added ones, or a ping.
func (m *Manager) livenessChecks() []namedCheck {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.healthChecks) == 0 {
		return []namedCheck{{name: pingCheck, check: Ping}}
	}
	return append([]namedCheck(nil), m.healthChecks...)
}

// readinessChecks are the checks of /readyz: the built-in ones, then the added ones.
func (m *Manager) readinessChecks() []namedCheck {
	checks := []namedCheck{{CheckEtcd, m.checkEtcd}}
	if m.election != nil {
		checks = append(checks, namedCheck{CheckSession, m.checkSession})
	}
	checks = append(checks, namedCheck{CheckCaches, m.checkCaches}, namedCheck{CheckRefusals, m.checkRefusals})
	m.mu.Lock()
	defer m.mu.Unlock()
	return append(checks, m.readyChecks...)
}

// checkEtcd fails while etcd does not answer within etcdCheckTimeout.
func (m *Manager) checkEtcd(r *http.Request) error {
	return etcdutil.CheckReachable(r.Context(), m.client, etcdCheckTimeout)
}

// checkSession fails while the replica's session is not alive, once it campaigns (the
// first session may take a moment).
func (m *Manager) checkSession(*http.Request) error {
	m.mu.Lock()
	campaigning := m.campaigning
	m.mu.Unlock()
	if campaigning && !m.election.SessionAlive() {
		return errors.New("the replica's session (lease) is not alive")
	}
	return nil
}

// checkCaches fails until every controller has its initial lists, naming those that wait.
func (m *Manager) checkCaches(*http.Request) error {
	m.mu.Lock()
	synced := m.synced
	controllers := append([]*reconcile.Controller(nil), m.controllers...)
	m.mu.Unlock()
	if synced {
		return nil
	}
	var waiting []string
	for _, c := range controllers {
		if !c.HasSynced() {
			waiting = append(waiting, fmt.Sprintf("%q", c.Name()))
		}
	}
	if len(waiting) == 0 {
		return errors.New("the controllers' caches are not synced yet")
	}
	return fmt.Errorf("the caches of controller %s are not synced yet", strings.Join(waiting, ", "))
}

// checkRefusals fails while etcd refuses a component with a permanent error.
func (m *Manager) checkRefusals(*http.Request) error {
	refused := m.Refusals()
	if len(refused) == 0 {
		return nil
	}
	msgs := make([]string, len(refused))
	for i, err := range refused {
		msgs[i] = err.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// probe serves a set of checks as Kubernetes' /healthz and /readyz do.
type probe struct {
	kind   string // "healthz" or "readyz"
	failed int    // the status code of a failure
	checks func() []namedCheck
}

// serve runs every check but those excluded (?exclude=name, repeatable) and answers 200
// "ok" when all pass; otherwise p.failed with one line per check, "[+]name ok" or
// "[-]name failed: error", and a last line "<kind> check failed". With ?verbose, a success
// lists the checks too, and ends with "<kind> check passed".
func (p probe) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	excluded := map[string]bool{}
	for _, name := range q["exclude"] {
		excluded[name] = true
	}
	checks := p.checks()
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		if excluded[c.name] {
			continue
		}
		wg.Add(1)
		go func() { // one check; the probe waits for all
			defer wg.Done()
			errs[i] = run(c, r)
		}()
	}
	wg.Wait()
	var b strings.Builder
	ok := true
	for i, c := range checks {
		switch {
		case excluded[c.name]:
			fmt.Fprintf(&b, "[+]%s excluded: ok\n", c.name)
		case errs[i] != nil:
			ok = false
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.name, errs[i])
		default:
			fmt.Fprintf(&b, "[+]%s ok\n", c.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ok {
		w.WriteHeader(p.failed)
		fmt.Fprintf(&b, "%s check failed\n", p.kind)
		_, _ = w.Write([]byte(b.String()))
		return
	}
	if q.Has("verbose") {
		fmt.Fprintf(&b, "%s check passed\n", p.kind)
		_, _ = w.Write([]byte(b.String()))
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// serveOne runs the check named by the path, /<kind>/<name>: 200 "ok", p.failed with
// its error, or 404 for a name that is no check.
func (p probe) serveOne(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	for _, c := range p.checks() {
		if c.name != name {
			continue
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if err := run(c, r); err != nil {
			w.WriteHeader(p.failed)
			_, _ = fmt.Fprintf(w, "[-]%s failed: %v\n", c.name, err)
			return
		}
		_, _ = w.Write([]byte("ok"))
		return
	}
	http.Error(w, fmt.Sprintf("no %s check named %q", p.kind, name), http.StatusNotFound)
}

// run calls a check, turning a panic into its error.
func run(c namedCheck, r *http.Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return c.check(r)
}
