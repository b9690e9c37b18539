package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/election"
	"github.com/etcdkit/etcdkit/fence"
	"github.com/etcdkit/etcdkit/internal/etcdutil"
	"github.com/etcdkit/etcdkit/internal/metrics"
	"github.com/etcdkit/etcdkit/internal/sharding"
	"github.com/etcdkit/etcdkit/reconcile"
)

// Manager runs controllers and runnables; see the package documentation for its lifecycle.
type Manager struct {
	opts       Options
	client     *clientv3.Client
	ownsClient bool
	log        logr.Logger
	metrics    *metrics.Registry
	election   *election.Election // nil when leader election is off
	sharder    *sharding.Member   // nil without Sharding
	cache      *Cache             // the sources of every controller, store and reader

	mu          sync.Mutex
	runnables   []Runnable // every replica
	leaderRuns  []Runnable // the leader only
	controllers []*reconcile.Controller
	started     bool
	healthAddr  string // bound addresses, set by Start
	metricsAddr string
	synced      bool          // every controller has its initial lists
	campaigning bool          // the election runs (its first session may take a moment)
	elected     chan struct{} // a signal per term, for leadTerms

	firstElected chan struct{} // closed at the first election: see Elected
	electedOnce  sync.Once
	healthChecks []namedCheck // added with AddHealthzCheck
	readyChecks  []namedCheck // added with AddReadyzCheck
}

// New validates opts, connects to etcd (or uses opts.Client) and checks within the dial
// timeout that etcd answers.
func New(opts Options) (*Manager, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	m := &Manager{
		opts: opts, log: opts.Logger.WithValues("manager", opts.Name, "replica", opts.ID),
		elected: make(chan struct{}, 1), firstElected: make(chan struct{}),
	}
	if opts.DisableLeaderElection {
		m.markElected()
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.DialTimeout)
	defer cancel()
	if opts.Client != nil {
		if err := etcdutil.CheckReachable(ctx, opts.Client, opts.DialTimeout); err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
		m.client = opts.Client
	} else {
		cc := etcdutil.ConnectConfig{
			Endpoints: opts.Endpoints, CACert: opts.CACert, Cert: opts.Cert, Key: opts.Key,
			Username: opts.Username, Password: opts.Password, DialTimeout: opts.DialTimeout,
		}
		for _, w := range cc.Warnings() {
			m.log.Info("warning: " + w)
		}
		cli, err := etcdutil.Connect(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
		m.client, m.ownsClient = cli, true
	}
	m.cache = newCache(m.client, m.log.WithName("cache"))
	var err error
	if m.metrics, err = metrics.New(opts.Registry); err != nil {
		m.closeClient()
		return nil, fmt.Errorf("manager: metrics: %w", err)
	}
	m.metrics.Refusals.Watch(m.refusals)
	m.metrics.Relists.Watch(m.relists)
	if !opts.DisableLeaderElection {
		m.election, err = election.New(m.client, opts.RootPrefix+"election/", election.Options{
			ID: opts.ID, TTL: opts.LeaseTTL, Logger: m.log.WithName("election"),
		})
		if err != nil {
			m.closeClient()
			return nil, fmt.Errorf("manager: %w", err)
		}
	}
	if opts.Sharding != nil {
		if m.sharder, err = newSharder(m, *opts.Sharding); err == nil {
			err = m.sharder.CheckShardCount(ctx)
		}
		if err != nil {
			m.closeClient()
			return nil, err
		}
		m.metrics.Shards.Set(float64(m.opts.Sharding.Shards))
	}
	return m, nil
}

// Client returns the manager's etcd client.
func (m *Manager) Client() *clientv3.Client { return m.client }

// Name returns the manager's name.
func (m *Manager) Name() string { return m.opts.Name }

// ID returns this replica's id.
func (m *Manager) ID() string { return m.opts.ID }

// RootPrefix returns the prefix of the manager's own keys.
func (m *Manager) RootPrefix() string { return m.opts.RootPrefix }

// Logger returns the manager's logger.
func (m *Manager) Logger() logr.Logger { return m.log }

// IsLeader reports whether this replica leads now (always true with leader election off).
func (m *Manager) IsLeader() bool { return m.election == nil || m.election.IsLeader() }

// Election returns the manager's election, or nil when leader election is off.
func (m *Manager) Election() *election.Election { return m.election }

// Elected returns a channel that is closed when this replica is elected leader for the
// first time, as controller-runtime's Manager.Elected, for work that must wait for the
// leadership (leader runnables wait by themselves). With DisableLeaderElection it is
// closed from New on. It stays closed when the leadership ends (IsLeader tells whether this
// replica leads now), and is never closed for a replica that never leads.
func (m *Manager) Elected() <-chan struct{} { return m.firstElected }

// markElected closes the channel of Elected, once.
func (m *Manager) markElected() { m.electedOnce.Do(func() { close(m.firstElected) }) }

// HealthProbeAddr returns the address /healthz and /readyz (see AddHealthzCheck and
// AddReadyzCheck) are served on, once Start has bound it ("" before, or when not served).
func (m *Manager) HealthProbeAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.healthAddr
}

