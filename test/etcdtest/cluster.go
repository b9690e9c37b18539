package etcdtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdkit/etcdkit/internal/etcdutil"
)

// ErrNotProcess is returned by the fault methods (Kill, Pause, Resume) of a cluster that runs
// in-process: only StartProcesses clusters have processes to signal.
var ErrNotProcess = errors.New("etcdtest: this fault needs a cluster started with StartProcesses")

// TB is the part of testing.TB (and Ginkgo's GinkgoT()) that New and NewProcesses use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Cluster is a running etcd cluster of one or more members. Its methods are safe for
// concurrent use.
type Cluster struct {
	opts     options
	dir      string // everything the cluster wrote; removed by Close
	certs    *certSet
	scheme   string
	tls      *tls.Config // client TLS of a TLS cluster
	members  []*member
	client   *clientv3.Client
	runner   runner
	mu       sync.Mutex // serialises member state changes (kill, restart, close)
	closed   bool
	closeErr error
}

type member struct {
	name      string
	clientURL string
	peerURL   string
	dataDir   string
	logPath   string
	state     memberState // guarded by Cluster.mu
	handle    any         // *embed.Etcd or *process; owned by the runner
}

type memberState int

const (
	running memberState = iota
	paused
	stopped
)

// runner is the way members run: in-process or as OS processes.
type runner interface {
	start(ctx context.Context, c *Cluster, m *member) error
	// stop ends a member: gracefully when kill is false, with SIGKILL when true.
	stop(m *member, kill bool) error
	signal(m *member, pause bool) error
}

// New starts an in-process cluster for a test and closes it when the test ends.
func New(t TB, opts ...Option) *Cluster {
	t.Helper()
	return newForTest(t, inProcess{}, opts)
}

// NewProcesses starts a cluster of etcd processes for a test and closes it when the test ends.
func NewProcesses(t TB, opts ...Option) *Cluster {
	t.Helper()
	return newForTest(t, processes{}, opts)
}