// MetricsAddr returns the address /metrics is served on, once Start has bound it.
func (m *Manager) MetricsAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metricsAddr
}

// Add registers a runnable; it starts with Start. Add after Start is an error.
func (m *Manager) Add(r Runnable) error {
	if r == nil {
		return errors.New("manager: runnable must not be nil")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("manager: Add after Start")
	}
	if needsLeader(r) {
		m.leaderRuns = append(m.leaderRuns, r)
	} else {
		m.runnables = append(m.runnables, r)
	}
	return nil
}

func (m *Manager) addController(c *reconcile.Controller) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("manager: controller added after Start")
	}
	for _, other := range m.controllers {
		if other.Name() == c.Name() {
			return fmt.Errorf("manager: a controller named %q exists already", c.Name())
		}
	}
	m.controllers = append(m.controllers, c)
	return nil
}

// Start runs everything until ctx ends or a runnable fails, then shuts down gracefully
// (see the package documentation). It returns nil after a clean stop, the first runnable's
// error otherwise. A manager starts once.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("manager: already started")
	}
	m.started = true
	runnables := append([]Runnable(nil), m.runnables...)
	leaderRuns := append([]Runnable(nil), m.leaderRuns...)
	controllers := append([]*reconcile.Controller(nil), m.controllers...)
	m.mu.Unlock()
	defer m.closeClient()
	if m.election != nil && m.sharder == nil {
		if err := m.checkUniqueID(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}

	// failed carries the first error of any group; it stops the manager.
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	// The groups do not end with ctx: the shutdown below stops them one after the other,
	// so that controllers drain while this replica still leads.
	base, stopAll := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAll()

	servers, err := m.serveHTTP()
	if err != nil {
		return err
	}
	defer m.stopHTTP(servers)

	// The cache's sources run until everything else has stopped: the controllers share
	// them, and the other runnables read them.
	cacheCtx, stopCache := context.WithCancel(base)
	defer func() {
		stopCache()
		m.cache.wait()
	}()
	m.cache.start(cacheCtx, fail)

	// Groups stop in reverse order of start; each has its own context and wait group.
	ctrls := newGroup(base)
	for _, c := range controllers {
		ctrls.run(fail, func(ctx context.Context) error { return c.Start(ctx) })
	}
	if err := m.waitSynced(ctx, failed, controllers); err != nil {
		ctrls.stop()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	membership := newGroup(base)
	if m.sharder != nil {
		m.sharder.SetAddress(m.advertised())
		membership.run(fail, m.sharder.Run)
		leaderRuns = append(leaderRuns, RunnableFunc(m.sharder.Assign))
		// The sharding watches are established before this replica writes anything else
		// (its campaign): etcd sends a watch created behind the current revision its events
		// only every 100 ms, which would delay every handoff of a joining member.
		select {
		case <-m.sharder.Synced():
		case <-ctx.Done():
		case err := <-failed:
			fail(err)
		}
	}

	others := newGroup(base)
	for _, r := range runnables {
		others.run(fail, r.Start)
	}

	campaign, leaders := newGroup(base), newGroup(base)
	if m.election != nil {
		m.election.OnElected(func() {
			m.log.Info("elected leader", "token", m.election.Token())
			m.metrics.Leader.Set(1)
			for _, c := range controllers {
				c.Resync()
			}
			select {
			case m.elected <- struct{}{}:
			default:
			}
			m.markElected()
		})
		m.election.OnDefeat(func() {
			m.log.Info("leadership ended")
			m.metrics.Leader.Set(0)
		})
		campaign.run(fail, func(ctx context.Context) error {
			// The readiness check "session" applies once the first session exists.
			for !m.election.SessionAlive() {
				if !etcdutil.Sleep(ctx, 10*time.Millisecond) {
					return nil
				}
			}
			m.mu.Lock()
			m.campaigning = true
			m.mu.Unlock()
			return nil
		})
		campaign.run(fail, func(ctx context.Context) error {
			if err := m.election.Run(ctx); err != nil && !errors.Is(err, election.ErrClosed) {
				return fmt.Errorf("manager: election: %w", err)
			}
			return nil
		})
		leaders.run(fail, func(ctx context.Context) error { return m.leadTerms(ctx, leaderRuns) })
	} else {
		m.metrics.Leader.Set(1)
		for _, r := range leaderRuns {
			leaders.run(fail, r.Start)
		}
	}

	var result error
	select {
	case <-ctx.Done():
		m.log.Info("stopping")
	case result = <-failed:
		m.log.Error(result, "a runnable failed; stopping")
	}
	// Leader work ends first; controllers drain their reconciles in flight while this
	// replica still leads (their fence holds); then the replica resigns and revokes its
	// lease. Controllers cancel what outlives their own graceful timeout (the manager's),
	// so they are given a little longer than the manager's deadline before it gives up.
	deadline := time.Now().Add(m.opts.GracefulShutdownTimeout)
	if m.sharder != nil {
		m.sharder.Leave(deadline)
	}
	timedOut := !leaders.stopBy(deadline)
	timedOut = !ctrls.stopBy(deadline.Add(ctrlGrace)) || timedOut
	timedOut = !others.stopBy(deadline) || timedOut
	timedOut = !campaign.stopBy(deadline.Add(ctrlGrace)) || timedOut
	if m.election != nil {
		if err := m.election.Close(); err != nil {
			m.log.Error(err, "resigning")
		}
	}
	timedOut = !membership.stopBy(deadline.Add(ctrlGrace)) || timedOut
	if timedOut && result == nil {
		result = fmt.Errorf("manager: graceful shutdown timed out after %s", m.opts.GracefulShutdownTimeout)
	}
	m.log.Info("stopped")
	return result
}

// ctrlGrace is how much longer than the manager's graceful timeout a controller may take
// to return after it cancelled its last reconciles.
const ctrlGrace = 5 * time.Second

// leadTerms runs the leader runnables during each leadership: started when this replica is
// elected, their context ends with the leadership and carries its fence, and they start
// again at the next one. The first error of a runnable ends the term's runnables and is
// returned.
func (m *Manager) leadTerms(ctx context.Context, runs []Runnable) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.elected:
		}
		term, ok := m.election.Term()
		if !ok {
			continue // the leadership ended before it could be used
		}
		tctx, cancel := context.WithCancel(fence.With(ctx, m.leaderFence(term)))
		stop := context.AfterFunc(term.Context, cancel)
		var wg sync.WaitGroup
		errs := make(chan error, len(runs))
		for _, r := range runs {
			wg.Add(1)
			go func() { // one leader runnable; ends with the term
				defer wg.Done()
				if err := r.Start(tctx); err != nil && tctx.Err() == nil {
					errs <- err
					cancel() // the others end with it
				}
			}()
		}
		wg.Wait()
		stop()
		cancel()
		select {
		case err := <-errs:
			return err
		default:
		}
	}
}