func newForTest(t TB, r runner, opts []Option) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := start(ctx, r, opts)
	if err != nil {
		t.Fatalf("%v", err)
		return nil
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start starts an in-process cluster (etcd's embed package) and returns once every member
// serves and a client is ready.
func Start(ctx context.Context, opts ...Option) (*Cluster, error) {
	return start(ctx, inProcess{}, opts)
}

// StartProcesses starts a cluster whose members are etcd processes built by EtcdBinary, and
// returns once every member serves and a client is ready.
func StartProcesses(ctx context.Context, opts ...Option) (*Cluster, error) {
	return start(ctx, processes{}, opts)
}

func start(ctx context.Context, r runner, opts []Option) (*Cluster, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	o.applyDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	// Free ports are found by binding and releasing them, so another process may take one
	// before etcd binds it: such a start is retried on new ports.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var c *Cluster
		c, err = startOnce(ctx, r, o)
		if err == nil {
			return c, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func startOnce(ctx context.Context, r runner, o options) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp(o.dir, "etcdtest-")
	if err != nil {
		return nil, fmt.Errorf("etcdtest: data dir: %w", err)
	}
	c := &Cluster{opts: o, dir: dir, runner: r, scheme: "http"}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if o.tls {
		if c.certs, err = generateCerts(filepath.Join(dir, "tls")); err != nil {
			return nil, fmt.Errorf("etcdtest: TLS certificates: %w", err)
		}
		c.scheme = "https"
		f := c.certs.client
		if c.tls, err = etcdutil.TLSConfig(f.CA, f.Cert, f.Key); err != nil {
			return nil, fmt.Errorf("etcdtest: %w", err)
		}
	}
	ports, err := freePorts(2 * o.members)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: free ports: %w", err)
	}
	for i := 0; i < o.members; i++ {
		name := fmt.Sprintf("m%d", i)
		c.members = append(c.members, &member{
			name:      name,
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", c.scheme, ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dataDir:   filepath.Join(dir, name),
			logPath:   filepath.Join(dir, name+".log"),
			state:     stopped,
		})
	}
	ctx, cancel := context.WithTimeout(ctx, o.startTimout)
	defer cancel()
	// Members of a new cluster wait for each other, so all start before any is awaited.
	for _, m := range c.members {
		if err := r.start(ctx, c, m); err != nil {
			return nil, fmt.Errorf("etcdtest: starting member %s: %w", m.name, err)
		}
		m.state = running
	}
	for _, m := range c.members {
		if err := c.waitServing(ctx, m); err != nil {
			return nil, err
		}
	}
	if o.password != "" {
		if err := c.enableAuth(ctx); err != nil {
			return nil, err
		}
	}
	if c.client, err = c.NewClient(); err != nil {
		return nil, err
	}
	if err := etcdutil.CheckReachable(ctx, c.client, o.startTimout); err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	return c, nil
}

// initialCluster is etcd's --initial-cluster value for the members.
func (c *Cluster) initialCluster() string {
	parts := make([]string, len(c.members))
	for i, m := range c.members {
		parts[i] = m.name + "=" + m.peerURL
	}
	return strings.Join(parts, ",")
}

// waitServing waits until a member answers a status request and knows a leader. It asks
// with the cluster's credentials: a restarted member of an auth cluster refuses a status
// request without them (before auth is first enabled the client simply gets no token).
func (c *Cluster) waitServing(ctx context.Context, m *member) error {
	cli, err := c.newClient([]string{m.clientURL}, true)
	if err != nil {
		return err
	}
	defer cli.Close()
	var last error
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.clientURL)
		cancel()
		if err == nil && st.Leader != 0 {
			return nil
		}
		if err == nil {
			err = errors.New("no leader yet")
		}
		last = err
		if exited, why := c.exited(m); exited {
			return fmt.Errorf("etcdtest: member %s exited: %s", m.name, why)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcdtest: member %s did not serve: %v (log: %s)", m.name, last, m.logPath)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// exited reports whether a member's process has ended, with the tail of its log.
func (c *Cluster) exited(m *member) (bool, string) {
	p, ok := m.handle.(*process)
	if !ok || p == nil {
		return false, ""
	}
	select {
	case <-p.done:
		return true, fmt.Sprintf("%v: %s", p.err, logTail(m.logPath))
	default:
		return false, ""
	}
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

func (c *Cluster) enableAuth(ctx context.Context) error {
	cli, err := c.newClient(c.Endpoints(), false)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.UserAdd(ctx, "root", c.opts.password); err != nil {
		return fmt.Errorf("etcdtest: adding user root: %w", err)
	}
	if _, err := cli.RoleAdd(ctx, "root"); err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("etcdtest: adding role root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("etcdtest: granting role root: %w", err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdtest: enabling auth: %w", err)
	}
	return nil
}

// Endpoints returns the client URLs of all members, in member order.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL
	}
	return eps
}

// Endpoint returns the client URL of member i.
func (c *Cluster) Endpoint(i int) string { return c.members[i].clientURL }

// Members returns the number of members.
func (c *Cluster) Members() int { return len(c.members) }

// Dir returns the directory that holds the members' data, logs and certificates.
func (c *Cluster) Dir() string { return c.dir }

// TLSFiles returns the CA and client certificate files of a TLS cluster, or nil.
func (c *Cluster) TLSFiles() *TLSFiles {
	if c.certs == nil {
		return nil
	}
	f := c.certs.client
	return &f
}

// User returns the user and password that clients of an auth cluster use ("" when auth is off).
func (c *Cluster) User() (name, password string) {
	if c.opts.password == "" {
		return "", ""
	}
	return "root", c.opts.password
}

// Client returns a ready client of all members with the cluster's credentials. Close closes it.
func (c *Cluster) Client() *clientv3.Client { return c.client }

// ClientConfig returns a client configuration for all members with the cluster's credentials.
func (c *Cluster) ClientConfig() clientv3.Config { return c.clientConfig(c.Endpoints(), true) }

// NewClient returns a new client of all members with the cluster's credentials; the caller
// closes it. Tests that need several independent sessions make one client each.
func (c *Cluster) NewClient() (*clientv3.Client, error) {
	return c.newClient(c.Endpoints(), true)
}

func (c *Cluster) clientConfig(eps []string, auth bool) clientv3.Config {
	cfg := clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, TLS: c.tls, Logger: zap.NewNop()}
	if auth {
		cfg.Username, cfg.Password = c.User()
	}
	return cfg
}

func (c *Cluster) newClient(eps []string, auth bool) (*clientv3.Client, error) {
	cli, err := clientv3.New(c.clientConfig(eps, auth))
	if err != nil {
		return nil, fmt.Errorf("etcdtest: client: %w", err)
	}
	return cli, nil
}

// Kill ends member i with SIGKILL, as a crash would. Process clusters only.
func (c *Cluster) Kill(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.runner.(processes); !ok {
		return ErrNotProcess
	}
	m, err := c.member(i)
	if err != nil {
		return err
	}
	if m.state == stopped {
		return fmt.Errorf("etcdtest: member %d is not running", i)
	}
	m.state = stopped
	return c.runner.stop(m, true)
}

// Pause stops member i with SIGSTOP: it keeps its sockets but answers nothing until Resume.
// Process clusters only, on unix: elsewhere (windows) it returns an error that names the
// platform and wraps errors.ErrUnsupported.
func (c *Cluster) Pause(i int) error { return c.setPaused(i, true) }

// Resume continues a paused member i with SIGCONT. Process clusters only, on unix (see
// Pause).
func (c *Cluster) Resume(i int) error { return c.setPaused(i, false) }

func (c *Cluster) setPaused(i int, pause bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.runner.(processes); !ok {
		return ErrNotProcess
	}
	m, err := c.member(i)
	if err != nil {
		return err
	}
	want := running
	if pause {
		want = paused
	}
	if m.state == stopped {
		return fmt.Errorf("etcdtest: member %d is not running", i)
	}
	if m.state == want {
		return nil
	}
	if err := c.runner.signal(m, pause); err != nil {
		return err
	}
	m.state = want
	return nil
}

// Restart stops member i (gracefully, if it runs) and starts it again on the same ports and
// data, returning once it serves with a leader. A killed member is started again.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.mu.Lock()
	m, err := c.member(i)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if m.state == paused {
		if err := c.runner.signal(m, false); err != nil {
			c.mu.Unlock()
			return err
		}
		m.state = running
	}
	if m.state == running {
		if err := c.runner.stop(m, false); err != nil {
			c.mu.Unlock()
			return fmt.Errorf("etcdtest: stopping member %d: %w", i, err)
		}
		m.state = stopped
	}
	if err := c.runner.start(ctx, c, m); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("etcdtest: restarting member %d: %w", i, err)
	}
	m.state = running
	c.mu.Unlock()
	return c.waitServing(ctx, m)
}

// Stop stops member i gracefully (a process member with SIGTERM; on windows, which has no
// SIGTERM, it is killed, its data kept); Restart starts it again.
func (c *Cluster) Stop(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.member(i)
	if err != nil {
		return err
	}
	if m.state == stopped {
		return nil
	}
	if m.state == paused {
		if err := c.runner.signal(m, false); err != nil {
			return err
		}
	}
	m.state = stopped
	return c.runner.stop(m, false)
}

func (c *Cluster) member(i int) (*member, error) {
	if c.closed {
		return nil, errors.New("etcdtest: cluster is closed")
	}
	if i < 0 || i >= len(c.members) {
		return nil, fmt.Errorf("etcdtest: no member %d in a cluster of %d", i, len(c.members))
	}
	return c.members[i], nil
}

// Compact compacts the key-value history up to the current revision (physically, so that
// watches from older revisions fail with ErrCompacted at once) and returns that revision.
func (c *Cluster) Compact(ctx context.Context) (int64, error) {
	resp, err := c.client.Get(ctx, "compact-probe", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("etcdtest: reading the revision: %w", err)
	}
	rev := resp.Header.Revision
	if _, err := c.client.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, fmt.Errorf("etcdtest: compacting at %d: %w", rev, err)
	}
	return rev, nil
}

// Leader returns the index of the member that leads the etcd cluster, asking the members
// that run.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	c.mu.Lock()
	var live []int
	for i, m := range c.members {
		if m.state == running {
			live = append(live, i)
		}
	}
	c.mu.Unlock()
	var last error = errors.New("no member runs")
	for _, i := range live {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.client.Status(sctx, c.members[i].clientURL)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if st.Leader == 0 {
			last = fmt.Errorf("member %d knows no leader", i)
			continue
		}
		if st.Header.MemberId == st.Leader {
			return i, nil
		}
		for j, m := range c.members {
			if j == i {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st2, err := c.client.Status(sctx, m.clientURL)
			cancel()
			if err == nil && st2.Header.MemberId == st.Leader {
				return j, nil
			}
		}
	}
	return -1, fmt.Errorf("etcdtest: no leader found: %v", last)
}

// Close stops every member, closes the client and removes the cluster's directory.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closeErr
	}
	c.closed = true
	var errs []error
	if c.client != nil {
		_ = c.client.Close()
	}
	for _, m := range c.members {
		if m.handle == nil {
			continue
		}
		if m.state == paused {
			_ = c.runner.signal(m, false)
		}
		// Processes are killed: their data is thrown away, so a graceful stop buys nothing.
		_, isProc := c.runner.(processes)
		if err := c.runner.stop(m, isProc); err != nil {
			errs = append(errs, err)
		}
		m.state = stopped
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	c.closeErr = errors.Join(errs...)
	return c.closeErr
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