// leaderFence is the fence of a leadership: its leader key still has the term's token.
func (m *Manager) leaderFence(t election.Term) fence.Fence {
	return fence.Fence{Cmps: []clientv3.Cmp{t.Guard}, Holder: fmt.Sprintf("leadership of %s (token %d)", m.opts.ID, t.Token)}
}

// waitSynced waits until every controller's sources have their initial lists, ctx ends, or
// a controller fails (its error is returned).
func (m *Manager) waitSynced(ctx context.Context, failed <-chan error, controllers []*reconcile.Controller) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, c := range controllers {
			if !c.HasSynced() {
				all = false
				break
			}
		}
		if all {
			m.mu.Lock()
			m.synced = true
			m.mu.Unlock()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("manager: waiting for the controllers' initial lists: %w", ctx.Err())
		case err := <-failed:
			return err
		case <-t.C:
		}
	}
}

// leaderGate admits requests only while this replica leads, fenced by the leader key, in
// a context that ends with the leadership.
type leaderGate struct{ m *Manager }

// Wants implements gate.Gate: every request is queued; Admit decides.
func (leaderGate) Wants(string) bool { return true }

// Admit implements gate.Gate.
func (g leaderGate) Admit(ctx context.Context, _ string) (context.Context, func(), bool) {
	term, ok := g.m.election.Term()
	if !ok {
		return nil, nil, false
	}
	rctx, cancel := context.WithCancel(fence.With(ctx, g.m.leaderFence(term)))
	stop := context.AfterFunc(term.Context, cancel)
	return rctx, func() { stop(); cancel() }, true
}

// serveHTTP binds the probe and metrics addresses and serves them.
func (m *Manager) serveHTTP() ([]*http.Server, error) {
	type site struct {
		addr string
		mux  *http.ServeMux
	}
	var sites []*site
	siteFor := func(addr string) *http.ServeMux {
		for _, s := range sites {
			if s.addr == addr {
				return s.mux
			}
		}
		s := &site{addr: addr, mux: http.NewServeMux()}
		sites = append(sites, s)
		return s.mux
	}
	if m.opts.HealthProbeAddr != "" {
		mux := siteFor(m.opts.HealthProbeAddr)
		for _, p := range []probe{
			{kind: "healthz", failed: http.StatusInternalServerError, checks: m.livenessChecks},
			{kind: "readyz", failed: http.StatusServiceUnavailable, checks: m.readinessChecks},
		} {
			mux.HandleFunc("/"+p.kind, p.serve)
			mux.HandleFunc("/"+p.kind+"/{name}", p.serveOne)
		}
	}
	if m.sharder != nil {
		addr := m.opts.HealthProbeAddr
		if addr == "" {
			addr = m.opts.MetricsAddr
		}
		if addr != "" {
			siteFor(addr).HandleFunc("/debug/shards", m.debugShards)
		}
	}
	if m.opts.MetricsAddr != "" {
		siteFor(m.opts.MetricsAddr).Handle("/metrics", promhttp.HandlerFor(m.opts.Registry, promhttp.HandlerOpts{}))
	}
	var servers []*http.Server
	for _, s := range sites {
		l, err := net.Listen("tcp", s.addr)
		if err != nil {
			m.stopHTTP(servers)
			return nil, fmt.Errorf("manager: listening on %s: %w", s.addr, err)
		}
		bound := l.Addr().String()
		m.mu.Lock()
		if s.addr == m.opts.HealthProbeAddr {
			m.healthAddr = bound
		}
		if s.addr == m.opts.MetricsAddr {
			m.metricsAddr = bound
		}
		m.mu.Unlock()
		srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() { _ = srv.Serve(l) }() // ends when stopHTTP shuts the server down
		m.log.Info("serving", "addr", bound)
	}
	return servers, nil
}

func (m *Manager) stopHTTP(servers []*http.Server) {
	for _, s := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
}

// Refusals returns the permanent errors with which etcd refuses this replica's components
// now (a denied permission on a watched prefix or on the manager's keyspace, a failed
// authentication), sorted by component: errors that only an operator can mend, by changing
// the user's roles. The components go on retrying every few seconds, so that a mended role
// is picked up without a restart. The readiness check "refusals" fails and
// etcdkit_permanent_error is 1 while any is present; each is also logged at the default
// level.
func (m *Manager) Refusals() []error {
	byComponent := m.refusals()
	names := make([]string, 0, len(byComponent))
	for name, err := range byComponent {
		if err != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out := make([]error, len(names))
	for i, name := range names {
		out[i] = byComponent[name]
	}
	return out
}

// relists counts, per watched prefix, the relists of the cache's sources.
func (m *Manager) relists() map[string]int {
	out := map[string]int{}
	for _, src := range m.cache.Sources() {
		out[src.Prefix()] += src.Stats().Relists
	}
	return out
}

// refusals maps every component of the replica to its permanent error, nil while it has none.
func (m *Manager) refusals() map[string]error {
	out := map[string]error{}
	if m.election != nil {
		out["election"] = m.election.Err()
	}
	if m.sharder != nil {
		out["sharding"] = m.sharder.Err()
	}
	for _, src := range m.cache.Sources() {
		out["source "+src.Prefix()] = src.Err()
	}
	return out
}

// ShardStatus reports this replica's view of the sharding, as /debug/shards serves it;
// ok is false for a manager without Sharding.
func (m *Manager) ShardStatus(ctx context.Context) (status ShardStatus, ok bool) {
	if m.sharder == nil {
		return ShardStatus{}, false
	}
	return m.sharder.Status(ctx), true
}

// debugShards serves ShardStatus as JSON.
func (m *Manager) debugShards(w http.ResponseWriter, r *http.Request) {
	st, _ := m.ShardStatus(r.Context())
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(st)
}

func (m *Manager) closeClient() {
	if m.ownsClient {
		_ = m.client.Close()
	}
}

// group is a set of goroutines with one context, stopped together.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newGroup(parent context.Context) *group {
	ctx, cancel := context.WithCancel(parent)
	return &group{ctx: ctx, cancel: cancel}
}

// run starts fn on a goroutine of the group; an error other than the group's own end is
// reported to fail.
func (g *group) run(fail func(error), fn func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := fn(g.ctx); err != nil && g.ctx.Err() == nil {
			fail(err)
		}
	}()
}

// stop cancels the group and waits for it.
func (g *group) stop() {
	g.cancel()
	g.wg.Wait()
}

// stopBy cancels the group and waits for it until deadline; it reports whether it ended.
func (g *group) stopBy(deadline time.Time) bool {
	g.cancel()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(time.Until(deadline)):
		return false
	}
}

// advertised is the address a sharded replica registers (Options.AdvertiseAddress).
func (m *Manager) advertised() string {
	if m.opts.AdvertiseAddress != "" {
		return m.opts.AdvertiseAddress
	}
	return reachable(m.HealthProbeAddr(), os.Hostname)
}

// reachable replaces the unspecified host of a bound address by the host name; it leaves
// an address it cannot read, or a host name that cannot be had, as it is.
func reachable(bound string, hostname func() (string, error)) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound
	}
	name, err := hostname()
	if err != nil || name == "" {
		return bound
	}
	return net.JoinHostPort(name, port)
}
